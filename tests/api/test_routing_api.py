"""Aliases, tiered routing and retries before fallback, over real HTTP with the openai client."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.api.conftest import running_server
from tests.stub_upstream import Behaviour, StubMode, running_stub

HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def stub() -> Iterator:
    with running_stub(Behaviour(mode=StubMode.ERROR_500)) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def client(tmp_path_factory, tiny_model_dir, stub) -> Iterator[openai.OpenAI]:
    models = [
        {"name": "tiny", "path": str(tiny_model_dir)},
        {"name": "tiny-strong", "path": str(tiny_model_dir)},
        {"name": "flaky", "kind": "remote", "base_url": stub.base_url, "fallbacks": ["tiny"]},
    ]
    routing = {
        "aliases": {"default": "tiny", "smart": "tiny-strong"},
        "tiered": {"auto": {"simple": "default", "complex": "smart", "complex_keywords": ["prove"]}},
        "max_attempts_per_model": 2, "retry_base_s": 0.01,
    }
    with running_server(tmp_path_factory.mktemp("routing"), tiny_model_dir, models=models, routing=routing) as (url, _):
        yield openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def test_the_response_names_the_model_an_alias_or_tiered_route_chose(client):
    assert client.chat.completions.create(model="default", messages=HELLO, max_tokens=2).model == "tiny"
    assert client.chat.completions.create(model="auto", messages=HELLO, max_tokens=2).model == "tiny"
    hard = [{"role": "user", "content": "Prove that the square root of two is irrational."}]
    assert client.chat.completions.create(model="auto", messages=hard, max_tokens=2).model == "tiny-strong"


def test_a_failing_upstream_is_tried_again_before_its_fallback_answers(client, stub):
    before = len(stub.requests)
    assert client.chat.completions.create(model="flaky", messages=HELLO, max_tokens=2).model == "tiny"
    assert len(stub.requests) - before == 2  # max_attempts_per_model tries, then the fallback
