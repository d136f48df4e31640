"""Asking a chain of upstreams in turn until one answers.

Targets are tried in order. One whose circuit breaker does not allow a call is skipped without
being called. A retryable failure (timeout, lost connection, 429, 5xx) is tried again on the same
target after full-jitter backoff, at most `max_attempts_per_upstream` calls in all; a 429 asking
to wait longer than `max_retry_after_s` moves on at once, and so does any other upstream failure.
An error the request itself caused (`UpstreamRejected`) is raised at once: no upstream would
answer it. Every call's outcome goes to its target's breaker; a target with no breaker in
`breakers` is always called.

Streams fall back the same way, but only until the first chunk: after that the caller has sent
part of one upstream's answer, so a failure is raised as `StreamBroken` instead.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from genloom.gateway.breaker import CircuitBreaker
from genloom.queue.backoff import retry_delay
from genloom.runtimes.remote import StreamBroken, UpstreamError, UpstreamRateLimited


class Target(Protocol):
    @property
    def name(self) -> str: ...


T = TypeVar("T")
TargetT = TypeVar("TargetT", bound=Target)
Sleep = Callable[[float], Awaitable[Any]]


class BreakerOpen(RuntimeError):
    """A target was skipped without a call because its circuit breaker is open."""

    def __init__(self, upstream: str) -> None:
        super().__init__(f"upstream {upstream!r}: skipped, its circuit breaker is open after recent failures")
        self.upstream = upstream


@dataclass(frozen=True)
class Attempt:
    target: Target
    error: UpstreamError | BreakerOpen | None  # None: this call answered

    @property
    def skipped(self) -> bool:
        return isinstance(self.error, BreakerOpen)


@dataclass(frozen=True)
class FallbackOutcome(Generic[T]):
    value: T
    answered_by: str
    attempts: list[Attempt]


class AllUpstreamsFailed(RuntimeError):
    """Every target in the chain failed or was skipped; the message gives each one's last error."""

    def __init__(self, attempts: list[Attempt]) -> None:
        last: dict[str, UpstreamError | BreakerOpen | None] = {}
        for attempt in attempts:
            last[attempt.target.name] = attempt.error
        super().__init__("no upstream could answer: " + "; ".join(str(error) for error in last.values()))
        self.attempts = attempts
        self.last_errors = last


