"""Worker threads report a request's events to the event loop that waits for them: one way to
hand them over and one way to wait, for every kind of request."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

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


async def next_event(events: asyncio.Queue[Any], disconnected: DisconnectProbe) -> Any | None:
    """The next event, or None once the client has gone away."""
    if not events.empty():
        return events.get_nowait()
    while True:
        try:
            return await asyncio.wait_for(events.get(), PROBE_INTERVAL_S)
        except TimeoutError:
            if await disconnected():
                return None
