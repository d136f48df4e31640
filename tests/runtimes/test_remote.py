"""RemoteTextUpstream against a real stub server: every failure mode classified, timeouts kept."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from genloom.runtimes.remote import (
    RemoteTextUpstream,
    StreamBroken,
    UpstreamError,
    UpstreamMisconfigured,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamServerError,
    UpstreamSettings,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from tests.stub_upstream import Behaviour, StubMode, StubUpstream, running_stub

KEY = "sk-test-secret-4242"
CHAT = {"model": "client-facing-name", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


@pytest.fixture(scope="module")
def stub_server() -> Iterator[StubUpstream]:
    with running_stub() as stub:
        yield stub


@pytest.fixture()
def stub(stub_server: StubUpstream) -> StubUpstream:
    stub_server.behaviour = Behaviour()
    stub_server.requests.clear()
    return stub_server


@pytest.fixture()
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def upstream(client: httpx.AsyncClient, base_url: str, **settings) -> RemoteTextUpstream:
    settings = {"name": "primary", "base_url": base_url, "api_key": KEY, "model": "upstream-model"} | settings
    return RemoteTextUpstream(settings=UpstreamSettings(**settings), client=client)


async def collect(chunks: AsyncIterator[dict]) -> list[dict]:
    return [chunk async for chunk in chunks]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def unanswered_port() -> Iterator[int]:
    """A port whose accept queue is full, so Linux drops new connection attempts unanswered."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = [socket.socket() for _ in range(3)]
    try:
        for filler in fillers:
            filler.setblocking(False)
            filler.connect_ex(listener.getsockname())
        time.sleep(0.05)
        yield listener.getsockname()[1]
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


async def test_complete_sends_upstream_model_name_and_bearer_key(stub, client):
    answer = await upstream(client, stub.base_url).complete("/chat/completions", CHAT)

    assert answer["choices"][0]["message"]["content"] == "tok0 tok1 tok2 "
    (request,) = stub.requests
    assert request.path == "/v1/chat/completions"
    assert request.body == CHAT | {"model": "upstream-model"}
    assert request.headers["authorization"] == f"Bearer {KEY}"


async def test_no_api_key_sends_no_authorization_header(stub, client):
    await upstream(client, stub.base_url, api_key=None).complete("/completions", {"model": "x", "prompt": "hi"})

    assert stub.requests[0].path == "/v1/completions"
    assert "authorization" not in stub.requests[0].headers


async def test_stream_yields_each_chunk_until_done(stub, client):
    stub.behaviour.chunks = 4

    chunks = await collect(upstream(client, stub.base_url).stream("/chat/completions", CHAT))

    assert [c["choices"][0]["delta"]["content"] for c in chunks] == ["tok0 ", "tok1 ", "tok2 ", "tok3 "]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert stub.requests[0].body == CHAT | {"model": "upstream-model", "stream": True}
    assert stub.requests[0].headers["authorization"] == f"Bearer {KEY}"


async def test_complete_refuses_a_body_that_asks_for_a_stream(stub, client):
    with pytest.raises(ValueError, match="stream"):
        await upstream(client, stub.base_url).complete("/chat/completions", CHAT | {"stream": True})
    assert stub.requests == []


CLASSIFIED = [
    (StubMode.ERROR_500, UpstreamServerError, True),
    (StubMode.ERROR_429, UpstreamRateLimited, True),
    (StubMode.ERROR_400, UpstreamRejected, False),
    (StubMode.ERROR_401, UpstreamMisconfigured, False),
    (StubMode.BAD_JSON, UpstreamProtocolError, False),
]


@pytest.mark.parametrize(("mode", "error", "retryable"), CLASSIFIED, ids=[m.value for m, _, _ in CLASSIFIED])
async def test_complete_classifies_failures(stub, client, mode, error, retryable):
    stub.behaviour.mode = mode

    with pytest.raises(error) as caught:
        await upstream(client, stub.base_url).complete("/chat/completions", CHAT)

    assert caught.value.retryable is retryable
    assert caught.value.upstream == "primary"
    assert KEY not in str(caught.value)


@pytest.mark.parametrize(("mode", "error", "retryable"), CLASSIFIED, ids=[m.value for m, _, _ in CLASSIFIED])
async def test_stream_classifies_failures_before_the_first_chunk(stub, client, mode, error, retryable):
    stub.behaviour.mode = mode

    with pytest.raises(error) as caught:
        await collect(upstream(client, stub.base_url).stream("/chat/completions", CHAT))

    assert caught.value.retryable is retryable
    assert caught.value.before_first_token is True
    assert KEY not in str(caught.value)


async def test_rejection_carries_the_upstream_openai_error_without_the_key(stub, client):
    stub.behaviour.mode = StubMode.ERROR_400

    with pytest.raises(UpstreamRejected) as caught:
        await upstream(client, stub.base_url).complete("/chat/completions", CHAT)

    rejected = caught.value
    assert rejected.request_at_fault and rejected.status_code == 400
    assert rejected.error["type"] == "invalid_request_error"
    assert rejected.error["param"] == "messages"
    assert rejected.error["message"].startswith("'messages' is not valid")
    assert "Bearer ***" in rejected.error["message"]
    assert KEY not in repr(rejected.error)


async def test_rate_limit_carries_retry_after_seconds(stub, client):
    stub.behaviour.mode = StubMode.ERROR_429
    stub.behaviour.retry_after = "7"

    with pytest.raises(UpstreamRateLimited) as caught:
        await upstream(client, stub.base_url).complete("/chat/completions", CHAT)

    assert caught.value.retry_after_s == 7