@dataclass(frozen=True, kw_only=True)
class FallbackPolicy:
    max_attempts_per_upstream: int = 2  # calls to one target, the first included
    backoff_base_s: float = 0.05
    backoff_max_s: float = 1.0
    max_retry_after_s: float = 1.0  # a 429 asking to wait longer moves on to the next target
    rng: random.Random = field(default_factory=random.Random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_attempts_per_upstream < 1:
            raise ValueError(f"max_attempts_per_upstream must be >= 1, got {self.max_attempts_per_upstream}")
        for key in ("backoff_base_s", "backoff_max_s", "max_retry_after_s"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{key} must be >= 0, got {value}")

    def retry_delay(self, attempt: int, error: UpstreamError) -> float | None:
        """Seconds to wait before calling the same target again after call `attempt` (from 1)
        failed with `error`, or None to move on to the next target."""
        if not error.retryable or attempt >= self.max_attempts_per_upstream:
            return None
        if isinstance(error, UpstreamRateLimited) and error.retry_after_s is not None:
            return error.retry_after_s if error.retry_after_s <= self.max_retry_after_s else None
        return retry_delay(attempt, base_s=self.backoff_base_s, max_s=self.backoff_max_s, rng=self.rng)


async def call_with_fallback(
    chain: Sequence[TargetT],
    call: Callable[[TargetT], Awaitable[T]],
    *,
    breakers: Mapping[str, CircuitBreaker],
    policy: FallbackPolicy,
    sleep: Sleep = asyncio.sleep,
) -> FallbackOutcome[T]:
    """The first answer `call` gets from a target in `chain`, with every attempt made on the way.

    Raises `UpstreamRejected` (or any error with `request_at_fault`) at once, and
    `AllUpstreamsFailed` when no target answered."""
    attempts: list[Attempt] = []
    target, value = await _first_answer(chain, call, breakers=breakers, policy=policy, sleep=sleep, attempts=attempts)
    return FallbackOutcome(value=value, answered_by=target.name, attempts=attempts)


async def _first_answer(
    chain: Sequence[TargetT],
    call: Callable[[TargetT], Awaitable[T]],
    *,
    breakers: Mapping[str, CircuitBreaker],
    policy: FallbackPolicy,
    sleep: Sleep,
    attempts: list[Attempt],
) -> tuple[TargetT, T]:
    if not chain:
        raise ValueError("the fallback chain is empty")
    for target in chain:
        breaker = breakers.get(target.name)
        attempt = 0
        while True:
            if breaker is not None and not breaker.allow():
                if attempt == 0:  # on a retry, the failure that opened it is the error worth reporting
                    attempts.append(Attempt(target, BreakerOpen(target.name)))
                break
            attempt += 1
            try:
                value = await call(target)
            except UpstreamError as e:
                attempts.append(Attempt(target, e))
                if e.request_at_fault:
                    # The upstream judged the request correctly, which is all a breaker asks of it.
                    _record(breaker, success=True)
                    raise
                _record(breaker, success=False)
                delay = policy.retry_delay(attempt, e)
                if delay is None:
                    break
                await sleep(delay)
                continue
            except BaseException:
                if breaker is not None:
                    breaker.release()
                raise
            _record(breaker, success=True)
            attempts.append(Attempt(target, None))
            return target, value
    raise AllUpstreamsFailed(attempts)


def _record(breaker: CircuitBreaker | None, *, success: bool) -> None:
    if breaker is None:
        return
    if success:
        breaker.record_success()
    else:
        breaker.record_failure()


class FallbackStream(Generic[TargetT]):
    """Chunks from the first target in the chain that yields one, as an async iterator.

    `answered_by` is None until the first chunk is returned, and from then on the name of the
    target the chunks come from; `attempts` lists every target tried so far. Before the first
    chunk it raises what `call_with_fallback` would; after it, any upstream failure is raised as
    `StreamBroken` with every earlier chunk already delivered. A target's breaker hears of
    success at its first chunk, and of failure if its stream then breaks. Close it (`aclose()`,
    or use it with `async with`) when stopping early, so the upstream connection is let go."""

    def __init__(
        self,
        chain: Sequence[TargetT],
        open_stream: Callable[[TargetT], AsyncIterator[dict[str, Any]]],
        *,
        breakers: Mapping[str, CircuitBreaker],
        policy: FallbackPolicy,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.answered_by: str | None = None
        self.attempts: list[Attempt] = []
        self._chunks = self._run(chain, open_stream, breakers, policy, sleep)

    def __aiter__(self) -> FallbackStream[TargetT]:
        return self

    async def __anext__(self) -> dict[str, Any]:
        return await anext(self._chunks)

    async def aclose(self) -> None:
        await self._chunks.aclose()

    async def __aenter__(self) -> FallbackStream[TargetT]:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _run(
        self,
        chain: Sequence[TargetT],
        open_stream: Callable[[TargetT], AsyncIterator[dict[str, Any]]],
        breakers: Mapping[str, CircuitBreaker],
        policy: FallbackPolicy,
        sleep: Sleep,
    ) -> AsyncGenerator[dict[str, Any], None]:
        async def first_chunk(target: TargetT) -> tuple[AsyncIterator[dict[str, Any]], dict[str, Any] | None]:
            chunks = open_stream(target)
            try:
                return chunks, await anext(chunks, None)
            except BaseException:
                await _close(chunks)
                raise

        target, (chunks, first) = await _first_answer(
            chain, first_chunk, breakers=breakers, policy=policy, sleep=sleep, attempts=self.attempts
        )
        self.answered_by = target.name
        delivered = 0
        try:
            if first is None:
                return
            yield first
            delivered = 1
            async for chunk in chunks:
                yield chunk
                delivered += 1
        except UpstreamError as e:
            _record(breakers.get(target.name), success=False)
            if isinstance(e, StreamBroken):
                raise
            raise StreamBroken(target.name, chunks_received=delivered, reason=e) from e
        finally:
            await _close(chunks)


def stream_with_fallback(
    chain: Sequence[TargetT],
    open_stream: Callable[[TargetT], AsyncIterator[dict[str, Any]]],
    *,
    breakers: Mapping[str, CircuitBreaker],
    policy: FallbackPolicy,
    sleep: Sleep = asyncio.sleep,
) -> FallbackStream[TargetT]:
    """Stream from the first target in `chain` that yields a chunk; see `FallbackStream`."""
    return FallbackStream(chain, open_stream, breakers=breakers, policy=policy, sleep=sleep)


async def _close(chunks: AsyncIterator[Any]) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()
