"""Job-queue throughput in-process: the real JobService, InMemoryQueue and SQLite job store, and a
worker that generates nothing, so what is measured is scheduling and persistence, not the model.

The job service is wired as `genloom.server.GenloomServer` wires it; the text service is real
because submit validates every request against a loaded runtime (tokenizing the chat prompt)."""

from __future__ import annotations

import asyncio
import cProfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select

from genloom.config import ApiSettings, ClassificationSettings, JobsSettings, RuntimeSettings
from genloom.gateway import Readiness, ServerState, TextRequest, TextService
from genloom.gateway.job_service import JobService, JobSubmission
from genloom.gateway.pipeline.admit import Admit
from genloom.jobs import ChoiceFinished, Job, JobStarted, RequestClass, SamplingParams, Tier
from genloom.queue import InMemoryQueue, SchedulerPolicy
from genloom.jobs.records import JobRecord, JobState
from genloom.store.jobs import SqlJobStore, utc_now
from genloom.runtimes.text import TextRuntime
from genloom.store import Database
from genloom.store.schema import JobRow

MODEL = "noop"


@dataclass
class EmbeddedRun:
    concurrency: int
    jobs: int
    refused: int
    submit_s: float
    end_to_end_s: float
    completed: int  # as the store shows them at the end
    timed_out: bool = False

    @property
    def submitted_per_s(self) -> float:
        return (self.jobs - self.refused) / self.submit_s

    @property
    def completed_per_s(self) -> float:
        return self.completed / self.end_to_end_s


class NoopWorker:
    """Takes jobs as TextWorker does and finishes each at once: started, then one empty choice."""

    def __init__(self, *, queue: InMemoryQueue, model: str, max_rows: int = 64) -> None:
        self._queue = queue
        self._model = model
        self._max_rows = max_rows
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="noop-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            for job in self._queue.take([self._model], max_rows=self._max_rows, timeout=0.05):
                job.emit(JobStarted())
                job.emit(ChoiceFinished(0, "stop", 0))


def load_runtime(model_dir: Path) -> TextRuntime:
    return TextRuntime(name=MODEL, path=model_dir, settings=RuntimeSettings())


def submission(i: int, prompts: list[str], max_tokens: int) -> JobSubmission:
    prompt = prompts[i % len(prompts)]
    body = {"model": MODEL, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0, "ignore_eos": True}
    request = TextRequest(
        endpoint="/v1/chat/completions", model=MODEL,
        params=SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True),
        messages=[{"role": "user", "content": prompt}], tier=Tier.FREE, tenant="bulk",
    )
    return JobSubmission(url="/v1/chat/completions", body=body, request=request)


async def run_embedded(
    *, runtime: TextRuntime, db_path: Path, jobs: int, concurrency: int, prompts: list[str], max_tokens: int,
    timeout_s: float, profiler: cProfile.Profile | None = None,
) -> EmbeddedRun:
    """Submit `jobs` through `concurrency` submitters, then wait until every job is stored completed."""
    database = Database(url=f"sqlite+aiosqlite:///{db_path}")
    await database.migrate()
    readiness = Readiness()
    readiness.set(ServerState.READY)
    queue = InMemoryQueue(policy=SchedulerPolicy())
    text = TextService(
        runtimes={MODEL: runtime}, queue=queue, readiness=readiness,
        settings=ApiSettings(), classification=ClassificationSettings(), max_batch_size=32,
    )
    finished = 0
    all_finished = asyncio.Event()

    def on_finished() -> None:
        nonlocal finished
        finished += 1
        if finished >= jobs - refused:
            all_finished.set()

    service = JobService(
        store=SqlJobStore(database=database), queue=queue, text=text, admit=Admit(limiter=None), settings=JobsSettings(),
        process_id="bench",
        webhooks_enabled=False, webhook_allow_hosts=frozenset(), on_finished=on_finished,
    )
    worker = NoopWorker(queue=queue, model=MODEL)
    await service.start()
    worker.start()
    submissions = [submission(i, prompts, max_tokens) for i in range(jobs)]
    next_index, refused = 0, 0

    async def submitter() -> None:
        nonlocal next_index, refused
        while next_index < jobs:
            i = next_index
            next_index += 1
            try:
                await service.submit(submissions[i])
            except Exception:  # queue full, tenant share: counted, not fatal
                refused += 1

    timed_out = False
    if profiler is not None:
        profiler.enable()
    start = time.perf_counter()
    try:
        await asyncio.gather(*(submitter() for _ in range(concurrency)))
        submit_s = time.perf_counter() - start
        if finished >= jobs - refused:
            all_finished.set()
        try:
            await asyncio.wait_for(all_finished.wait(), timeout_s)
        except TimeoutError:
            timed_out = True
        end_to_end_s = time.perf_counter() - start
    finally:
        if profiler is not None:
            profiler.disable()
        worker.stop()
        await service.stop()
    async with database.engine.connect() as conn:
        query = select(func.count()).select_from(JobRow).where(JobRow.state == JobState.COMPLETED.value)
        completed = (await conn.execute(query)).scalar_one()
    await database.dispose()
    return EmbeddedRun(concurrency, jobs, refused, submit_s, end_to_end_s, completed, timed_out)


async def time_store_calls(*, db_path: Path, n: int) -> dict[str, float]:
    """Mean milliseconds of each store call a job makes (create, start, complete) and of a job read,
    each called `n` times in a row with nothing else running."""
    database = Database(url=f"sqlite+aiosqlite:///{db_path}")
    await database.migrate()
    store = SqlJobStore(database=database)
    sub = submission(0, ["What is a Python list?"], 32)
    now = utc_now()
    records = [
        JobRecord(id=f"job_{uuid.uuid4().hex}", tenant="bulk", tier="free", url=sub.url, body=sub.body,
                  request=sub.request.to_record(), model=MODEL, cost=50.0, state=JobState.QUEUED, max_attempts=3,
                  request_hash="0" * 64, created_at=now, updated_at=now)
        for _ in range(n)
    ]
    lease_until = now + timedelta(minutes=10)
    calls = {
        "create": lambda r: store.create(r, idempotency_window_s=86_400),
        "get": lambda r: store.get(r.id),
        "start": lambda r: store.start(r.id, owner="bench", lease_until=lease_until),
        "complete": lambda r: store.complete(r.id, owner="bench", result={"choices": []}),
    }
    means = {}
    for name, call in calls.items():
        start = time.perf_counter()
        for record in records:
            await call(record)
        means[name] = (time.perf_counter() - start) / n * 1000
    await database.dispose()
    return means


def time_position(waiting: list[int]) -> dict[int, float]:
    """Milliseconds `InMemoryQueue.position` takes for the newest of n waiting jobs of one tenant:
    every job view (a POST /v1/jobs answer, say) of a waiting job asks for it."""
    means = {}
    for n in waiting:
        queue = InMemoryQueue(policy=SchedulerPolicy())
        for i in range(n):
            queue.restore(Job(id=f"job-{i}", model=MODEL, payload=None, emit=lambda event: None,
                              request_class=RequestClass.ASYNC, tier=Tier.FREE, tenant="bulk", cost=50.0))
        start = time.perf_counter()
        for _ in range(5):
            queue.position(f"job-{n - 1}")
        means[n] = (time.perf_counter() - start) / 5 * 1000
    return means
