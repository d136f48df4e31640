"""The image worker: compatible queued jobs become one denoising batch, each job gets back its
own pictures (equal to running it alone), incompatible ones run in their own batch, a bad job
fails alone, and a cancelled one is skipped."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from genloom.queue import InMemoryQueue, SchedulerPolicy
from genloom.jobs import ImagesReady, ImageTask, Job, JobFailed, JobStarted
from genloom.runtimes.image import ImageRuntime, read_provenance
from genloom.worker.image_worker import ImageWorker


@pytest.fixture(scope="module")
def runtime(tiny_image_model_dir) -> ImageRuntime:
    return ImageRuntime(name="tiny-sd", path=tiny_image_model_dir, device="cpu")


def task(prompt: str, seed: int, n: int = 1, steps: int = 3, scheduler: str | None = None) -> ImageTask:
    return ImageTask(prompt=prompt, negative_prompt=None, n=n, width=32, height=32, steps=steps, guidance_scale=3.0,
                     scheduler=scheduler, seed=seed, provenance={"job_id": f"job-{prompt}"})


class Inbox:
    def __init__(self) -> None:
        self.events: dict[str, list] = {}
        self.lock = threading.Lock()

    def job(self, name: str, t: ImageTask) -> Job:
        def emit(event) -> None:
            with self.lock:
                self.events.setdefault(name, []).append(event)

        return Job(id=name, model="tiny-sd", payload=t, emit=emit, rows=t.n)

    def result(self, name: str):
        return self.events[name][-1]


def png_pixels(png: bytes) -> np.ndarray:
    import io

    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float64)


def test_compatible_jobs_share_one_batch_and_each_gets_its_own_pictures(runtime):
    queue, inbox = InMemoryQueue(policy=SchedulerPolicy()), Inbox()
    worker = ImageWorker(runtime=runtime, queue=queue, max_batch_images=8)
    tasks = {"red": task("a red circle", 1), "blue": task("a blue star", 2, n=2), "green": task("a green square", 3)}
    for name, t in tasks.items():
        queue.submit(inbox.job(name, t))
    assert worker.run_burst() == 3
    assert list(worker.batch_sizes) == [4]  # one pipeline call for all four pictures
    for name, t in tasks.items():
        events = inbox.events[name]
        assert isinstance(events[0], JobStarted) and isinstance(events[-1], ImagesReady)
        ready = events[-1]
        assert len(ready.pngs) == t.n
        alone = runtime.generate([t])[0]
        for png, image, meta in zip(ready.pngs, alone, ready.provenance):
            assert np.abs(png_pixels(png) - np.asarray(image, dtype=np.float64)).max() <= 1.0
            assert read_provenance(png) == meta and meta["job_id"] == f"job-{t.prompt}"
        assert [m["seed"] for m in ready.provenance] == [t.seed + i for i in range(t.n)]


def test_jobs_with_other_steps_or_scheduler_run_in_their_own_batch(runtime):
    queue, inbox = InMemoryQueue(policy=SchedulerPolicy()), Inbox()
    worker = ImageWorker(runtime=runtime, queue=queue, max_batch_images=8)
    queue.submit(inbox.job("a", task("a", 1)))
    queue.submit(inbox.job("b", task("b", 2, steps=4)))
    queue.submit(inbox.job("c", task("c", 3)))
    queue.submit(inbox.job("d", task("d", 4, scheduler="euler")))
    assert worker.run_burst() == 4
    assert sorted(worker.batch_sizes) == [1, 1, 2]
    assert all(isinstance(inbox.result(name), ImagesReady) for name in "abcd")


def test_a_batch_holds_at_most_max_batch_images(runtime):
    queue, inbox = InMemoryQueue(policy=SchedulerPolicy()), Inbox()
    worker = ImageWorker(runtime=runtime, queue=queue, max_batch_images=3)
    for i in range(5):
        queue.submit(inbox.job(f"j{i}", task(f"p{i}", i)))
    assert worker.run_burst() == 5
    assert list(worker.batch_sizes) == [3, 2]


def test_async_jobs_leave_room_for_a_realtime_request(runtime):
    from genloom.jobs import RequestClass

    queue, inbox = InMemoryQueue(policy=SchedulerPolicy()), Inbox()
    worker = ImageWorker(runtime=runtime, queue=queue, max_batch_images=4, max_async_images=3)
    for i in range(4):
        job = inbox.job(f"a{i}", task(f"a{i}", i))
        job.request_class = RequestClass.ASYNC
        queue.submit(job)
    worker.run_burst()
    assert list(worker.batch_sizes) == [3, 1]  # never more than 3 async pictures in one call


def test_a_bad_job_fails_alone_and_its_company_still_gets_pictures(runtime):
    queue, inbox = InMemoryQueue(policy=SchedulerPolicy()), Inbox()
    worker = ImageWorker(runtime=runtime, queue=queue, max_batch_images=8)
    good = task("fine", 1)
    # The gateway refuses such a task; the worker must still survive one that slips through.
    bad = ImageTask(prompt="bad", negative_prompt=None, n=1, width=40, height=32, steps=3, guidance_scale=3.0, scheduler=None, seed=1)
    queue.submit(inbox.job("good", good))
    queue.submit(inbox.job("bad", bad))
    worker.run_burst()
    assert isinstance(inbox.result("good"), ImagesReady)
    failure = inbox.result("bad")
    assert isinstance(failure, JobFailed) and "multiple of 32" in failure.message and not failure.retryable


def test_a_cancelled_job_is_skipped(runtime):
    queue, inbox = InMemoryQueue(policy=SchedulerPolicy()), Inbox()
    worker = ImageWorker(runtime=runtime, queue=queue, max_batch_images=8)
    kept, dropped = inbox.job("kept", task("kept", 1)), inbox.job("dropped", task("dropped", 2))
    queue.submit(kept)
    queue.submit(dropped)
    dropped.cancel()
    worker.run_burst()
    assert isinstance(inbox.result("kept"), ImagesReady)
    assert "dropped" not in inbox.events
    assert list(worker.batch_sizes) == [1]


def test_stopping_fails_taken_jobs_as_retryable_and_the_thread_ends(runtime):
    queue, inbox = InMemoryQueue(policy=SchedulerPolicy()), Inbox()
    worker = ImageWorker(runtime=runtime, queue=queue, max_batch_images=8, idle_wait_s=0.01)
    worker.start()
    queue.submit(inbox.job("one", task("one", 1)))
    worker.stop(30)
    assert not worker.alive
    events = inbox.events.get("one", [])
    # Either it ran before the stop, or it was handed back as a retryable shutdown failure.
    assert events and (isinstance(events[-1], ImagesReady) or (isinstance(events[-1], JobFailed) and events[-1].shutdown))


def test_a_failure_outside_generation_fails_the_held_jobs_as_retryable_not_as_a_shutdown(runtime):
    """A bug outside the pipeline call must not tell clients the server shuts down (which makes
    them go to another replica, and left embedded async jobs waiting for a restart)."""
    queue, inbox = InMemoryQueue(policy=SchedulerPolicy()), Inbox()
    worker = ImageWorker(runtime=runtime, queue=queue, max_batch_images=8, idle_wait_s=0.01)
    broken = inbox.job("broken", task("broken", 1))
    emit = broken.emit

    def fails_on_start(event) -> None:
        emit(event)
        if isinstance(event, JobStarted):
            raise RuntimeError("a bug while reporting the start")

    broken.emit = fails_on_start
    queue.submit(broken)
    queue.submit(inbox.job("company", task("company", 2)))
    worker.start()
    try:
        deadline = time.monotonic() + 30
        while not all(any(isinstance(e, (JobFailed, ImagesReady)) for e in inbox.events.get(n, [])) for n in ("broken", "company")):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        failures = [e for n in ("broken", "company") for e in inbox.events[n] if isinstance(e, JobFailed)]
        assert failures and all(f.retryable and not f.shutdown for f in failures)
        assert worker.alive  # and the loop goes on: the next job is answered
        queue.submit(inbox.job("next", task("next", 3)))
        while not inbox.events.get("next") or not isinstance(inbox.result("next"), ImagesReady):
            assert time.monotonic() < deadline + 30
            time.sleep(0.01)
    finally:
        worker.stop(30)
