"""The loop that turns queued image jobs into batched pipeline calls on one model.

It takes what is queued (in the scheduler's order, up to `max_batch_images` images), waits a
few milliseconds for company, groups the jobs that can share a denoising batch (same size,
steps, guidance scale and scheduler) and runs each group as one call. Every job gets
`JobStarted` when its group starts, then exactly one `ImagesReady` or `JobFailed`.

LoRA versions of its model can be attached (`attach`, through `AdapterWorker`): it then takes
their work too and runs their groups on its pipeline with their adapter applied, so LoRA
versions share one copy of the pipeline's weights."""

from __future__ import annotations

import logging
import threading
from collections import deque
from pathlib import Path

from genloom.jobs import ImagesReady, ImageTask, Job, JobFailed, JobStarted
from genloom.queue.protocol import JobQueue
from genloom.runtimes.image import GenerationStopped, ImageInputError, ImageRuntime, encode_png
from genloom.telemetry import NO_OBSERVER, Observer
from genloom.worker.base import BatchWorker, between_rounds

log = logging.getLogger("genloom.worker")


class ImageWorker(BatchWorker):
    kind = "image"

    def __init__(
        self,
        *,
        runtime: ImageRuntime,
        queue: JobQueue,
        max_batch_images: int = 8,
        max_async_images: int | None = None,
        batch_wait_s: float = 0.005,
        idle_wait_s: float = 0.05,
        observer: Observer = NO_OBSERVER,
    ) -> None:
        if max_batch_images < 1:
            raise ValueError(f"max_batch_images must be at least 1, got {max_batch_images}")
        # Async jobs may not fill a batch: a realtime request then waits at most one batch of its own.
        self.max_async_images = max_batch_images if max_async_images is None else max_async_images
        if not 1 <= self.max_async_images <= max_batch_images:
            raise ValueError(f"max_async_images must be in [1, {max_batch_images}], got {max_async_images}")
        if batch_wait_s < 0:
            raise ValueError(f"batch_wait_s must be >= 0, got {batch_wait_s}")
        super().__init__(model=runtime.name, queue=queue, idle_wait_s=idle_wait_s, batch_wait_s=batch_wait_s, observer=observer)
        self._runtime = runtime
        self.max_batch_images = max_batch_images
        self.batch_sizes: deque[int] = deque(maxlen=1000)  # images per recent pipeline call, so tests and metrics can see batching
        self._models: tuple[str, ...] = (self.model,)  # its own work, then the attached LoRA versions'
        self._round_lock = threading.RLock()  # LoRAs are attached and detached between rounds only

    @property
    def adapters(self) -> tuple[str, ...]:
        return self._models[1:]

    def attach(self, version: str, adapter: Path, timeout: float | None = None) -> None:
        """Take `version`'s work from now on, run with its diffusers LoRA `adapter` on this pipeline."""
        with between_rounds(self._round_lock, timeout, f"attaching {version} to {self.model}"):
            self._runtime.add_lora(version, adapter)
            if version not in self._models:
                self._models = (*self._models, version)

    def detach(self, version: str, message: str, timeout: float | None = None) -> None:
        """Stop taking `version`'s work and drop its LoRA (nothing of it is held between rounds)."""
        with between_rounds(self._round_lock, timeout, f"detaching {version} from {self.model}"):
            self._models = tuple(m for m in self._models if m != version)
            self._runtime.remove_lora(version)

    def detach_if_idle(self, version: str, message: str, timeout: float | None = None) -> bool:
        self.detach(version, message, timeout)  # between rounds it holds nothing
        return True

    def holds(self, version: str) -> bool:
        return any(job.model == version for job in list(self._held))

    def rows_of(self, version: str) -> int:
        return sum(job.rows for job in list(self._held) if job.model == version)

    @property
    def capacity(self) -> int:
        return self.max_batch_images

    def _round(self, wait_s: float) -> int | None:
        with self._round_lock:
            return self._locked_round(wait_s)

    def _locked_round(self, wait_s: float) -> int | None:
        jobs = self._take(wait_s)
        if not jobs:
            return None
        answered = self._run_jobs(jobs)
        for job in jobs:
            if job not in self._held:  # answered or dropped; the held ones are failed when the loop ends
                self._queue.finish(job)
        return answered

    def _take(self, wait_s: float) -> list[Job]:
        return self._take_batch(wait_s, max_rows=self.max_batch_images, max_async_rows=self.max_async_images,
                                models=self._models)

    def _run_jobs(self, jobs: list[Job]) -> int:
        groups: dict[tuple, list[Job]] = {}
        for job in jobs:
            groups.setdefault((job.model, job.payload.batch_key), []).append(job)  # one LoRA per call
        answered = 0
        for taken in groups.values():
            if self._stop.is_set():
                return answered  # the loop's end fails what is held
            group = [job for job in taken if not job.cancelled]
            if not group:
                self._held = [job for job in self._held if job not in taken]
                continue
            for job in group:
                job.emit(JobStarted())
            if self._generate(group):
                answered += len(group)
            elif len(group) > 1 and not self._stop.is_set():
                # One bad job must not fail its batch company: run each alone, so only that one fails.
                answered += sum(self._generate([job]) for job in group if not job.cancelled)
            if self._stop.is_set():
                return answered  # stopped mid-group: what is held (this group too) is failed at the loop's end
            self._held = [job for job in self._held if job not in taken]
        return answered

    def _generate(self, jobs: list[Job]) -> bool:
        """Run `jobs` as one batch and answer each; False when it failed (a lone job is told why)."""
        tasks: list[ImageTask] = [job.payload for job in jobs]
        lora = jobs[0].model if jobs[0].model != self.model else None  # an attached LoRA version's group
        try:
            images = self._runtime.generate(
                tasks, should_stop=lambda: self._stop.is_set() or all(job.cancelled for job in jobs), lora=lora,
            )
            answers = []
            for task, pictures in zip(tasks, images):
                provenance = [self._runtime.provenance(task, i) for i in range(len(pictures))]
                answers.append(ImagesReady([encode_png(p, m) for p, m in zip(pictures, provenance)], provenance))
        except GenerationStopped:
            # Everyone left (nothing to answer), or the server stops (the loop's end fails what is held).
            return not self._stop.is_set()
        except Exception as e:  # a model failure must not kill the worker or strand the clients
            log.exception("generating images for %d jobs failed on model %s", len(jobs), self.model)
            if len(jobs) == 1:
                # The client's input, or a call this pipeline cannot take, fails the same way every time.
                retryable = not isinstance(e, (ImageInputError, TypeError, ValueError))
                jobs[0].emit(JobFailed(self._failure(e), retryable=retryable, before_output=True))
            return False
        self.batch_sizes.append(sum(task.n for task in tasks))
        for job, answer in zip(jobs, answers):
            if not job.cancelled:
                job.emit(answer)
        return True

    def _failure(self, e: Exception) -> str:
        # Input errors are the client's to fix and safe to show; anything else names only its type.
        detail = str(e) if isinstance(e, ImageInputError) else type(e).__name__
        return f"image generation failed on model {self.model}: {detail}"
