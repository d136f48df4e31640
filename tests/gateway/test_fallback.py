"""Fallback along a chain of real stub upstreams, with breakers on a fake clock and sleeps recorded."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest

from genloom.gateway.breaker import BreakerState, CircuitBreaker
from genloom.gateway.fallback import (
    AllUpstreamsFailed,
    FallbackPolicy,
    call_with_fallback,
    stream_with_fallback,
)
from genloom.runtimes.remote import (
    RemoteTextUpstream,
    StreamBroken,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamServerError,
    UpstreamSettings,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from tests.stub_upstream import Behaviour, StubMode, StubUpstream, running_stub

CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}


class FakeClock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


class RecordedSleep:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


class HighestDraw(random.Random):
    """Full jitter always drawing its ceiling, so backoff delays are exact."""

    def uniform(self, a: float, b: float) -> float:
        return b


@dataclass(frozen=True)
class Named:
    name: str


@pytest.fixture(scope="module")
def stubs() -> Iterator[tuple[StubUpstream, StubUpstream]]:
    with running_stub() as primary, running_stub() as secondary:
        yield primary, secondary


@pytest.fixture()
def primary(stubs) -> StubUpstream:
    return reset(stubs[0])


@pytest.fixture()
def secondary(stubs) -> StubUpstream:
    return reset(stubs[1])


def reset(stub: StubUpstream) -> StubUpstream:
    stub.behaviour = Behaviour()
    stub.requests.clear()
    return stub


@pytest.fixture()
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture()
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture()
def sleep() -> RecordedSleep:
    return RecordedSleep()


def remote(client: httpx.AsyncClient, name: str, base_url: str) -> RemoteTextUpstream:
    settings = UpstreamSettings(
        name=name, base_url=base_url, api_key=None, model=f"{name}-model", read_timeout_s=0.2, first_token_timeout_s=0.5
    )
    return RemoteTextUpstream(settings=settings, client=client)


def closed_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1"


def breakers(clock: FakeClock, *names: str, threshold: int = 5) -> dict[str, CircuitBreaker]:
    return {name: CircuitBreaker(failure_threshold=threshold, window_s=60, open_s=30, clock=clock) for name in names}


def policy(**overrides) -> FallbackPolicy:
    return FallbackPolicy(**({"rng": HighestDraw()} | overrides))


def complete(target: RemoteTextUpstream):
    return target.complete("/chat/completions", CHAT)


def stream(target: RemoteTextUpstream):
    return target.stream("/chat/completions", CHAT)


@pytest.mark.parametrize(
    ("failure", "error", "calls", "delays"),
    [
        (StubMode.ERROR_500, UpstreamServerError, 2, [0.05]),
        (StubMode.ERROR_429, UpstreamRateLimited, 1, []),  # Retry-After 30 s is too long to wait for
        (StubMode.SLOW, UpstreamTimeout, 2, [0.05]),
        ("refused", UpstreamUnavailable, 0, [0.05]),
    ],
)
async def test_second_upstream_answers_when_the_first_fails(
    primary, secondary, client, clock, sleep, failure, error, calls, delays
):
    primary.behaviour = Behaviour(mode=StubMode.OK if failure == "refused" else failure, retry_after="30", delay_s=1)
    first = remote(client, "primary", closed_url() if failure == "refused" else primary.base_url)
    chain = [first, remote(client, "secondary", secondary.base_url)]
    guards = breakers(clock, "primary", "secondary")

    outcome = await call_with_fallback(chain, complete, breakers=guards, policy=policy(), sleep=sleep)

    assert outcome.answered_by == "secondary"
    assert outcome.value["choices"][0]["message"]["content"] == "tok0 tok1 tok2 "
    assert secondary.requests[0].body["model"] == "secondary-model"
    assert len(primary.requests) == calls
    assert sleep.delays == delays
    assert [(a.target.name, type(a.error)) for a in outcome.attempts][-1] == ("secondary", type(None))
    assert all(isinstance(a.error, error) for a in outcome.attempts[:-1])
    assert guards["primary"].snapshot().failures_in_window == len(outcome.attempts) - 1


async def test_short_retry_after_is_waited_out_on_the_same_upstream(primary, secondary, client, clock, sleep):
    primary.behaviour = Behaviour(mode=StubMode.ERROR_429, retry_after="0.5")

    async def recover_while_waiting(seconds: float) -> None:
        await sleep(seconds)
        primary.behaviour.mode = StubMode.OK

    chain = [remote(client, "primary", primary.base_url), remote(client, "secondary", secondary.base_url)]
    outcome = await call_with_fallback(
        chain, complete, breakers=breakers(clock, "primary"), policy=policy(), sleep=recover_while_waiting
    )

    assert outcome.answered_by == "primary"
    assert sleep.delays == [0.5]
    assert secondary.requests == []


async def test_open_breaker_is_skipped_without_a_call(primary, secondary, client, clock, sleep):
    guards = breakers(clock, "primary", "secondary", threshold=1)
    guards["primary"].record_failure()
    chain = [remote(client, "primary", primary.base_url), remote(client, "secondary", secondary.base_url)]

    outcome = await call_with_fallback(chain, complete, breakers=guards, policy=policy(), sleep=sleep)

    assert outcome.answered_by == "secondary"
    assert primary.requests == []
    assert outcome.attempts[0].skipped


async def test_retries_stop_once_the_breaker_opens(primary, secondary, client, clock, sleep):
    primary.behaviour.mode = StubMode.ERROR_500
    guards = breakers(clock, "primary", threshold=1)
    chain = [remote(client, "primary", primary.base_url), remote(client, "secondary", secondary.base_url)]

    outcome = await call_with_fallback(chain, complete, breakers=guards, policy=policy(), sleep=sleep)

    assert len(primary.requests) == 1
    assert guards["primary"].state is BreakerState.OPEN
    assert [a.skipped for a in outcome.attempts] == [False, False]


async def test_bad_request_is_raised_at_once_without_trying_the_next(primary, secondary, client, clock, sleep):
    primary.behaviour.mode = StubMode.ERROR_400
    guards = breakers(clock, "primary", "secondary")
    chain = [remote(client, "primary", primary.base_url), remote(client, "secondary", secondary.base_url)]

    with pytest.raises(UpstreamRejected):
        await call_with_fallback(chain, complete, breakers=guards, policy=policy(), sleep=sleep)

    assert len(primary.requests) == 1
    assert secondary.requests == []
    assert guards["primary"].snapshot().failures_in_window == 0


async def test_all_failing_raises_with_each_targets_last_error(primary, client, clock, sleep):
    primary.behaviour.mode = StubMode.ERROR_500
    guards = breakers(clock, "primary", "secondary", "tertiary", threshold=1)
    guards["tertiary"].record_failure()
    chain = [
        remote(client, "primary", primary.base_url),
        remote(client, "secondary", closed_url()),
        remote(client, "tertiary", primary.base_url),
    ]

    with pytest.raises(AllUpstreamsFailed) as caught:
        await call_with_fallback(chain, complete, breakers=guards, policy=policy(), sleep=sleep)

    message = str(caught.value)
    assert "upstream 'primary': failed (HTTP 500)" in message
    assert "upstream 'secondary': could not connect" in message
    assert "upstream 'tertiary': skipped, its circuit breaker is open" in message
    assert [a.target.name for a in caught.value.attempts] == ["primary", "secondary", "tertiary"]


async def test_target_without_a_breaker_is_always_called(primary, client, sleep):
    outcome = await call_with_fallback(
        [remote(client, "primary", primary.base_url)], complete, breakers={}, policy=policy(), sleep=sleep
    )
    assert outcome.answered_by == "primary"


async def test_cancelled_probe_gives_its_slot_back(clock, sleep):
    guard = CircuitBreaker(failure_threshold=1, window_s=60, open_s=30, clock=clock)
    guard.record_failure()
    clock.now = 30

    async def cancelled(target: Named) -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await call_with_fallback([Named("a")], cancelled, breakers={"a": guard}, policy=policy(), sleep=sleep)

    assert guard.state is BreakerState.HALF_OPEN and guard.allow()


async def test_empty_chain_is_refused(sleep):
    with pytest.raises(ValueError, match="empty"):
        await call_with_fallback([], complete, breakers={}, policy=policy(), sleep=sleep)


def test_backoff_doubles_up_to_its_cap_and_stops_at_max_attempts():
    p = policy(max_attempts_per_upstream=5, backoff_base_s=0.1, backoff_max_s=0.3)
    error = UpstreamServerError("a", "failed", status_code=500)

    assert [p.retry_delay(attempt, error) for attempt in (1, 2, 3, 4, 5)] == [0.1, 0.2, 0.3, 0.3, None]


def test_backoff_draws_full_jitter_below_the_ceiling():
    p = FallbackPolicy(max_attempts_per_upstream=3, rng=random.Random(1))
    delays = [p.retry_delay(2, UpstreamTimeout("a", "slow")) for _ in range(200)]
    assert all(0 <= d <= 0.1 for d in delays) and len(set(delays)) > 100


async def test_stream_falls_back_when_the_first_dies_before_its_first_chunk(primary, secondary, client, clock, sleep):
    primary.behaviour.mode = StubMode.STREAM_DIES_BEFORE_FIRST_CHUNK
    chain = [remote(client, "primary", primary.base_url), remote(client, "secondary", secondary.base_url)]
    chunks = stream_with_fallback(chain, stream, breakers=breakers(clock, "primary"), policy=policy(), sleep=sleep)
    assert chunks.answered_by is None

    async with chunks:
        received = [c["choices"][0]["delta"]["content"] async for c in chunks]

    assert received == ["tok0 ", "tok1 ", "tok2 "]
    assert chunks.answered_by == "secondary"
    assert len(primary.requests) == 2
    assert [type(a.error) for a in chunks.attempts] == [UpstreamUnavailable, UpstreamUnavailable, type(None)]


async def test_stream_broken_midway_is_raised_after_the_chunks_already_sent(primary, secondary, client, clock, sleep):
    primary.behaviour = Behaviour(mode=StubMode.STREAM_DIES_MIDWAY, die_after=2)
    guards = breakers(clock, "primary")
    chain = [remote(client, "primary", primary.base_url), remote(client, "secondary", secondary.base_url)]
    chunks = stream_with_fallback(chain, stream, breakers=guards, policy=policy(), sleep=sleep)
    received = []

    with pytest.raises(StreamBroken) as caught:
        async for chunk in chunks:
            received.append(chunk["choices"][0]["delta"]["content"])

    assert received == ["tok0 ", "tok1 "]
    assert caught.value.chunks_received == 2 and not caught.value.before_first_token
    assert chunks.answered_by == "primary"
    assert secondary.requests == []
    assert guards["primary"].snapshot().failures_in_window == 1


async def test_stream_wraps_any_midway_upstream_error_as_broken(clock, sleep):
    async def dies_after_one(target: Named) -> AsyncIterator[dict]:
        yield {"n": 1}
        raise UpstreamServerError(target.name, "engine crashed", status_code=None)

    chunks = stream_with_fallback([Named("a")], dies_after_one, breakers={}, policy=policy(), sleep=sleep)

    with pytest.raises(StreamBroken, match="broke after 1 chunk") as caught:
        [c async for c in chunks]
    assert isinstance(caught.value.reason, UpstreamServerError)


async def test_stream_bad_request_is_raised_at_once(primary, secondary, client, clock, sleep):
    primary.behaviour.mode = StubMode.ERROR_400
    chain = [remote(client, "primary", primary.base_url), remote(client, "secondary", secondary.base_url)]

    with pytest.raises(UpstreamRejected):
        [c async for c in stream_with_fallback(chain, stream, breakers={}, policy=policy(), sleep=sleep)]
    assert secondary.requests == []


async def test_stream_all_failing_raises_all_upstreams_failed(primary, client, sleep):
    primary.behaviour.mode = StubMode.STREAM_DIES_BEFORE_FIRST_CHUNK
    chain = [remote(client, "primary", primary.base_url), remote(client, "secondary", closed_url())]

    with pytest.raises(AllUpstreamsFailed, match="'primary'.*'secondary'"):
        [c async for c in stream_with_fallback(chain, stream, breakers={}, policy=policy(), sleep=sleep)]


async def test_stream_closed_early_closes_the_upstream_stream(sleep):
    closed = []

    async def endless(target: Named) -> AsyncIterator[dict]:
        try:
            while True:
                yield {"n": 1}
        finally:
            closed.append(target.name)

    chunks = stream_with_fallback([Named("a")], endless, breakers={}, policy=policy(), sleep=sleep)
    async with chunks:
        await anext(chunks)

    assert closed == ["a"]
