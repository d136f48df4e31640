"""Worker threads report a request's events to the event loop that waits for them: one way to
hand them over and one way to wait, for every kind of request."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from genloom.gateway.errors import GenerationFailed, NotReady, TimedOut
from genloom.jobs import JobFailed, JobStarted, Tier

DisconnectProbe = Callable[[], Awaitable[bool]]
PROBE_INTERVAL_S = 0.25  # how often a waiting request asks whether its client is still there


def thread_emitter(events: asyncio.Queue[Any]) -> Callable[[Any], None]:
    """An `emit` for a Job: callable from any thread, it puts the event on `events` in the
    running loop (call it on that loop)."""
    loop = asyncio.get_running_loop()

    def emit(event: Any) -> None:
        try:
            loop.call_soon_threadsafe(events.put_nowait, event)
        except RuntimeError:
            pass  # the event loop has closed: nobody is waiting for this request any more

    return emit


async def next_event(
    events: asyncio.Queue[Any], disconnected: DisconnectProbe, *, silence_s: float | None = None
) -> Any | None:
    """The next event, or None once the client has gone away; TimeoutError when none came for
    `silence_s` seconds (None: wait as long as the client does)."""
    if not events.empty():
        return events.get_nowait()
    deadline = None if silence_s is None else time.monotonic() + silence_s
    while True:
        wait = PROBE_INTERVAL_S if deadline is None else min(PROBE_INTERVAL_S, deadline - time.monotonic())
        if wait <= 0:
            raise TimeoutError
        try:
            return await asyncio.wait_for(events.get(), wait)
        except TimeoutError:
            if await disconnected():
                return None


class WaitBounds:
    """How long a realtime request may wait without a word from its job, per tier: for its
    first event (a place in a batch), then between tokens. A job that answers in one piece
    (pictures, vectors) says nothing between its start and its result, so once started it may
    take up to `generation_s`. Whatever goes wrong (a lost worker, a Redis outage eating its
    events, a hung model call), the client hears within these bounds: 503 `queue_timeout` when
    it never started, 504 `worker_timeout` after."""

    def __init__(self, silence_s: Mapping[Tier, float], *, generation_s: float = 600.0) -> None:
        self._silence_s = dict(silence_s)
        self.generation_s = generation_s

    def silence_s(self, tier: Tier) -> float | None:
        return self._silence_s.get(tier)

    def timed_out(self, model: str, tier: Tier, *, started: bool, bound: float | None = None) -> TimedOut:
        bound = self._silence_s[tier] if bound is None else bound
        if started:
            message = f"model {model} went silent for {bound:g} s while generating; retry the request"
        else:
            message = f"no worker could start this request on model {model} within {bound:g} s ({tier.value} tier); retry later"
        return TimedOut(message, started=started)


async def final_event(
    events: asyncio.Queue[Any], disconnected: DisconnectProbe, *, bounds: WaitBounds | None, model: str, tier: Tier,
) -> Any | None:
    """A one-piece job's result (its first event other than JobStarted), None once the client
    has gone away; its failure raised (NotReady when the worker's server shuts down, else
    GenerationFailed); TimedOut past the tier's bound (see WaitBounds)."""
    started = False
    silence_s = bounds.silence_s(tier) if bounds is not None else None
    while True:
        try:
            event = await next_event(events, disconnected, silence_s=silence_s)
        except TimeoutError:
            assert bounds is not None
            raise bounds.timed_out(model, tier, started=started, bound=silence_s) from None
        if isinstance(event, JobFailed):
            if event.shutdown:
                raise NotReady(f"{event.message}; retry on another replica")
            raise GenerationFailed(event.message)
        if not isinstance(event, JobStarted):
            return event
        started = True
        if bounds is not None:
            silence_s = bounds.generation_s
