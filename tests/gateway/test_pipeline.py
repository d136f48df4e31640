"""The text pipeline's stages, seen through the observer they all report to, on a real server
over HTTP: the order of the stages, a cache hit that skips generation, a fallback, a stream."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from genloom.telemetry import RecordingObserver
from tests.api.conftest import running_server
from tests.stub_upstream import Behaviour, StubMode, running_stub

HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def observed(tmp_path_factory, tiny_model_dir) -> Iterator[tuple[openai.OpenAI, RecordingObserver]]:
    observer = RecordingObserver()
    with running_stub(Behaviour(mode=StubMode.ERROR_500)) as dead:
        models = [
            {"name": "tiny", "path": str(tiny_model_dir)},
            {"name": "flaky", "kind": "remote", "base_url": dead.base_url, "fallbacks": ["tiny"]},
        ]
        with running_server(tmp_path_factory.mktemp("pipeline"), tiny_model_dir, models=models, observer=observer,
                            routing={"max_attempts_per_model": 1}) as (url, _):
            yield openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0), observer


def test_every_stage_reports_in_the_order_a_request_takes(observed):
    client, observer = observed
    observer.calls.clear()
    client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=3, temperature=0, seed=1)
    names = [name for name, _ in observer.calls]
    order = ["request_started", "cache_lookup", "queue_wait", "first_token", "tokens", "request_finished"]
    assert [n for n in names if n in order] == order
    assert "batch_formed" in names  # the worker thread reports too
    finished = observer.named("request_finished")[0]
    assert finished["model"] == "tiny" and finished["version"] == "tiny@v1" and finished["status"] == "completed"
    assert observer.named("tokens")[0]["completion"] == 3


def test_a_cache_hit_skips_admission_and_generation(observed):
    client, observer = observed
    ask = dict(model="tiny", messages=[{"role": "user", "content": "cache me"}], max_tokens=2, temperature=0)
    client.chat.completions.create(**ask)
    observer.calls.clear()
    client.chat.completions.create(**ask)
    assert observer.named("cache_lookup") == [{"kind": "exact", "hit": True}]
    assert not observer.named("queue_wait") and not observer.named("tokens")


def test_a_fallback_is_reported_from_the_failed_version_to_the_one_that_answered(observed):
    client, observer = observed
    observer.calls.clear()
    reply = client.chat.completions.create(model="flaky", messages=HELLO, max_tokens=2)
    assert reply.model == "tiny" and reply.system_fingerprint == "tiny@v1"
    assert observer.named("fallback") == [{"from_model": "flaky@v1", "to_model": "tiny@v1"}]
    assert observer.named("request_finished")[-1]["version"] == "tiny@v1"


def test_a_stream_reports_its_first_token_and_its_end(observed):
    client, observer = observed
    observer.calls.clear()
    chunks = list(client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=3, stream=True))
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert len(observer.named("first_token")) == 1 and observer.named("first_token")[0]["seconds"] >= 0
    assert not observer.named("cache_lookup")  # streams are never cached
    assert observer.named("request_finished")[0]["status"] == "completed"
