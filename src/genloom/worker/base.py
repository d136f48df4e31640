"""What every worker shares: a thread that runs one model's loop, stops on request, and reports
its health. The loop is guarded: when the shared queue's Redis cannot be reached the worker
backs off and tries again (jobs it holds keep running; their leases decide what happens to
them), and any other error outside a model call fails the jobs it holds, retryable, and the
loop goes on. `run_burst` runs what is queued now on the caller's thread (for tests and tools).

A kind of worker says how one round goes (`_round`), what it holds (`busy`, `_fail_held`) and,
if it needs one, what to set up around its loop (`_loop`)."""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum

from genloom.jobs import Job, JobFailed, RequestClass
from genloom.queue.protocol import JobQueue, QueueUnavailable
from genloom.telemetry import Observer
from genloom.telemetry.tracing import NO_TRACING, Tracing, trace_job

log = logging.getLogger("genloom.worker")

SHUTDOWN_MESSAGE = "the server shut down before this request finished"
_BACKOFF_FIRST_S = 0.1
_BACKOFF_MAX_S = 2.0


@contextmanager
def between_rounds(lock: threading.RLock, timeout: float | None, what: str) -> Iterator[None]:
    """Hold a worker's round lock (waiting for the round in progress to end), or raise
    TimeoutError after `timeout` seconds (a hung model call must not hang its callers too)."""
    if not lock.acquire(timeout=-1 if timeout is None else timeout):
        raise TimeoutError(f"{what}: the worker's round did not end within {timeout} s")
    try:
        yield
    finally:
        lock.release()


class WorkerState(str, Enum):
    STARTING = "starting"  # made, its thread not running yet
    RUNNING = "running"  # its loop goes round
    QUEUE_UNAVAILABLE = "queue_unavailable"  # backing off until the queue's Redis answers again
    STALLED = "stalled"  # its loop has not come round for `stall_s` (a hung model call)
    STOPPED = "stopped"  # stopped on request
    DEAD = "dead"  # its thread ended without being asked to


