"""The in-process queue: one `Scheduler` per model decides the order; this class adds the locking
between the event loop (submit) and worker threads (take) and maps entries to jobs."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from genloom.jobs import Job, RequestClass
from genloom.queue.protocol import QueueClosed, Reservation
from genloom.queue.scheduler import Entry, QueueFull, Scheduler, SchedulerPolicy, TenantQueueFull


@dataclass(frozen=True)
class _Order:
    at: float
    took_s: float
    places: dict[str, int]


class InMemoryQueue:
    backend = "memory"
    blocking = False
    def __init__(
        self, *, policy: SchedulerPolicy, clock: Callable[[], float] = time.monotonic, position_ttl_s: float = 0.5
    ) -> None:
        self._policy = policy
        self._clock = clock
        self._position_ttl_s = position_ttl_s
        self._positions: dict[str, _Order] = {}
        self._held: Counter[tuple] = Counter()
        self._watchers: dict[str, list[Callable[[], None]]] = {}  # places reserved by (model, class) and (model, class, tenant)
        self._schedulers: dict[str, Scheduler] = {}
        self._waiting: dict[str, Job] = {}
        self._cond = threading.Condition()
        self._closed = False

    def submit(self, job: Job) -> None:
        """Admit a new job or raise QueueFull (503) / TenantQueueFull (429)."""
        self._add(job, admit=True)

    def reserve(self, *, model: str, request_class: RequestClass, tenant: str) -> Reservation:
        """Hold a place for a job that is stored first and queued with restore() after; raises what
        submit() would. Held places count against the limits until released, so concurrent
        submissions cannot overshoot them while they wait for the store."""
        with self._cond:
            if self._closed:
                raise QueueClosed("the server is shutting down")
            scheduler = self._schedulers.get(model)
            if scheduler is None:
                scheduler = self._schedulers[model] = Scheduler(policy=self._policy, clock=self._clock)
            limit = self._policy.max_queued[request_class]
            if scheduler.depth(request_class) + self._held[(model, request_class)] >= limit:
                raise QueueFull(request_class, limit, self._policy.retry_after_s)
            tenant_limit = self._policy.tenant_limit(request_class)
            held_by_tenant = self._held[(model, request_class, tenant)]
            if scheduler.tenant_depth(tenant, request_class) + held_by_tenant >= tenant_limit:
                raise TenantQueueFull(tenant, request_class, tenant_limit, self._policy.retry_after_s)
            reservation = Reservation(model=model, request_class=request_class, tenant=tenant)
            self._held[(model, request_class)] += 1
            self._held[(model, request_class, tenant)] += 1
            return reservation

    def release(self, reservation: Reservation) -> None:
        """Give a held place back (the job is queued now, or was never stored); safe to call twice."""
        with self._cond:
            if reservation.released:
                return
            reservation.released = True
            for key in ((reservation.model, reservation.request_class), (reservation.model, reservation.request_class, reservation.tenant)):
                self._held[key] -= 1
                if not self._held[key]:
                    del self._held[key]

    def restore(self, job: Job) -> None:
        """Queue a job that was accepted earlier (recovered after a restart, or retrying): no admission check."""
        self._add(job, admit=False)

    def requeue(self, job: Job) -> None:
        """Queue a job to be retried; here the same as `restore` (a taken job left this queue)."""
        self._add(job, admit=False)

    def _add(self, job: Job, *, admit: bool) -> None:
        entry = Entry(
            id=job.id, request_class=job.request_class, tier=job.tier, tenant=job.tenant, cost=job.cost,
            rows=job.rows, arrived_at=job.enqueued_at, not_before=job.not_before,
        )
        with self._cond:
            if self._closed:
                raise QueueClosed("the server is shutting down")
            scheduler = self._schedulers.get(job.model)
            if scheduler is None:
                scheduler = self._schedulers[job.model] = Scheduler(policy=self._policy, clock=self._clock)
            (scheduler.admit if admit else scheduler.add)(entry)
            self._waiting[job.id] = job
            self._cond.notify_all()
            watchers = list(self._watchers.get(job.model, ()))
        for wake in watchers:  # outside the lock: a watcher may take the lock itself
            wake()

    def watch(self, model: str, wake: Callable[[], None]) -> None:
        """Call `wake` (from any thread) whenever a job for `model` is queued: for workers that wait
        on an event loop rather than in take()."""
        with self._cond:
            self._watchers.setdefault(model, []).append(wake)

    def take(
        self, models: Iterable[str], *, max_rows: int, timeout: float, max_async_rows: int | None = None
    ) -> list[Job]:
        """Jobs for `models` in the scheduler's order, as many as fit in `max_rows` batch slots, of
        which async jobs may take at most `max_async_rows`; waits up to `timeout` seconds when none
        is ready. Cancelled jobs are dropped on the way."""
        models = tuple(models)
        async_rows = max_rows if max_async_rows is None else max_async_rows
        with self._cond:
            jobs = self._pop(models, max_rows, async_rows)
            if not jobs and timeout > 0 and not self._closed:
                self._cond.wait(self._wait_time(models, timeout))
                jobs = self._pop(models, max_rows, async_rows)
            return jobs

    def _wait_time(self, models: tuple[str, ...], timeout: float) -> float:
        """Wake early when a delayed (retrying) job becomes eligible."""
        due = [s.next_eligible_at() for m in models if (s := self._schedulers.get(m))]
        due = [d for d in due if d is not None]
        return max(0.0, min([timeout, *(d - self._clock() for d in due)]))

    def _pop(self, models: tuple[str, ...], max_rows: int, max_async_rows: int) -> list[Job]:
        taken: list[Job] = []
        rows = async_rows = 0
        while True:
            # Across models the head with the best class goes first; models rarely share a worker.
            heads = [(entry, m) for m in models if (s := self._schedulers.get(m)) and (entry := s.peek())]
            if not heads:
                return taken
            head, model = min(heads, key=lambda h: (h[0].request_class != RequestClass.REALTIME, h[0].arrived_at))
            # Realtime goes strictly first, so an async head means no realtime job is waiting here.
            if head.request_class is RequestClass.ASYNC and async_rows + head.rows > max_async_rows:
                return taken
            # pop() decides again with the clock as it is now; its answer, not the peek's, is what leaves.
            entry = self._schedulers[model].pop(max_rows=max_rows - rows)
            if entry is None:
                return taken
            job = self._waiting.pop(entry.id)
            if job.cancelled:
                continue
            taken.append(job)
            rows += job.rows
            if job.request_class is RequestClass.ASYNC:
                async_rows += job.rows

    def finish(self, job: Job) -> None:
        """A worker is done with a job it took. Nothing to do here: a shared queue holds taken
        jobs under a lease until then."""

    def depths(self) -> dict[str, dict[RequestClass, int]]:
        """Waiting jobs per model and class."""
        with self._cond:
            return {m: {c: s.depth(c) for c in RequestClass} for m, s in self._schedulers.items()}

    def dead_letters(self, limit: int = 100) -> list[str]:
        """None here: a job taken in this process either ends or fails with it."""
        return []

    def missing(self, job_ids: list[str]) -> set[str]:
        """Which of these jobs are not waiting here."""
        with self._cond:
            return {job_id for job_id in job_ids if job_id not in self._waiting}

    def remove(self, job_id: str) -> Job | None:
        """Take a waiting job out (cancellation); None when it is not waiting here."""
        with self._cond:
            job = self._waiting.pop(job_id, None)
            if job is not None:
                self._schedulers[job.model].remove(job_id)
            return job

    def position(self, job_id: str) -> int | None:
        """1-based place in its model's line if nothing new arrived; None when not waiting, past the
        first 10,000, or not worked out yet. The order is simulated once and reused: for up to
        `position_ttl_s`, and a job missing from it (newer) waits until ten times the last
        simulation's duration has passed, so lookups cost at most a tenth of the loop's time."""
        with self._cond:
            job = self._waiting.get(job_id)
            if job is None:
                return None
            now = self._clock()
            cached = self._positions.get(job.model)
            if cached is None or self._stale(cached, job_id, now):
                started = time.perf_counter()
                order = self._schedulers[job.model].order()
                places = {id_: place for place, id_ in enumerate(order, start=1)}
                cached = self._positions[job.model] = _Order(now, time.perf_counter() - started, places)
            return cached.places.get(job_id)

    def _stale(self, cached: _Order, job_id: str, now: float) -> bool:
        age = now - cached.at
        return age > self._position_ttl_s or (job_id not in cached.places and age > 10 * cached.took_s)

    def depth(self, request_class: RequestClass | None = None, *, model: str | None = None) -> int:
        with self._cond:
            if model is not None:
                scheduler = self._schedulers.get(model)
                return scheduler.depth(request_class) if scheduler else 0
            return sum(s.depth(request_class) for s in self._schedulers.values())

    def close(self) -> list[Job]:
        """Refuse new work and hand back everything still waiting."""
        with self._cond:
            self._closed = True
            left = [job for job in self._waiting.values() if not job.cancelled]
            self._waiting.clear()
            self._schedulers.clear()
            self._cond.notify_all()
            return left
