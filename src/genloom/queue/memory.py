"""The in-process queue: bounded, priority-ordered, shared between the event loop (submit) and
worker threads (take)."""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Iterable

from genloom.queue.jobs import Job


class QueueFull(RuntimeError):
    """The queue holds as many waiting jobs as it may; the caller should retry later."""

    def __init__(self, limit: int, retry_after_s: int) -> None:
        super().__init__(f"the queue is full ({limit} requests waiting); retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s


class QueueClosed(RuntimeError):
    """The server is shutting down and takes no new work."""


class InMemoryQueue:
    def __init__(self, *, max_queued: int, retry_after_s: int = 1) -> None:
        self._max_queued = max_queued
        self._retry_after_s = retry_after_s
        self._heaps: dict[str, list[tuple[int, int, Job]]] = {}
        self._waiting = 0
        self._arrival = itertools.count()
        self._cond = threading.Condition()
        self._closed = False

    def submit(self, job: Job) -> None:
        with self._cond:
            if self._closed:
                raise QueueClosed("the server is shutting down")
            if self._waiting >= self._max_queued:
                raise QueueFull(self._max_queued, self._retry_after_s)
            heapq.heappush(self._heaps.setdefault(job.model, []), (int(job.priority), next(self._arrival), job))
            self._waiting += 1
            self._cond.notify_all()

    def take(self, models: Iterable[str], *, max_rows: int, timeout: float) -> list[Job]:
        """Jobs for `models` in priority order, as many as fit in `max_rows` batch slots; waits
        up to `timeout` seconds when none is ready. Cancelled jobs are dropped on the way."""
        models = tuple(models)
        with self._cond:
            jobs = self._pop(models, max_rows)
            if not jobs and timeout > 0 and not self._closed:
                self._cond.wait(timeout)
                jobs = self._pop(models, max_rows)
            return jobs

    def _pop(self, models: tuple[str, ...], max_rows: int) -> list[Job]:
        taken: list[Job] = []
        rows = 0
        while True:
            heads = [(self._heaps[m][0], m) for m in models if self._heaps.get(m)]
            if not heads:
                return taken
            (_, _, job), model = min(heads, key=lambda h: h[0][:2])
            if job.cancelled:
                heapq.heappop(self._heaps[model])
                self._waiting -= 1
                continue
            if rows + job.rows > max_rows:
                return taken
            heapq.heappop(self._heaps[model])
            self._waiting -= 1
            taken.append(job)
            rows += job.rows

    def depth(self) -> int:
        with self._cond:
            return self._waiting

    def close(self) -> list[Job]:
        """Refuse new work and hand back everything still waiting."""
        with self._cond:
            self._closed = True
            left = [job for heap in self._heaps.values() for _, _, job in heap if not job.cancelled]
            self._heaps.clear()
            self._waiting = 0
            self._cond.notify_all()
            return left
