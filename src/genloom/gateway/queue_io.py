"""Queue calls from the event loop: a shared queue's do network I/O (Redis), so they run on a
worker thread and the loop serves other requests meanwhile; the in-process queue's are
memory operations and run in place."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TypeVar

from genloom.jobs import Job
from genloom.queue import JobQueue
from genloom.queue.protocol import QueueUnavailable

log = logging.getLogger("genloom.gateway")

T = TypeVar("T")


async def queue_call(queue: JobQueue, call: Callable[..., T], *args: object, **kwargs: object) -> T:
    if queue.blocking:
        return await asyncio.to_thread(call, *args, **kwargs)
    return call(*args, **kwargs)


async def withdraw(queue: JobQueue, job: Job) -> None:
    """A realtime job's request is over: cancel it and take it out of line. With the queue's
    Redis away it stays there; whoever takes it later finds nobody waiting and drops it."""
    job.cancel()
    try:
        await queue_call(queue, queue.remove, job.id)
    except QueueUnavailable as e:
        log.warning("could not take job %s out of the queue: %s", job.id, e)
