"""The interface every queue backend offers: the in-process `InMemoryQueue` and the shared
`RedisQueue` both pass tests/queue/test_queue_contract.py against it."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import redis

from genloom.jobs import Job, RequestClass


class QueueClosed(RuntimeError):
    """The server is shutting down and takes no new work."""


@dataclass(eq=False)
class Reservation:
    """A place held in a model's queue for a job being stored."""

    model: str
    request_class: RequestClass
    tenant: str
    released: bool = False
    id: str = ""  # a shared queue's name for the place


class QueueUnavailable(RuntimeError):
    """A shared queue's server cannot be reached; the caller answers 503 and tries again later."""


class JobQueue(Protocol):
    backend: str  # "memory" or "redis", for operators
    blocking: bool  # whether its calls wait on the network (callers on an event loop offload them)

    def submit(self, job: Job) -> None: ...
    def restore(self, job: Job) -> None: ...
    def requeue(self, job: Job) -> None: ...
    def reserve(self, *, model: str, request_class: RequestClass, tenant: str) -> Reservation: ...
    def release(self, reservation: Reservation) -> None: ...
    def take(
        self, models: Iterable[str], *, max_rows: int, timeout: float, max_async_rows: int | None = None
    ) -> list[Job]: ...
    def finish(self, job: Job) -> None: ...
    def remove(self, job_id: str) -> Job | None: ...
    def missing(self, job_ids: list[str]) -> set[str]: ...
    def depths(self) -> dict[str, dict[RequestClass, int]]: ...
    def dead_letters(self, limit: int = 100) -> list[str]: ...
    def position(self, job_id: str) -> int | None: ...
    def depth(self, request_class: RequestClass | None = None, *, model: str | None = None) -> int: ...
    def watch(self, model: str, wake: Callable[[], None]) -> None: ...
    def close(self) -> list[Job]: ...


# Redis down or cut off (a script error is not): callers turn these into QueueUnavailable.
UNREACHABLE = (redis.ConnectionError, redis.TimeoutError)
