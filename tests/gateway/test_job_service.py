"""The job service with a scripted worker thread in place of the model: retries, failures,
manual retry and recovery of what an earlier process left, against a real SQLite store."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import pytest

from genloom.config import ApiSettings, ClassificationSettings, JobsSettings, RuntimeSettings
from genloom.gateway import Readiness, ServerState, TextRequest, TextService
from genloom.gateway.pipeline.admit import Admit
from genloom.gateway.job_service import JobService, JobSubmission
from genloom.jobs import ChoiceFinished, JobFailed, JobStarted, RequestClass, SamplingParams, TokenEvent
from genloom.queue import InMemoryQueue, QueueFull, SchedulerPolicy
from genloom.jobs.records import JobRecord, JobState
from genloom.store.jobs import SqlJobStore, utc_now
from genloom.runtimes.text import TextRuntime
from genloom.store import Database

Script = Callable[[str, int], JobFailed | None]  # (job id, attempt) -> the failure to report, or None to succeed


class ScriptedWorker:
    """Takes jobs like a TextWorker and reports what the script says, without a model."""

    def __init__(self, queue: InMemoryQueue, script: Script) -> None:
        self.queue, self.script = queue, script
        self.attempts: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ScriptedWorker:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            for job in self.queue.take(["tiny"], max_rows=8, timeout=0.02):
                self.attempts[job.id] += 1
                job.emit(JobStarted())
                failure = self.script(job.id, self.attempts[job.id])
                if failure is not None:
                    job.emit(failure)
                else:
                    job.emit(TokenEvent(0, "done", 1))
                    job.emit(ChoiceFinished(0, "stop", 1))


@pytest.fixture(scope="module")
def runtime(tiny_model_dir) -> TextRuntime:
    return TextRuntime(name="tiny", path=tiny_model_dir, settings=RuntimeSettings())


@pytest.fixture()
async def parts(tmp_path, runtime) -> AsyncIterator[tuple[SqlJobStore, InMemoryQueue, TextService, Database]]:
    database = Database(url=f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}")
    await database.migrate()
    readiness = Readiness()
    readiness.set(ServerState.READY)
    queue = InMemoryQueue(policy=SchedulerPolicy())
    text = TextService(
        runtimes={"tiny": runtime}, queue=queue, readiness=readiness,
        settings=ApiSettings(), classification=ClassificationSettings(), max_batch_size=8,
    )
    yield SqlJobStore(database=database), queue, text, database
    await database.dispose()


def service(parts, **settings) -> JobService:
    store, queue, text, _ = parts
    jobs_settings = JobsSettings(**({"retry_base_s": 0.01, "retry_max_s": 0.05} | settings))
    return JobService(
        store=store, queue=queue, text=text, admit=Admit(limiter=None), settings=jobs_settings, process_id="test", webhooks_enabled=False,
        webhook_allow_hosts=frozenset(),
    )


def submission(key: str | None = None) -> JobSubmission:
    request = TextRequest(
        endpoint="/v1/chat/completions", model="tiny", params=SamplingParams(max_tokens=4),
        messages=[{"role": "user", "content": "hi"}],
    )
    return JobSubmission(url="/v1/chat/completions", body={"model": "tiny"}, request=request, idempotency_key=key)


async def settled(jobs: JobService, job_id: str, timeout_s: float = 10) -> JobRecord:
    deadline = time.monotonic() + timeout_s
    while True:
        record = (await jobs.get(job_id, tenant=None)).record
        if record.state.terminal:
            return (await jobs.get(job_id, tenant=None)).record
        assert time.monotonic() < deadline, f"job still {record.state.value}"
        await asyncio.sleep(0.01)


def transient(job_id: str, attempt: int) -> JobFailed | None:
    return JobFailed("the model ran out of memory", retryable=True) if attempt < 3 else None


async def test_transient_failures_retry_with_backoff_then_complete(parts):
    jobs = service(parts, max_attempts=3)
    await jobs.start()
    with ScriptedWorker(parts[1], transient):
        record = (await jobs.submit(submission()))[0].record
        done = await settled(jobs, record.id)
    await jobs.stop()
    assert done.state is JobState.COMPLETED and done.attempts == 3
    assert done.result["choices"][0]["message"]["content"] == "done"
    states = [t.state for t in done.transitions]
    assert states == [JobState.QUEUED] + [JobState.PROCESSING, JobState.RETRYING] * 2 + [JobState.PROCESSING, JobState.COMPLETED]
    assert done.transitions[2].message == "the model ran out of memory"


async def test_a_job_out_of_attempts_fails_with_its_last_error_and_can_be_retried_by_hand(parts):
    jobs = service(parts, max_attempts=2)
    await jobs.start()
    with ScriptedWorker(parts[1], transient) as worker:
        record = (await jobs.submit(submission()))[0].record
        failed = await settled(jobs, record.id)
        assert failed.state is JobState.FAILED and failed.attempts == 2
        assert failed.error == {"message": "the model ran out of memory", "code": "generation_failed"}
        dead_letter, _ = await jobs.list(tenant=None, state=JobState.FAILED, limit=10, after=None)
        assert [v.record.id for v in dead_letter] == [record.id]
        await jobs.retry(record.id, tenant=None)
        done = await settled(jobs, record.id)
    await jobs.stop()
    assert done.state is JobState.COMPLETED and worker.attempts[record.id] == 3


async def test_a_non_retryable_failure_fails_at_once(parts):
    jobs = service(parts, max_attempts=5)
    await jobs.start()
    with ScriptedWorker(parts[1], lambda job_id, attempt: JobFailed("bad input", retryable=False)):
        record = (await jobs.submit(submission()))[0].record
        failed = await settled(jobs, record.id)
    await jobs.stop()
    assert failed.state is JobState.FAILED and failed.attempts == 1


async def test_start_recovers_waiting_jobs_and_jobs_of_a_dead_worker(parts):
    store = parts[0]
    now = utc_now()
    template = dict(
        tenant="default", tier="free", url="/v1/chat/completions", body={}, model="tiny", cost=1.0,
        state=JobState.QUEUED, max_attempts=3, request_hash="h", created_at=now, updated_at=now,
        request=submission().request.to_record(),
    )
    await store.create(JobRecord(id="job_waiting", **template), idempotency_window_s=60)
    await store.create(JobRecord(id="job_orphan", **template), idempotency_window_s=60)
    await store.start("job_orphan", owner="dead-process", lease_until=now - timedelta(seconds=1))
    jobs = service(parts)
    with ScriptedWorker(parts[1], lambda job_id, attempt: None):
        await jobs.start()
        waiting, orphan = await settled(jobs, "job_waiting"), await settled(jobs, "job_orphan")
    await jobs.stop()
    assert waiting.state is orphan.state is JobState.COMPLETED
    assert orphan.attempts == 2 and JobState.RETRYING in [t.state for t in orphan.transitions]


async def test_a_job_taken_while_the_store_cannot_record_its_start_is_queued_again(parts, monkeypatch):
    """A full disk (or a database away) when the worker starts the job: the job is out of the
    queue and still waiting in the store; the sweep puts it back and it runs once space is back."""
    store = parts[0]
    real_start, refused = store.start, []

    async def start(job_id, **kwargs):
        if not refused:
            refused.append(job_id)
            raise OSError(28, "No space left on device")
        return await real_start(job_id, **kwargs)

    monkeypatch.setattr(store, "start", start)
    jobs = service(parts, sweep_s=0.05)
    await jobs.start()
    with ScriptedWorker(parts[1], lambda job_id, attempt: None) as worker:
        record = (await jobs.submit(submission()))[0].record
        done = await settled(jobs, record.id)
    await jobs.stop()
    assert refused == [record.id] and worker.attempts[record.id] == 2
    assert done.state is JobState.COMPLETED and done.attempts == 1


async def test_a_job_whose_model_is_gone_after_a_restart_fails_instead_of_waiting_forever(parts):
    store = parts[0]
    now = utc_now()
    request = submission().request.to_record() | {"model": "removed"}
    record = JobRecord(
        id="job_lost", tenant="default", tier="free", url="/v1/chat/completions", body={}, request=request,
        model="removed", cost=1.0, state=JobState.QUEUED, max_attempts=3, request_hash="h", created_at=now, updated_at=now,
    )
    await store.create(record, idempotency_window_s=60)
    jobs = service(parts)
    await jobs.start()
    failed = await settled(jobs, "job_lost")
    await jobs.stop()
    assert failed.state is JobState.FAILED and "removed" in failed.error["message"]


async def test_concurrent_submissions_do_not_overshoot_the_queue_limit(parts):
    store, _, text, _ = parts
    queue = InMemoryQueue(
        policy=SchedulerPolicy(max_queued={RequestClass.REALTIME: 10, RequestClass.ASYNC: 10}, tenant_max_share=1.0)
    )
    jobs = JobService(
        store=store, queue=queue, text=text, admit=Admit(limiter=None), settings=JobsSettings(), process_id="test", webhooks_enabled=False,
        webhook_allow_hosts=frozenset(),
    )
    await jobs.start()
    outcomes = await asyncio.gather(*(jobs.submit(submission()) for _ in range(40)), return_exceptions=True)
    await jobs.stop()
    accepted = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(accepted) == 10 and all(isinstance(o, QueueFull) for o in outcomes if isinstance(o, BaseException))
    assert queue.depth(RequestClass.ASYNC) == 10 and len(await store.waiting()) == 10
