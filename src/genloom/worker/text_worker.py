"""The loop that turns queued text jobs into batched decoding steps on one model.

It runs on its own thread so model work never blocks the event loop; it talks to the rest of
Genloom only through the queue (jobs in) and each job's `emit` callback (events out).

Fine-tuned versions of its model (LoRA adapters) can be attached to it (through
`worker.adapter_worker.AdapterWorker`): it then takes their queued work too, and their rows run
in the same batch as the base's, each with its adapter (`MultiLora`), instead of each version
holding a merged copy of the weights and a batch of its own."""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable, Hashable

from genloom.jobs import ChoiceFinished, Job, JobFailed, JobStarted, RequestClass, TextTask, TokenEvent
from genloom.queue.protocol import JobQueue, QueueUnavailable
from genloom.runtimes.multi_lora import LoraWeights
from genloom.runtimes.text import TextRuntime
from genloom.runtimes.text_batch import NewSequence
from genloom.telemetry import NO_OBSERVER, Observer
from genloom.worker.base import Worker, between_rounds

log = logging.getLogger("genloom.worker")


class TextWorker(Worker):
    kind = "text"

    def __init__(
        self,
        *,
        runtime: TextRuntime,
        queue: JobQueue,
        max_batch_size: int,
        realtime_reserved_rows: int = 0,
        async_rows_with_realtime: int | None = None,
        realtime_grace_s: float = 2.0,
        idle_wait_s: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
        observer: Observer = NO_OBSERVER,
    ) -> None:
        if not 0 <= realtime_reserved_rows < max_batch_size:
            raise ValueError(f"realtime_reserved_rows must be in [0, {max_batch_size}), got {realtime_reserved_rows}")
        super().__init__(model=runtime.name, queue=queue, idle_wait_s=idle_wait_s, clock=clock)
        self._runtime = runtime
        self._max_batch_size = max_batch_size
        # Rows async jobs may not take, so a realtime request finds a free slot at the next step.
        self._max_async_rows = max_batch_size - realtime_reserved_rows
        # While realtime work is about (or was, within the grace period), async jobs may hold only
        # this many rows: every row makes each decoding step slower for the realtime rows too.
        self._async_rows_with_realtime = self._max_async_rows if async_rows_with_realtime is None else async_rows_with_realtime
        self._realtime_grace_s = realtime_grace_s
        self._last_realtime = -math.inf
        self._active: dict[Job, set[int]] = {}  # running jobs and their unfinished choices
        self._batch = runtime.new_batch()
        self._observer = observer
        # The versions whose work it takes: its own, then the attached adapters' (replaced whole,
        # never changed in place, so a round reads one consistent tuple).
        self._models: tuple[str, ...] = (self.model,)
        # Held while a round runs, and by attach/detach and failing what is held, so the adapters
        # and the batch never change mid-step (re-entrant: a round may fail what it holds).
        self._round_lock = threading.RLock()
        self._realtime_seen = (-math.inf, False)  # when the attached versions' realtime queues were last read

    # -- attached adapters (called from other threads) ----------------------------------------

    @property
    def adapters(self) -> tuple[str, ...]:
        """The versions attached to it, in the order they were attached."""
        return self._models[1:]

    def attach(self, version: str, weights: LoraWeights, timeout: float | None = None) -> None:
        """Take `version`'s work from now on, its rows running with `weights` (an adapter of this model)."""
        with between_rounds(self._round_lock, timeout, f"attaching {version} to {self.model}"):
            self._runtime.adapters.add(version, weights)
            if version not in self._models:
                self._models = (*self._models, version)

    def detach_if_idle(self, version: str, message: str, timeout: float | None = None) -> bool:
        """Detach `version` unless its rows are in the batch now (checked and done in one step)."""
        with between_rounds(self._round_lock, timeout, f"detaching {version} from {self.model}"):
            if self.holds(version):
                return False
            self.detach(version, message)
            return True

    def detach(self, version: str, message: str, timeout: float | None = None) -> None:
        """Stop taking `version`'s work; what it holds of it is failed retryable with `message`
        (it runs again wherever the version goes next), and its adapter weights are dropped."""
        with between_rounds(self._round_lock, timeout, f"detaching {version} from {self.model}"):
            self._models = tuple(m for m in self._models if m != version)
            held = [job for job in self._active if job.model == version]
            if held:
                self._batch.remove({(job, i) for job in held for i in self._active[job]})
            for job in held:
                del self._active[job]
                job.emit(JobFailed(message, retryable=True))
                self._queue.finish(job)
            self._runtime.adapters.remove(version)

    def rows_of(self, version: str) -> int:
        """Rows `version`'s jobs hold in the batch now."""
        return sum(len(rows) for job, rows in list(self._active.items()) if job.model == version)

    def holds(self, version: str) -> bool:
        return any(job.model == version for job in list(self._active))

    @property
    def busy(self) -> bool:
        return bool(self._active)

    @property
    def running_jobs(self) -> int:
        return len(self._active)

    @property
    def occupancy(self) -> int:
        return len(self._batch)

    @property
    def capacity(self) -> int:
        return self._max_batch_size

    def _round(self, wait_s: float) -> int | None:
        with self._round_lock:
            return self._locked_round(wait_s)

    def _locked_round(self, wait_s: float) -> int | None:
        batch = self._batch
        self._drop_cancelled(batch)
        free = self._max_batch_size - len(batch)
        try:
            jobs = self._take(free, 0.0 if len(batch) else wait_s)
        except QueueUnavailable:
            if not len(batch):
                raise
            jobs = []  # the queue is away: the rows running go on decoding meanwhile
        joining = [seq for job in jobs for seq in self._sequences(job)]
        if not joining and not len(batch):
            return None
        if joining:
            self._observer.batch_formed(model=self.model, size=len(batch) + len(joining))
        try:
            outputs = batch.step(joining)
        except Exception as e:  # a model failure must not kill the worker or strand the clients
            log.exception("text step failed on model %s", self.model)
            self._fail_held(f"generation failed on model {self.model}: {type(e).__name__}")
            return 0
        answered = 0
        for out in outputs:
            job, index = out.key
            open_choices = self._active[job]
            if out.delta or out.logprobs:
                job.emit(TokenEvent(index, out.delta, out.token_count, out.logprobs))
            if out.finish_reason is not None:
                job.emit(ChoiceFinished(index, out.finish_reason, out.token_count))
                open_choices.discard(index)
                if not open_choices:
                    del self._active[job]
                    self._queue.finish(job)
                    answered += 1
        return answered

    def _take(self, free: int, wait_s: float) -> list[Job]:
        if free <= 0:
            return []
        async_free = self._async_row_limit() - self._async_rows()
        jobs = self._queue.take(self._models, max_rows=free, timeout=wait_s, max_async_rows=max(0, async_free))
        return self._took(jobs, batch_size=len(self._batch) + sum(job.rows for job in jobs)) if jobs else jobs

    def _async_row_limit(self) -> int:
        now = self._clock()
        if any(job.request_class is RequestClass.REALTIME for job in self._active) or self._queue.depth(
            RequestClass.REALTIME, model=self.model
        ) or self._attached_realtime(now):
            self._last_realtime = now
        if now - self._last_realtime < self._realtime_grace_s:
            return min(self._max_async_rows, self._async_rows_with_realtime)
        return self._max_async_rows

    def _attached_realtime(self, now: float) -> bool:
        """Whether an attached version has realtime work waiting: read at most every 0.25 s (one
        queue call per version; on Redis each is a round trip)."""
        if len(self._models) == 1:
            return False
        read_at, seen = self._realtime_seen
        if now - read_at >= 0.25:
            seen = any(self._queue.depth(RequestClass.REALTIME, model=m) for m in self._models[1:])
            self._realtime_seen = (now, seen)
        return seen

    def _async_rows(self) -> int:
        return sum(len(open_rows) for job, open_rows in self._active.items() if job.request_class is RequestClass.ASYNC)

    def _sequences(self, job: Job) -> list[NewSequence]:
        task: TextTask = job.payload
        self._active[job] = set(range(task.n))
        if job.request_class is RequestClass.REALTIME:
            self._last_realtime = self._clock()
        job.emit(JobStarted())
        adapter = job.model if job.model != self.model else None  # an attached version runs with its adapter
        seqs = []
        for i in range(task.n):
            params = task.params
            if params.seed is not None and i:
                params = dataclasses.replace(params, seed=params.seed + i)
            # Keyed by the Job object, not its id: a retried job may join while its old run is being dropped.
            seqs.append(NewSequence(key=(job, i), prompt_ids=task.prompt_ids, params=params, adapter=adapter))
        return seqs

    def _drop_cancelled(self, batch) -> None:
        cancelled = [job for job in self._active if job.cancelled]
        if not cancelled:
            return
        keys: set[Hashable] = {(job, i) for job in cancelled for i in self._active[job]}
        batch.remove(keys)
        for job in cancelled:
            del self._active[job]
            self._queue.finish(job)

    def _fail_held(self, message: str, shutdown: bool = False) -> None:
        with self._round_lock:  # never beside a detach
            for job in self._active:
                job.emit(JobFailed(message, retryable=True, shutdown=shutdown))
                self._queue.finish(job)
            self._active.clear()
            self._batch = self._runtime.new_batch()

