"""Remote OpenAI-compatible upstreams served as models, with fallback chains and breakers, against
a real stub upstream over HTTP and the official openai client."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.api.conftest import running_server
from tests.stub_upstream import Behaviour, StubMode, running_stub

HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def stub() -> Iterator:
    with running_stub(Behaviour(chunks=3)) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def base(tmp_path_factory, tiny_model_dir, stub) -> Iterator[str]:
    models = [
        {"name": "tiny", "path": str(tiny_model_dir)},
        {"name": "remote", "kind": "remote", "base_url": stub.base_url, "api_key": "sk-upstream-secret",
         "upstream_model": "big-model", "first_token_timeout_s": 2, "read_timeout_s": 2},
        {"name": "remote-with-fallback", "kind": "remote", "base_url": stub.base_url, "upstream_model": "big-model",
         "first_token_timeout_s": 2, "read_timeout_s": 2, "fallbacks": ["tiny"]},
        {"name": "remote-breaker", "kind": "remote", "base_url": stub.base_url, "fallbacks": ["tiny"]},
    ]
    breaker = {"failure_threshold": 3, "window_s": 60, "open_s": 60}
    # One try per model keeps the breaker counts in these tests exact (test_routing.py covers retries).
    routing = {"max_attempts_per_model": 1}
    jobs = {"retry_base_s": 0.05, "retry_max_s": 0.1}
    with running_server(
        tmp_path_factory.mktemp("remote"), tiny_model_dir, models=models, breaker=breaker, routing=routing, jobs=jobs
    ) as (url, _):
        yield url


@pytest.fixture()
def client(base) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)


@pytest.fixture(autouse=True)
def healthy_stub(stub):
    stub.behaviour.mode = StubMode.OK
    yield


def test_a_remote_model_answers_plain_and_streaming_through_genloom(client, stub):
    before = len(stub.requests)
    reply = client.chat.completions.create(model="remote", messages=HELLO, max_tokens=5)
    assert reply.model == "remote" and reply.choices[0].message.content
    chunks = list(client.chat.completions.create(model="remote", messages=HELLO, max_tokens=5, stream=True,
                                                 stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == reply.choices[0].message.content
    # The upstream's own count (two tokens a chunk here), not one token per chunk.
    assert chunks[-1].usage.completion_tokens == 6 and chunks[-1].usage.prompt_tokens == 3
    sent = stub.requests[before]
    assert sent.body["model"] == "big-model" and sent.headers["authorization"] == "Bearer sk-upstream-secret"
    assert sent.body["messages"] == HELLO
    assert not sent.body.get("stream") and stub.requests[before + 1].body["stream"] is True  # plain stays plain
    assert "remote" in [m.id for m in client.models.list().data]


def test_a_failing_upstream_is_answered_by_its_fallback(client, stub):
    for mode in (StubMode.ERROR_500, StubMode.STREAM_DIES_BEFORE_FIRST_CHUNK, StubMode.SLOW):
        stub.behaviour.mode = mode
        stub.behaviour.delay_s = 3
        if mode is not StubMode.STREAM_DIES_BEFORE_FIRST_CHUNK:  # plain calls get one JSON answer, not a stream
            reply = client.chat.completions.create(model="remote-with-fallback", messages=HELLO, max_tokens=4)
            assert reply.model == "tiny", mode  # the response says which model answered
        streamed = list(client.chat.completions.create(model="remote-with-fallback", messages=HELLO, max_tokens=4,
                                                       stream=True))
        assert streamed[-1].model == "tiny" or any(c.model == "tiny" for c in streamed)


def test_without_a_fallback_the_client_gets_a_clear_error(client, stub):
    stub.behaviour.mode = StubMode.ERROR_500
    with pytest.raises(openai.InternalServerError) as failed:
        client.chat.completions.create(model="remote", messages=HELLO, max_tokens=4)
    assert "remote" in failed.value.message


def test_a_stream_that_dies_midway_ends_with_an_error_event(base, stub):
    stub.behaviour.mode = StubMode.STREAM_DIES_MIDWAY
    stub.behaviour.chunks, stub.behaviour.die_after = 5, 2
    body = {"model": "remote", "messages": HELLO, "max_tokens": 8, "stream": True}
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=30) as answer:
        lines = [line for line in answer.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]" and '"error"' in lines[-2]
    assert sum('"content"' in line for line in lines) >= 2  # what arrived before the break was delivered


def test_a_bad_request_is_passed_back_not_retried_elsewhere(client, stub):
    stub.behaviour.mode = StubMode.ERROR_400
    before = len(stub.requests)
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="remote", messages=HELLO, max_tokens=4)
    assert "sk-upstream-secret" not in refused.value.message
    assert len(stub.requests) == before + 1


def test_an_open_breaker_skips_the_dead_upstream_at_once(base, client, stub):
    stub.behaviour.mode = StubMode.ERROR_500
    for _ in range(3):
        assert client.chat.completions.create(model="remote-breaker", messages=HELLO, max_tokens=2).model == "tiny"
    calls = len(stub.requests)
    assert client.chat.completions.create(model="remote-breaker", messages=HELLO, max_tokens=2).model == "tiny"
    assert len(stub.requests) == calls  # not even tried
    health = {u["model"]: u for u in httpx.get(f"{base}/v1/admin/upstreams").json()["data"]}
    assert health["remote-breaker@v1"]["state"] == "open" and health["remote-breaker@v1"]["next_probe_in_s"] > 0


def test_an_upstream_refusal_midstream_ends_the_stream_with_an_error_event(base, stub):
    stub.behaviour.mode = StubMode.ERROR_400
    body = {"model": "remote", "messages": HELLO, "max_tokens": 4, "stream": True}
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=30) as answer:
        lines = [line for line in answer.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]" and '"invalid_request_error"' in lines[-2]


def test_a_fallbacks_answer_is_not_cached_under_the_model_asked_for(base, stub):
    stub.behaviour.mode = StubMode.ERROR_500
    body = {"model": "remote-with-fallback", "messages": [{"role": "user", "content": "cache?"}], "max_tokens": 2,
            "temperature": 0}
    first = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=30)
    again = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=30)
    assert first.json()["model"] == "tiny" and again.headers["x-genloom-cache"] == "miss"


def test_an_async_job_whose_upstream_fails_is_answered_by_the_fallback(base, stub):
    stub.behaviour.mode = StubMode.ERROR_500
    body = {"model": "remote-with-fallback", "messages": HELLO, "max_tokens": 2}
    job = httpx.post(f"{base}/v1/jobs", json={"url": "/v1/chat/completions", "body": body}, timeout=30).json()
    deadline = time.monotonic() + 30
    while (done := httpx.get(f"{base}/v1/jobs/{job['id']}").json())["status"] not in ("completed", "failed"):
        assert time.monotonic() < deadline, done["status"]
        time.sleep(0.05)
    assert done["status"] == "completed" and done["result"]["model"] == "tiny" and done["attempts"] == 2
    assert [t["status"] for t in done["transitions"]] == ["queued", "processing", "retrying", "processing", "completed"]
