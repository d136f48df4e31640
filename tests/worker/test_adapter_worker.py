"""Fine-tuned versions served in their base's batch: a TextWorker with LoRA adapters attached
takes their queued work beside its own, runs every row in one batch with that row's adapter, and
each job gets its own model's greedy answer (the same as the version merged and run alone).
Detaching a version hands back what it held, retryable, and leaves its queued work alone."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from genloom.config import RuntimeSettings
from genloom.jobs import ChoiceFinished, Job, JobFailed, SamplingParams, TextTask, TokenEvent
from genloom.queue import InMemoryQueue, SchedulerPolicy
from genloom.runtimes.multi_lora import LoraWeights
from genloom.runtimes.text import TextRuntime
from genloom.telemetry import RecordingObserver
from genloom.worker import TextWorker
from genloom.worker.base import WorkerState
from genloom.worker.adapter_worker import AdapterWorker
from tests.runtimes.test_multi_lora import train

QUESTION = [{"role": "user", "content": "question 5"}]


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {"tiny@ahoy": train(tiny_model_dir, root / "a", "Ahoy", 1), "tiny@howdy": train(tiny_model_dir, root / "b", "Howdy", 2)}


class Answers:
    """What each job was told: its text, and how it ended."""

    def __init__(self) -> None:
        self.text: dict[str, str] = {}
        self.ended: dict[str, object] = {}

    def job(self, job_id: str, model: str, prompt_ids: list[int], max_tokens: int = 8, ignore_eos: bool = False) -> Job:
        self.text[job_id] = ""

        def emit(event) -> None:
            if isinstance(event, TokenEvent):
                self.text[job_id] += event.delta
            elif isinstance(event, ChoiceFinished | JobFailed):
                self.ended[job_id] = event

        params = SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=ignore_eos)
        return Job(id=job_id, model=model, payload=TextTask(prompt_ids=tuple(prompt_ids), params=params), emit=emit)


def alone(tiny_model_dir: Path, adapter: Path | None, prompt_ids: list[int]) -> str:
    """The greedy answer of the version on its own: the adapter merged into a copy, one job, one batch."""
    runtime = TextRuntime(name="alone", path=tiny_model_dir, settings=RuntimeSettings(), adapter=adapter)
    queue, answers = InMemoryQueue(policy=SchedulerPolicy()), Answers()
    queue.submit(answers.job("only", "alone", prompt_ids))
    TextWorker(runtime=runtime, queue=queue, max_batch_size=1).run_burst()
    return answers.text["only"]


def test_attached_versions_share_one_batch_and_each_answers_as_its_own_model(tiny_model_dir, adapters):
    runtime = TextRuntime(name="tiny", path=tiny_model_dir, settings=RuntimeSettings())
    queue, answers, observer = InMemoryQueue(policy=SchedulerPolicy()), Answers(), RecordingObserver()
    base = TextWorker(runtime=runtime, queue=queue, max_batch_size=8, observer=observer)
    attached = [AdapterWorker(version=v, base=base, adapter=LoraWeights.load(path), queue=queue) for v, path in adapters.items()]
    for worker in attached:
        worker.start()
    assert base.adapters == ("tiny@ahoy", "tiny@howdy") and runtime.adapters.names == ["tiny@ahoy", "tiny@howdy"]
    prompt = runtime.encode_chat(QUESTION)
    plan = {"j1": "tiny@howdy", "j2": "tiny", "j3": "tiny@ahoy", "j4": "tiny@howdy", "j5": "tiny"}
    for job_id, model in plan.items():
        queue.submit(answers.job(job_id, model, prompt))
    assert base.run_burst() == 5
    sizes = [fields["size"] for name, fields in observer.calls if name == "batch_formed"]
    assert sizes == [5]  # all five versions' rows in one batch
    expected = {"tiny": alone(tiny_model_dir, None, prompt)} | {v: alone(tiny_model_dir, p, prompt) for v, p in adapters.items()}
    assert len(set(expected.values())) == 3  # the three versions answer differently
    assert {job_id: answers.text[job_id] for job_id in plan} == {job_id: expected[model] for job_id, model in plan.items()}
    assert all(isinstance(answers.ended[j], ChoiceFinished) for j in plan)
    assert attached[0].capacity == 8 and not attached[0].busy


def test_a_detached_version_hands_back_what_it_held_and_its_queue_waits(tiny_model_dir, adapters):
    runtime = TextRuntime(name="tiny", path=tiny_model_dir, settings=RuntimeSettings())
    queue, answers = InMemoryQueue(policy=SchedulerPolicy()), Answers()
    base = TextWorker(runtime=runtime, queue=queue, max_batch_size=4)
    ahoy = AdapterWorker(version="tiny@ahoy", base=base, adapter=LoraWeights.load(adapters["tiny@ahoy"]), queue=queue)
    ahoy.start()
    prompt = runtime.encode_chat(QUESTION)
    queue.submit(answers.job("tuned", "tiny@ahoy", prompt, max_tokens=40, ignore_eos=True))
    queue.submit(answers.job("plain", "tiny", prompt, max_tokens=40, ignore_eos=True))
    base._round(0.0)  # both join the batch
    assert ahoy.busy and ahoy.occupancy == 1 and base.occupancy == 2
    ahoy.stop()
    failed = answers.ended["tuned"]
    assert isinstance(failed, JobFailed) and failed.retryable and "unloaded" in failed.message
    assert not ahoy.busy and base.occupancy == 1 and ahoy.health().state is WorkerState.STOPPED
    assert base.adapters == () and runtime.adapters.names == []
    queue.submit(answers.job("later", "tiny@ahoy", prompt))
    base.run_burst()  # the base finishes its own job and leaves the detached version's queued work alone
    assert isinstance(answers.ended["plain"], ChoiceFinished) and len(answers.text["plain"]) > 0
    assert "later" not in answers.ended and queue.depth(model="tiny@ahoy") == 1


def test_an_idle_only_detach_leaves_a_running_version_alone_while_the_worker_thread_runs(tiny_model_dir, adapters):
    runtime = TextRuntime(name="tiny", path=tiny_model_dir, settings=RuntimeSettings())
    queue, answers = InMemoryQueue(policy=SchedulerPolicy()), Answers()
    base = TextWorker(runtime=runtime, queue=queue, max_batch_size=4)
    base.start()
    try:
        ahoy = AdapterWorker(version="tiny@ahoy", base=base, adapter=LoraWeights.load(adapters["tiny@ahoy"]), queue=queue)
        ahoy.start()  # attached while the worker's thread runs
        prompt = runtime.encode_chat(QUESTION)
        queue.submit(answers.job("long", "tiny@ahoy", prompt, max_tokens=400, ignore_eos=True))
        deadline = time.monotonic() + 10
        while not ahoy.busy:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        assert not ahoy.stop_if_idle(timeout=10) and base.adapters == ("tiny@ahoy",)  # its row runs: it stays
        deadline = time.monotonic() + 60
        while "long" not in answers.ended:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert isinstance(answers.ended["long"], ChoiceFinished)
        assert ahoy.stop_if_idle(timeout=10) and base.adapters == () and runtime.adapters.names == []
    finally:
        base.stop(10)
