"""Queue calls from the event loop: a shared queue's do network I/O (Redis), so they run on a
worker thread and the loop serves other requests meanwhile; the in-process queue's are
memory operations and run in place."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from genloom.queue import JobQueue

T = TypeVar("T")


async def queue_call(queue: JobQueue, call: Callable[..., T], *args: object, **kwargs: object) -> T:
    if queue.blocking:
        return await asyncio.to_thread(call, *args, **kwargs)
    return call(*args, **kwargs)
