"""Versions hold weights within `runtime.max_loaded_models` or `runtime.memory_budget_mb`: a new version waits to be asked for,
a request for a version without weights loads it (evicting the least recently used idle one),
and requests for both versions at once are all answered."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.api.conftest import running_server

HELLO = [{"role": "user", "content": "hello"}]


# Either limit allows one tiny model's weights (0.41 MB in float32) and not two.
@pytest.fixture(scope="module", params=[{"max_loaded_models": 1}, {"memory_budget_mb": 0.6}], ids=["count", "memory"])
def served(request, tmp_path_factory, tiny_model_dir) -> Iterator[tuple[openai.OpenAI, httpx.Client]]:
    with running_server(tmp_path_factory.mktemp("loading"), tiny_model_dir, runtime=request.param) as (url, _):
        with httpx.Client(base_url=f"{url}/v1/admin", timeout=30) as admin:
            yield openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60), admin


def running(admin: httpx.Client) -> dict[str, bool]:
    return {v["id"]: v["running_here"] for v in admin.get("/models/tiny").json()["versions"]}


def state(admin: httpx.Client, key: str) -> str | None:
    return {v["id"]: v["state"] for v in admin.get("/models/tiny").json()["versions"]}.get(key)


def version_of(client: openai.OpenAI, model: str) -> str:
    return client.chat.completions.create(model=model, messages=HELLO, max_tokens=2).system_fingerprint


def test_a_version_loads_when_asked_for_and_evicts_the_least_recently_used(served, tiny_model_dir):
    client, admin = served
    assert admin.post("/models", json={"name": "tiny", "path": str(tiny_model_dir)}).status_code == 201
    deadline = time.monotonic() + 30
    while state(admin, "tiny@v2") in (None, "registered", "loading"):  # until it is described here
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert running(admin) == {"tiny@v1": True, "tiny@v2": False}  # described, no weights yet

    assert version_of(client, "tiny@v2") == "tiny@v2"  # loaded on demand
    assert running(admin) == {"tiny@v1": False, "tiny@v2": True}
    assert version_of(client, "tiny") == "tiny@v1"
    assert running(admin) == {"tiny@v1": True, "tiny@v2": False}


def test_requests_for_two_versions_at_once_are_all_answered_one_version_at_a_time(served, tiny_model_dir):
    client, admin = served
    if len(running(admin)) < 2:
        admin.post("/models", json={"name": "tiny", "path": str(tiny_model_dir)})
    answers: list[str] = []
    errors: list[Exception] = []

    def ask(model: str) -> None:
        try:
            answers.append(version_of(client, model))
        except Exception as e:  # any error fails the test below
            errors.append(e)

    threads = [threading.Thread(target=ask, args=(m,)) for m in ["tiny@v1", "tiny@v2"] * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert sorted(answers) == ["tiny@v1"] * 4 + ["tiny@v2"] * 4
    assert sum(running(admin).values()) == 1