async def test_rate_limit_reads_retry_after_as_an_http_date(stub, client):
    stub.behaviour.mode = StubMode.ERROR_429
    stub.behaviour.retry_after = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)

    with pytest.raises(UpstreamRateLimited) as caught:
        await upstream(client, stub.base_url).complete("/chat/completions", CHAT)

    assert 28 <= caught.value.retry_after_s <= 30


async def test_rate_limit_without_retry_after_says_so(stub, client):
    stub.behaviour.mode = StubMode.ERROR_429
    stub.behaviour.retry_after = None

    with pytest.raises(UpstreamRateLimited) as caught:
        await upstream(client, stub.base_url).complete("/chat/completions", CHAT)

    assert caught.value.retry_after_s is None


async def test_silence_longer_than_read_timeout_is_a_timeout(stub, client):
    stub.behaviour.mode = StubMode.SLOW
    stub.behaviour.delay_s = 2
    started = time.monotonic()

    with pytest.raises(UpstreamTimeout, match="sent nothing for 0.2 s") as caught:
        await upstream(client, stub.base_url, read_timeout_s=0.2).complete("/chat/completions", CHAT)

    assert caught.value.retryable
    assert time.monotonic() - started < 1


async def test_stream_without_a_first_token_in_time_is_a_timeout(stub, client):
    stub.behaviour.mode = StubMode.SLOW_FIRST_CHUNK  # keep-alives keep the read gap short, no data comes
    stub.behaviour.delay_s = 2
    remote = upstream(client, stub.base_url, read_timeout_s=5, first_token_timeout_s=0.3)
    started = time.monotonic()

    with pytest.raises(UpstreamTimeout, match="no first token within 0.3 s") as caught:
        await collect(remote.stream("/chat/completions", CHAT))

    assert caught.value.before_first_token
    assert time.monotonic() - started < 1


async def test_keep_alives_reset_the_read_gap_until_the_first_token(stub, client):
    stub.behaviour.mode = StubMode.SLOW_FIRST_CHUNK
    stub.behaviour.delay_s = 0.4
    remote = upstream(client, stub.base_url, read_timeout_s=0.2, first_token_timeout_s=2)

    chunks = await collect(remote.stream("/chat/completions", CHAT))

    assert len(chunks) == 3


async def test_refused_connection_is_unavailable(client):
    with pytest.raises(UpstreamUnavailable, match="could not connect") as caught:
        await upstream(client, f"http://127.0.0.1:{closed_port()}/v1").complete("/chat/completions", CHAT)
    assert caught.value.retryable


async def test_connection_not_accepted_in_time_is_a_timeout(client):
    with unanswered_port() as port:
        remote = upstream(client, f"http://127.0.0.1:{port}/v1", connect_timeout_s=0.2)
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout, match="no connection within 0.2 s"):
            await remote.complete("/chat/completions", CHAT)
    assert time.monotonic() - started < 1


async def test_stream_dropped_after_headers_fails_before_the_first_token(stub, client):
    stub.behaviour.mode = StubMode.STREAM_DIES_BEFORE_FIRST_CHUNK

    with pytest.raises(UpstreamUnavailable) as caught:
        await collect(upstream(client, stub.base_url).stream("/chat/completions", CHAT))

    assert caught.value.before_first_token and caught.value.retryable


async def test_stream_dropped_midway_is_a_broken_stream_after_its_chunks(stub, client):
    stub.behaviour.mode = StubMode.STREAM_DIES_MIDWAY
    stub.behaviour.die_after = 2
    received = []

    with pytest.raises(StreamBroken) as caught:
        async for chunk in upstream(client, stub.base_url).stream("/chat/completions", CHAT):
            received.append(chunk)

    assert len(received) == 2
    broken = caught.value
    assert broken.chunks_received == 2
    assert broken.before_first_token is False and broken.retryable is False
    assert isinstance(broken.reason, UpstreamUnavailable)


async def test_stream_reported_error_event_is_a_server_error():
    def handler(request: httpx.Request) -> httpx.Response:
        body = b'data: {"error": {"message": "engine crashed"}}\n\n'
        return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as mocked:
        with pytest.raises(UpstreamServerError, match="engine crashed"):
            await collect(upstream(mocked, "http://upstream.test/v1").stream("/chat/completions", CHAT))


async def test_stream_ending_without_done_is_a_protocol_error():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"", headers={"content-type": "text/event-stream"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as mocked:
        with pytest.raises(UpstreamProtocolError, match=r"without \[DONE\]"):
            await collect(upstream(mocked, "http://upstream.test/v1").stream("/chat/completions", CHAT))


def test_settings_repr_hides_the_api_key():
    settings = UpstreamSettings(name="a", base_url="http://x/v1", api_key=KEY, model="m")
    assert KEY not in repr(settings)


@pytest.mark.parametrize(
    "bad", [{"base_url": "x/v1"}, {"model": ""}, {"read_timeout_s": 0}, {"first_token_timeout_s": float("nan")}]
)
def test_settings_refuse_unusable_values(bad):
    with pytest.raises(ValueError):
        UpstreamSettings(**({"name": "a", "base_url": "http://x/v1", "api_key": None, "model": "m"} | bad))


def test_only_transient_failures_are_retryable():
    transient = (UpstreamTimeout, UpstreamUnavailable, UpstreamRateLimited, UpstreamServerError)
    lasting = (UpstreamRejected, UpstreamMisconfigured, UpstreamProtocolError, StreamBroken)
    assert all(e.retryable for e in transient)
    assert not any(e.retryable for e in lasting)
    assert [e for e in (*transient, *lasting) if e.request_at_fault] == [UpstreamRejected]
    assert all(issubclass(e, UpstreamError) for e in (*transient, *lasting))
