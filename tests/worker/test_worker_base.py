"""What every worker shares: a loop that survives a queue outage (backs off, tries again, goes
on), health that tells a running, a cut-off, a hung and a dead loop apart, and burst mode."""

from __future__ import annotations

import threading
import time

import pytest

from genloom.config import RuntimeSettings
from genloom.jobs import ChoiceFinished, Job, JobFailed, RequestClass, SamplingParams, TextTask
from genloom.queue import InMemoryQueue, SchedulerPolicy
from genloom.queue.protocol import QueueUnavailable
from genloom.runtimes.text import TextRuntime
from genloom.worker import TextWorker, Worker, WorkerState


@pytest.fixture(scope="module")
def runtime(tiny_model_dir) -> TextRuntime:
    return TextRuntime(name="tiny", path=tiny_model_dir, settings=RuntimeSettings())


class FlakyQueue(InMemoryQueue):
    """An in-process queue whose `take` fails as a Redis queue's does while `down` is set."""

    def __init__(self) -> None:
        super().__init__(policy=SchedulerPolicy())
        self.down = threading.Event()
        self.refused = 0

    def take(self, models, *, max_rows, timeout, max_async_rows=None):
        if self.down.is_set():
            self.refused += 1
            raise QueueUnavailable("the queue's Redis cannot be reached (ConnectionError); retry shortly")
        return super().take(models, max_rows=max_rows, timeout=timeout, max_async_rows=max_async_rows)

    def depth(self, request_class=None, *, model=None):
        if self.down.is_set():
            self.refused += 1
            raise QueueUnavailable("the queue's Redis cannot be reached (ConnectionError); retry shortly")
        return super().depth(request_class, model=model)


def text_job(name: str, events: list, max_tokens: int = 4) -> Job:
    params = SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True)
    return Job(id=name, model="tiny", payload=TextTask(prompt_ids=(1, 2, 3), params=params), emit=events.append,
               request_class=RequestClass.ASYNC)


def wait_for(condition, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_queue_outage_pauses_the_worker_and_it_goes_on_by_itself(runtime):
    queue = FlakyQueue()
    worker = TextWorker(runtime=runtime, queue=queue, max_batch_size=4, idle_wait_s=0.01)
    queue.down.set()
    worker.start()
    try:
        wait_for(lambda: queue.refused >= 3)
        assert worker.alive
        health = worker.health()
        assert health.state is WorkerState.QUEUE_UNAVAILABLE and "cannot be reached" in health.reason and health.ok
        # Backing off: a handful of tries a second, not a spin.
        before = queue.refused
        time.sleep(1.0)
        assert queue.refused - before <= 12

        events: list = []
        queue.submit(text_job("after-outage", events))
        queue.down.clear()
        wait_for(lambda: any(isinstance(e, ChoiceFinished) for e in events))
        assert worker.health().state is WorkerState.RUNNING
    finally:
        worker.stop(10)
    assert worker.health().state is WorkerState.STOPPED


def test_rows_already_decoding_go_on_while_the_queue_is_away(runtime):
    queue = FlakyQueue()
    worker = TextWorker(runtime=runtime, queue=queue, max_batch_size=4, idle_wait_s=0.01)
    events: list = []
    queue.submit(text_job("long", events, max_tokens=400))
    worker.start()
    try:
        wait_for(lambda: len(events) > 3)
        queue.down.set()
        at_outage = len(events)
        wait_for(lambda: any(isinstance(e, ChoiceFinished) for e in events))
    finally:
        worker.stop(10)
    assert not any(isinstance(e, JobFailed) for e in events)
    assert at_outage < 300 and len(events) > at_outage + 10, "no token was decoded while the queue was away"


class _Broken(Worker):
    kind = "test"

    def __init__(self, queue, clock=time.monotonic) -> None:
        super().__init__(model="m", queue=queue, idle_wait_s=0.01, stall_s=5, clock=clock)
        self.held: list[tuple[str, bool]] = []
        self.hang = threading.Event()
        self.release = threading.Event()

    @property
    def busy(self) -> bool:
        return False

    def _round(self, wait_s: float):
        if self.hang.is_set():
            self.release.wait(10)  # a model call that does not come back
        return None

    def _fail_held(self, message: str, shutdown: bool = False) -> None:
        self.held.append((message, shutdown))


def test_health_tells_a_hung_loop_and_a_dead_thread_apart():
    now = [1000.0]
    worker = _Broken(InMemoryQueue(policy=SchedulerPolicy()), clock=lambda: now[0])
    assert worker.health().state is WorkerState.STARTING
    worker.hang.set()
    worker.start()
    try:
        assert worker.health().state is WorkerState.RUNNING
        now[0] += 6  # the loop has not come round for longer than stall_s
        assert worker.health().state is WorkerState.STALLED
        assert not worker.health().ok and "has not come round for 6 s" in worker.health().reason
        worker.hang.clear()
        worker.release.set()
        wait_for(lambda: worker.health().state is WorkerState.RUNNING)
    finally:
        worker.stop(5)
    assert worker.held[-1] == ("the server shut down before this request finished", True)

    class Dies(_Broken):
        def _loop(self) -> None:
            raise RuntimeError("a bug")

    dead = Dies(InMemoryQueue(policy=SchedulerPolicy()))
    dead.start()
    wait_for(lambda: not dead.alive)
    assert dead.health().state is WorkerState.DEAD and not dead.health().ok
    assert dead.held == [("the worker failed; retry the request", False)]


def test_a_round_that_fails_outside_the_model_fails_its_jobs_retryable_not_as_a_shutdown(runtime):
    class Exploding(FlakyQueue):
        def depth(self, request_class=None, *, model=None):
            if self.explode:
                raise KeyError("a bug in the queue")
            return super().depth(request_class, model=model)

    queue = Exploding()
    queue.explode = False
    worker = TextWorker(runtime=runtime, queue=queue, max_batch_size=4, idle_wait_s=0.01)
    events: list = []
    queue.submit(text_job("held", events, max_tokens=500))
    worker.start()
    try:
        wait_for(lambda: len(events) > 2)
        queue.explode = True
        wait_for(lambda: any(isinstance(e, JobFailed) for e in events))
        queue.explode = False
        [failure] = [e for e in events if isinstance(e, JobFailed)]
        assert failure.retryable and not failure.shutdown
        assert worker.alive and worker.health().state is WorkerState.RUNNING
        after: list = []
        queue.submit(text_job("next", after))
        wait_for(lambda: any(isinstance(e, ChoiceFinished) for e in after))
    finally:
        worker.stop(10)


def test_burst_mode_runs_what_is_queued_on_the_callers_thread(runtime):
    queue = InMemoryQueue(policy=SchedulerPolicy())
    worker = TextWorker(runtime=runtime, queue=queue, max_batch_size=2)
    events: dict[str, list] = {name: [] for name in ("a", "b", "c")}
    for name, sink in events.items():
        queue.submit(text_job(name, sink))
    assert worker.run_burst() == 3
    assert all(isinstance(sink[-1], ChoiceFinished) for sink in events.values())
    assert worker.run_burst() == 0 and not worker.alive
