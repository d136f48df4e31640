"""The loop that turns queued embedding jobs into batched `embed` calls on one model.

Every job it takes joins one forward batch with the others waiting, and gets back exactly one
event: `EmbeddingsReady` with its own vectors, or `JobFailed`. A job's `rows` is its number of
texts, so `max_batch_texts` bounds the texts per batch; a job larger than that must be
queued with `rows=max_batch_texts` and then runs alone."""

from __future__ import annotations

import logging

from genloom.jobs import EmbeddingsReady, Job, JobFailed
from genloom.jobs.tasks import DEFAULT_MAX_BATCH_TEXTS
from genloom.queue.protocol import JobQueue
from genloom.runtimes.embeddings import EmbeddingInputError, EmbeddingRuntime
from genloom.telemetry import NO_OBSERVER, Observer
from genloom.worker.base import BatchWorker

log = logging.getLogger("genloom.worker")

# The gateway caps a job's rows at the same number, so a job larger than a batch runs alone
# instead of waiting forever at the head of the line for more rows than a batch has.


class EmbeddingWorker(BatchWorker):
    kind = "embedding"

    def __init__(
        self,
        *,
        runtime: EmbeddingRuntime,
        queue: JobQueue,
        max_batch_texts: int = DEFAULT_MAX_BATCH_TEXTS,
        batch_wait_s: float = 0.002,
        idle_wait_s: float = 0.05,
        observer: Observer = NO_OBSERVER,
    ) -> None:
        if max_batch_texts < 1:
            raise ValueError(f"max_batch_texts must be at least 1, got {max_batch_texts}")
        if batch_wait_s < 0:
            raise ValueError(f"batch_wait_s must be >= 0, got {batch_wait_s}")
        super().__init__(model=runtime.name, queue=queue, idle_wait_s=idle_wait_s, batch_wait_s=batch_wait_s, observer=observer)
        self._runtime = runtime
        self.max_batch_texts = max_batch_texts
        self.batches = 0  # embed calls made, so tests and metrics can see batching happen

    @property
    def capacity(self) -> int:
        return self.max_batch_texts

    def _round(self, wait_s: float) -> int | None:
        jobs = self._take(wait_s)
        return self._run_batch(jobs) if jobs else None

    def _take(self, wait_s: float) -> list[Job]:
        return self._take_batch(wait_s, max_rows=self.max_batch_texts)

    def _run_batch(self, jobs: list[Job]) -> int:
        if self._stop.is_set():
            return 0  # the loop's end fails what is held
        taken, jobs = jobs, [job for job in jobs if not job.cancelled]
        if not jobs or self._embed(jobs):
            answered = len(jobs)
        elif len(jobs) > 1:
            # One bad job must not fail its batch company: run each alone, so only that one fails.
            answered = sum(self._embed([job]) for job in jobs)
        else:
            answered = 0
        for job in taken:
            self._queue.finish(job)
        self._held = []
        return answered

    def _embed(self, jobs: list[Job]) -> bool:
        """Run `jobs` as one batch and answer each; False when it failed (a lone job is told why)."""
        try:
            batch = self._runtime.embed([text for job in jobs for text in job.payload.texts])
        except Exception as e:  # a model failure must not kill the worker or strand the clients
            log.exception("embedding %d jobs failed on model %s", len(jobs), self.model)
            if len(jobs) == 1:
                jobs[0].emit(JobFailed(self._failure(e), retryable=not isinstance(e, EmbeddingInputError)))
            return False
        self.batches += 1
        start = 0
        for job in jobs:
            end = start + len(job.payload.texts)
            job.emit(EmbeddingsReady(batch.vectors[start:end], batch.token_counts[start:end]))
            start = end
        return True

    def _failure(self, e: Exception) -> str:
        # Input errors are the client's to fix and safe to show; anything else names only its type.
        detail = str(e) if isinstance(e, EmbeddingInputError) else type(e).__name__
        return f"embedding failed on model {self.model}: {detail}"