@dataclass(frozen=True)
class WorkerHealth:
    state: WorkerState
    reason: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the worker takes work now, or will by itself (a queue outage it waits out)."""
        return self.state in (WorkerState.RUNNING, WorkerState.QUEUE_UNAVAILABLE, WorkerState.STARTING)


class Worker(ABC):
    kind: str  # "text", "image", "embedding", "remote"

    def __init__(
        self, *, model: str, queue: JobQueue, idle_wait_s: float, stall_s: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.model = model
        self._queue = queue
        self._idle_wait_s = idle_wait_s
        self._stall_s = stall_s
        self._clock = clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name=f"{self.kind}-worker-{model}", daemon=True)
        self._last_round = clock()
        self._unavailable: str | None = None  # why the queue cannot be reached, while it cannot
        self._backoff_s = _BACKOFF_FIRST_S
        self.tracing: Tracing = NO_TRACING  # set by the model host before `start`

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self._last_round = self._clock()
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop after the current round; jobs still held are failed (retryable), never dropped."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def health(self) -> WorkerHealth:
        if not self._thread.is_alive():
            if self._stop.is_set():
                return WorkerHealth(WorkerState.STOPPED)
            if self._thread.ident is None:
                return WorkerHealth(WorkerState.STARTING)
            return WorkerHealth(WorkerState.DEAD, f"the {self.kind} worker for {self.model} ended")
        if self._unavailable is not None:
            return WorkerHealth(WorkerState.QUEUE_UNAVAILABLE, self._unavailable)
        silent = self._clock() - self._last_round
        if silent > self._stall_s:
            return WorkerHealth(WorkerState.STALLED, f"the {self.kind} worker for {self.model} has not come round for {silent:.0f} s")
        return WorkerHealth(WorkerState.RUNNING)

    @property
    @abstractmethod
    def busy(self) -> bool:
        """Whether it holds jobs now."""

    @property
    def occupancy(self) -> int:
        """Rows (or images, or texts) it holds now."""
        return int(self.busy)

    @property
    def capacity(self) -> int:
        """Rows it can hold at once."""
        return 1

    # -- the loop -----------------------------------------------------------------------------

    def run_burst(self) -> int:
        """Run what is queued for this model now, then return how many jobs were answered
        (without the thread: deterministic, for tests and tools)."""
        answered = 0
        while (done := self._round(0.0)) is not None:
            answered += done
        return answered

    def _main(self) -> None:
        try:
            self._loop()
        except Exception:  # only a bug gets here; health() reports the thread dead
            log.exception("the %s worker for %s ended", self.kind, self.model)
            self._fail_held("the worker failed; retry the request")
            raise

    def _loop(self) -> None:
        self._guarded_loop()

    def _guarded_loop(self) -> None:
        while not self._stop.is_set():
            self._last_round = self._clock()
            try:
                self._round(self._idle_wait_s)
            except QueueUnavailable as e:
                self._stop.wait(self._queue_away(e))
                continue
            except Exception:  # the thread must outlive any one round; its jobs may run again
                log.exception("%s worker for %s: a round failed outside the model call", self.kind, self.model)
                self._fail_held("the worker failed; retry the request")
            self._queue_back()
        self._fail_held(SHUTDOWN_MESSAGE, shutdown=True)

    def _queue_away(self, error: QueueUnavailable) -> float:
        """Note that the queue cannot be reached; how long to wait before the next try."""
        if self._unavailable is None:
            log.warning("%s worker for %s: %s; trying again", self.kind, self.model, error)
            self._backoff_s = _BACKOFF_FIRST_S
        else:
            self._backoff_s = min(self._backoff_s * 2, _BACKOFF_MAX_S)
        self._unavailable = str(error)
        return self._backoff_s

    def _queue_back(self) -> None:
        if self._unavailable is not None:
            log.info("%s worker for %s: the queue answers again", self.kind, self.model)
            self._unavailable = None

    def _took(self, jobs: list[Job], batch_size: int | None = None) -> list[Job]:
        """Jobs just taken from the queue: each one that carries a trace is followed in it."""
        if self.tracing.enabled:
            for job in jobs:
                trace_job(self.tracing, job, model=self.model, kind=self.kind, batch_size=batch_size)
        return jobs

    @abstractmethod
    def _round(self, wait_s: float) -> int | None:
        """Take what is queued (waiting up to `wait_s` when nothing is) and run it; the jobs
        answered, or None when there was nothing to do."""

    @abstractmethod
    def _fail_held(self, message: str, shutdown: bool = False) -> None:
        """Fail every job held and not answered (retryable: it may run again elsewhere);
        `shutdown`: because this process stops (clients are told to retry on another replica)."""


class BatchWorker(Worker):
    """A worker that takes a batch, runs it and answers each job once (images, embeddings): it
    holds what it took until each job is answered, and fails what it still holds when a round
    fails or the loop ends."""

    def __init__(self, *, model: str, queue: JobQueue, idle_wait_s: float, batch_wait_s: float, observer: Observer) -> None:
        super().__init__(model=model, queue=queue, idle_wait_s=idle_wait_s)
        self._batch_wait_s = batch_wait_s
        self._observer = observer
        self._held: list[Job] = []  # taken and not answered yet

    @property
    def busy(self) -> bool:
        return bool(self._held)

    @property
    def occupancy(self) -> int:
        return sum(job.rows for job in self._held)

    def _take_batch(self, wait_s: float, *, max_rows: int, max_async_rows: int | None = None,
                    models: tuple[str, ...] | None = None) -> list[Job]:
        """What is queued for `models` (its own by default), up to `max_rows`; after a first take,
        a moment's wait (`batch_wait_s`) lets requests arriving together share the batch.
        Everything taken is held at once, so a queue outage during the second take loses nothing:
        the first take runs."""
        models = models or (self.model,)
        self._held = jobs = self._took(
            self._queue.take(models, max_rows=max_rows, timeout=wait_s, max_async_rows=max_async_rows)
        )
        rows = sum(job.rows for job in jobs)
        if jobs and rows < max_rows and self._batch_wait_s > 0:
            async_rows = sum(job.rows for job in jobs if job.request_class is RequestClass.ASYNC)
            more_async = None if max_async_rows is None else max(0, max_async_rows - async_rows)
            try:
                jobs = jobs + self._took(self._queue.take(
                    models, max_rows=max_rows - rows, timeout=self._batch_wait_s, max_async_rows=more_async
                ))
            except QueueUnavailable as e:
                log.warning("%s worker for %s: %s; running the %d jobs taken", self.kind, self.model, e, len(jobs))
            self._held = jobs
        if jobs:
            self._observer.batch_formed(model=self.model, size=sum(job.rows for job in jobs))
        return jobs

    def _fail_held(self, message: str, shutdown: bool = False) -> None:
        for job in self._held:
            job.emit(JobFailed(message, retryable=True, shutdown=shutdown))
            self._queue.finish(job)
        self._held = []
