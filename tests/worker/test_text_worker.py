"""The text worker's split of batch rows between realtime and async work, on a tiny real model."""

from __future__ import annotations

import threading
import time

import pytest

from genloom.config import RuntimeSettings
from genloom.jobs import ChoiceFinished, Job, JobStarted, RequestClass, SamplingParams, TextTask
from genloom.queue import InMemoryQueue, SchedulerPolicy
from genloom.runtimes.text import TextRuntime
from genloom.worker import TextWorker


@pytest.fixture(scope="module")
def runtime(tiny_model_dir) -> TextRuntime:
    return TextRuntime(name="tiny", path=tiny_model_dir, settings=RuntimeSettings())


class Tracker:
    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.finished: dict[str, float] = {}
        self.lock = threading.Lock()

    def job(self, name: str, request_class: RequestClass, max_tokens: int) -> Job:
        def emit(event) -> None:
            with self.lock:
                if isinstance(event, JobStarted):
                    self.started[name] = time.monotonic()
                elif isinstance(event, ChoiceFinished):
                    self.finished[name] = time.monotonic()

        params = SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True)
        return Job(id=name, model="tiny", payload=TextTask(prompt_ids=(1, 2, 3), params=params), emit=emit,
                   request_class=request_class)

    def wait(self, names: list[str], timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while not all(n in self.finished for n in names):
            assert time.monotonic() < deadline, f"unfinished: {set(names) - set(self.finished)}"
            time.sleep(0.01)


def test_async_jobs_hold_few_rows_while_realtime_runs(runtime):
    queue, tracker = InMemoryQueue(policy=SchedulerPolicy()), Tracker()
    worker = TextWorker(runtime=runtime, queue=queue, max_batch_size=4, async_rows_with_realtime=1, realtime_grace_s=60)
    queue.submit(tracker.job("rt", RequestClass.REALTIME, 300))
    for name in ("a1", "a2", "a3"):
        queue.submit(tracker.job(name, RequestClass.ASYNC, 5))
    worker.start()
    try:
        tracker.wait(["rt", "a1", "a2", "a3"])
    finally:
        worker.stop(10)
    # One async row at a time beside the realtime request: each async job starts after the previous one ends.
    assert tracker.started["a2"] >= tracker.finished["a1"] and tracker.started["a3"] >= tracker.finished["a2"]
    assert tracker.finished["a3"] < tracker.finished["rt"]  # but async work still moves on


def test_without_realtime_async_jobs_fill_the_batch(runtime):
    queue, tracker = InMemoryQueue(policy=SchedulerPolicy()), Tracker()
    worker = TextWorker(runtime=runtime, queue=queue, max_batch_size=4, realtime_reserved_rows=1, async_rows_with_realtime=1)
    names = ["a1", "a2", "a3", "a4"]
    for name in names:
        queue.submit(tracker.job(name, RequestClass.ASYNC, 20))
    worker.start()
    try:
        tracker.wait(names)
    finally:
        worker.stop(10)
    # Three rows for async (one is reserved for realtime): a4 waits for the first of them to end.
    assert max(tracker.started[n] for n in names[:3]) < min(tracker.finished[n] for n in names[:3])
    assert tracker.started["a4"] >= min(tracker.finished[n] for n in names[:3])
