"""Async jobs once stored: queue them, run them under a lease with heartbeats, retry with
backoff, recover after a crash, sweep stored jobs a shared queue lost.

A job's life on this process: `enqueue` puts a stored job in the queue; when a worker takes it,
the worker's `JobStarted` event makes `_run` take the lease in the store; tokens gather into a
`Completion`; the end stores the result once (only the lease holder may), or a failure that
retries or fails. Nothing here blocks the event loop: the worker runs on its own thread and
talks back through `loop.call_soon_threadsafe`."""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from genloom.config import JobsSettings
from genloom.gateway.errors import InvalidRequest, ModelNotFound
from genloom.gateway.fallback import job_may_fall_back, job_target
from genloom.gateway.image_service import IMAGES_ENDPOINT, ImageRequest, ImageService, PreparedImage
from genloom.gateway.openai_shapes import completion_body
from genloom.gateway.pipeline.call import guarded
from genloom.gateway.pipeline.guard import GuardBlocked, GuardStage
from genloom.gateway.queue_io import queue_call
from genloom.gateway.text_service import Choice, Completion, PreparedText, TextRequest, TextService
from genloom.jobs import ImagesReady, Job, JobEvent, JobFailed, JobStarted, RequestClass, Tier
from genloom.jobs.records import JobRecord, JobState
from genloom.queue import QueueUnavailable
from genloom.queue.backoff import retry_delay
from genloom.queue.protocol import JobQueue
from genloom.store.jobs import JobStore, utc_now
from genloom.telemetry import NO_OBSERVER, Observer
from genloom.telemetry.tracing import job_trace

log = logging.getLogger("genloom.jobs")
Request = TextRequest | ImageRequest
Prepared = PreparedText | PreparedImage


class _Stop:
    """Put on a run's event queue to end it (cancelled, or its lease was lost)."""


@dataclass(frozen=True)
class _Pending:
    """A job queued on this process and not started yet. `dispatch` tells this queueing of the job
    from an earlier one (a retried job keeps its id), so a stale run's late events are ignored.
    A job taken from a shared queue (adopted) comes with only its Job: the rest is read from
    the store when it starts."""

    record: JobRecord | None
    request: Request | None
    prepared: Prepared | None
    job: Job
    dispatch: str


@dataclass(eq=False)
class _Run:
    job: Job
    dispatch: str
    record: JobRecord | None  # None until an adopted job's lease is taken
    request: Request | None
    completion: Completion | None  # None for an image job: its pictures arrive in one event
    events: asyncio.Queue[JobEvent | _Stop] = field(default_factory=asyncio.Queue)
    owner: str | None = None


def _completion(job_id: str, model: str, request: TextRequest, prompt_tokens: int, tool_parser: str) -> Completion:
    return Completion(
        id=job_id, model=model, created=int(time.time()), choices=[Choice(i) for i in range(request.n)],
        prompt_tokens=prompt_tokens, logprobs=request.params.logprobs, top_logprobs=request.params.top_logprobs,
        echo=(request.prompt or "") if request.echo else "",
        tools=replace(request.tools, parser=tool_parser) if request.tools else None,
    )


def _ignore(event: JobEvent) -> None:
    pass


class JobRunner:
    def __init__(
        self, *, store: JobStore, queue: JobQueue, text: TextService, images: ImageService | None, settings: JobsSettings,
        process_id: str, on_finished: Callable[[], None], rng: random.Random | None = None, shared_queue: bool = False,
        observer: Observer = NO_OBSERVER, guard_output: GuardStage | None = None,
    ) -> None:
        """With `shared_queue`, jobs queued here run on any worker process: this process keeps no
        run for them, and runs the ones its own workers take (`adopt`)."""
        self._store = store
        self._queue = queue
        self._text = text
        self._images = images
        self._settings = settings
        self._process_id = process_id
        self._on_finished = on_finished
        self._rng = rng or random.Random()
        self._shared = shared_queue
        self._observer = observer
        self._guard_output = guard_output  # a text job's answer passes the output guards before it is stored
        self._runs: dict[str, _Run] = {}
        self._pending: dict[str, _Pending] = {}
        self._tasks: set[asyncio.Task] = set()
        self._loops: list[asyncio.Task] = []
        self.changed = asyncio.Event()  # set (and replaced) on every change a watcher may want
        self._loop: asyncio.AbstractEventLoop | None = None

    def stop_job(self, job_id: str) -> None:
        """A cancelled job: a worker that took it a moment ago, or runs it, drops it."""
        pending = self._pending.pop(job_id, None)
        if pending is not None:
            pending.job.cancel()
        run = self._runs.get(job_id)
        if run is not None:  # the worker drops its rows before its next step
            run.job.cancel()
            run.events.put_nowait(_Stop())

    def progress(self, job_id: str) -> tuple[bool, int | None]:
        """Whether this process runs the job, and its completion tokens so far (text jobs)."""
        run = self._runs.get(job_id)
        if run is None:
            return False, None
        return True, run.completion.usage.completion_tokens if run.completion is not None else None

    def _image_service(self) -> ImageService:
        if self._images is None:
            raise ModelNotFound("an image model", [])
        return self._images

    @property
    def running(self) -> int:
        return len(self._runs)

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop its bookkeeping runs on, known before `start` (workers may adopt jobs sooner)."""
        self._loop = loop

    async def start(self) -> None:
        """Recover what an earlier process left (expired leases, waiting jobs), then keep leases alive."""
        self._loop = asyncio.get_running_loop()
        for record in await self._store.reclaim_expired():
            log.info("job %s: its worker was lost; now %s", record.id, record.state.value)
        recovered = await self.sweep(settled_s=0.0)
        if recovered:
            log.info("recovered %d waiting jobs", recovered)
        self._loops = [
            asyncio.create_task(self._heartbeat_forever(), name="genloom-job-heartbeat"),
            asyncio.create_task(self._reclaim_forever(), name="genloom-job-reclaim"),
            asyncio.create_task(self._sweep_forever(), name="genloom-job-sweep"),
        ]

    async def sweep(self, *, settled_s: float) -> int:
        """Queue the stored waiting jobs the queue does not hold and this process has not taken,
        unchanged for `settled_s` (so a submission between its store and its queueing is left
        alone); how many. It repairs a job taken while the store could not record its start (a
        full disk, a database away: it is still waiting there, and no longer in the queue), and,
        on a shared queue, an enqueue that failed (Redis unreachable for a moment) or a Redis
        that lost its data; each process may run it, queueing is idempotent."""
        settled = utc_now() - timedelta(seconds=settled_s)
        taken = self._pending.keys() | self._runs.keys()
        waiting = [r for r in await self._store.waiting() if r.updated_at <= settled and r.id not in taken]
        if not waiting:
            return 0
        missing = await queue_call(self._queue, self._queue.missing, [r.id for r in waiting])
        queued = 0
        for record in waiting:
            if record.id in missing:
                await self.enqueue(record)
                queued += 1
        return queued

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self._settings.sweep_s)
            try:
                if queued := await self.sweep(settled_s=self._settings.sweep_s):
                    log.warning("queued %d stored jobs the queue did not hold", queued)
            except QueueUnavailable as e:
                log.warning("could not sweep stored jobs into the queue: %s", e)
            except Exception:
                log.exception("sweeping stored jobs into the queue failed")

    async def stop(self, timeout_s: float = 10.0) -> None:
        """After the workers stopped: let running jobs record their release, then stop the loops."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)
        for task in self._loops:
            task.cancel()
        for task in self._loops:
            with suppress(asyncio.CancelledError):
                await task

    @staticmethod
    def _request(record: JobRecord) -> Request:
        if record.url == IMAGES_ENDPOINT:
            return ImageRequest.from_record(record.request, id=record.id, tier=Tier(record.tier), tenant=record.tenant)
        return TextRequest.from_record(record.request, id=record.id, tier=Tier(record.tier), tenant=record.tenant)

    async def enqueue(self, record: JobRecord, prepared: Prepared | None = None, *, retry: bool = False) -> None:
        """Queue a stored job; `retry` for one that has run before (a copy may still be held)."""
        request = self._request(record)
        if isinstance(request, TextRequest):
            # A retry after a failure goes to the next model of the fallback chain, the last one keeps it.
            target = job_target(self._text.chain(record.model), attempts=record.attempts, failed_before=bool(record.error))
            if target != request.model:
                request, prepared = replace(request, model=target), None
        if prepared is None:
            try:
                if isinstance(request, ImageRequest):
                    prepared = self._image_service().prepare(request, accepted=True)
                else:
                    prepared = self._text.prepare(request, accepted=True)
            except (ModelNotFound, InvalidRequest) as e:  # the configuration changed since it was accepted
                await self._fail_unrunnable(record, str(e))
                return
        if isinstance(prepared, PreparedImage):
            # Every picture's provenance names the job that made it.
            prepared = replace(prepared, task=replace(prepared.task, provenance={"job_id": record.id}))
        now = utc_now()
        dispatch = uuid.uuid4().hex
        delay = (record.not_before - now).total_seconds() if record.not_before else 0.0
        waited = (now - record.created_at).total_seconds()
        job = Job(
            id=record.id,
            model=prepared.model,
            payload=prepared.payload,
            emit=self._emitter(record.id, dispatch),
            rows=request.n,
            request_class=RequestClass.ASYNC,
            tier=request.tier,
            tenant=record.tenant,
            cost=record.cost,
            not_before=time.monotonic() + max(0.0, delay),
            # Aging counts the time it has waited already, across restarts.
            enqueued_at=time.monotonic() - max(0.0, waited),
            trace=job_trace(),  # the submitting request's trace (none for a recovery or a sweep)
        )
        if self._shared:
            job.emit = _ignore  # whichever worker takes it runs it (adopt)
        else:
            self._pending[record.id] = _Pending(record, request, prepared, job, dispatch)
        await queue_call(self._queue, self._queue.requeue if retry else self._queue.restore, job)

    async def _fail_unrunnable(self, record: JobRecord, message: str) -> None:
        owner = f"{self._process_id}:{uuid.uuid4().hex[:8]}"
        if await self._store.start(record.id, owner=owner, lease_until=utc_now()) is not None:
            await self._store.fail(record.id, owner=owner, error={"message": message, "code": "invalid_request"}, retry_at=None)
            log.warning("job %s failed: %s", record.id, message)

    def adopt(self, job: Job) -> Callable[[JobEvent], None]:
        """The `emit` for an async job this process's worker took from the shared queue (called
        on the worker's thread): its bookkeeping runs here as if it had been queued here."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("the job runner has not started")
        dispatch = uuid.uuid4().hex
        # Scheduled before the worker's first event, so JobStarted finds it.
        loop.call_soon_threadsafe(self._adopted, _Pending(None, None, None, job, dispatch))
        job.on_cancel(lambda: self._stop_run_soon(job.id, dispatch))  # cancelled on another replica
        return self._emitter(job.id, dispatch)

    def _adopted(self, pending: _Pending) -> None:
        self._pending[pending.job.id] = pending

    def _stop_run_soon(self, job_id: str, dispatch: str) -> None:
        loop = self._loop
        if loop is not None:
            with suppress(RuntimeError):
                loop.call_soon_threadsafe(self._stop_run, job_id, dispatch)

    def _stop_run(self, job_id: str, dispatch: str) -> None:
        run = self._runs.get(job_id)
        if run is not None and run.dispatch == dispatch:
            run.events.put_nowait(_Stop())

    def _emitter(self, job_id: str, dispatch: str) -> Callable[[JobEvent], None]:
        def emit(event: JobEvent) -> None:  # on a worker thread
            loop = self._loop
            if loop is None:
                return
            with suppress(RuntimeError):  # the loop has closed: the next start recovers the job
                loop.call_soon_threadsafe(self._on_event, job_id, dispatch, event)

        return emit

    def _on_event(self, job_id: str, dispatch: str, event: JobEvent) -> None:
        pending = self._pending.get(job_id)
        if isinstance(event, JobStarted):
            if pending is None or pending.dispatch != dispatch:
                return
            del self._pending[job_id]
            record, request, prepared, job = pending.record, pending.request, pending.prepared, pending.job
            old = self._runs.get(job_id)
            if old is not None:  # a run this process lost the lease of; the new one replaces it
                old.job.cancel()
                old.events.put_nowait(_Stop())
            completion = None
            if isinstance(prepared, PreparedText):
                assert request is not None
                completion = _completion(job_id, prepared.model, request, prepared.prompt_tokens, prepared.tool_parser)
            run = _Run(job=job, dispatch=dispatch, record=record, request=request, completion=completion)
            self._runs[job_id] = run
            task = asyncio.create_task(self._run(run), name=f"genloom-job-{job_id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        run = self._runs.get(job_id)
        if run is not None and run.dispatch == dispatch:
            run.events.put_nowait(event)
        elif pending is not None and pending.dispatch == dispatch:
            del self._pending[job_id]  # failed before it started (the queue closed): it stays queued

    async def _run(self, run: _Run) -> None:
        job_id = run.job.id
        try:
            owner = f"{self._process_id}:{uuid.uuid4().hex[:8]}"
            lease_until = utc_now() + timedelta(seconds=self._settings.lease_s)
            started = await self._store.start(job_id, owner=owner, lease_until=lease_until)
            if started is None:  # cancelled while it waited, or (shared queue) another worker holds it
                run.job.cancel()
                return
            run.owner, run.record = owner, started
            if run.request is None:  # adopted from the shared queue
                run.request = self._request(started)
                task = run.job.payload
                if isinstance(run.request, TextRequest):
                    run.completion = _completion(
                        job_id, run.job.model, run.request, len(task.prompt_ids), self._text.tool_parsers.get(run.job.model, "hermes"),
                    )
            self.notify()
            result = await self._collect(run)
            if result is None:
                return
            if await self._store.complete(job_id, owner=owner, result=result):
                if run.completion is not None:
                    usage = run.completion.usage
                    self._observer.tokens(model=run.job.model, prompt=usage.prompt_tokens, completion=usage.completion_tokens)
                self._on_finished()
            else:
                log.info("job %s finished but its lease was gone; the result of the current holder stands", job_id)
        except Exception:
            log.exception("job %s: bookkeeping failed; the lease will expire and the job will be retried", job_id)
            run.job.cancel()  # free its rows now rather than let it run on unattended
        finally:
            if self._runs.get(job_id) is run:
                del self._runs[job_id]
            self.notify()

    async def _collect(self, run: _Run) -> dict[str, Any] | None:
        """Gather a run's events into its result body; None when it ended otherwise (stopped or failed)."""
        assert run.request is not None and run.record is not None
        open_choices = run.request.n
        while True:
            event = await run.events.get()
            if isinstance(event, _Stop):
                return None
            if isinstance(event, JobFailed):
                await self._attempt_failed(run, event)
                return None
            if isinstance(event, ImagesReady):
                assert isinstance(run.request, ImageRequest)
                return await self._image_service().result_body(run.request, event, base_url="", job_id=run.record.id)
            if run.completion is not None and run.completion.apply(event):
                open_choices -= 1
                if not open_choices:
                    return await self._guarded_body(run)

    async def _guarded_body(self, run: _Run) -> dict[str, Any] | None:
        """A text job's result after the output guards (its tenant's policy as it was when it was
        submitted): redacted in place, or None when they block it (the job fails, not retried)."""
        assert run.completion is not None and isinstance(run.request, TextRequest) and run.record is not None
        if self._guard_output is not None:
            texts = [c.text for c in run.completion.choices]
            try:
                checked = await self._guard_output.check(texts, who=guarded(run.request), param=None)
            except GuardBlocked as e:
                error = {"message": str(e), "code": "content_blocked"}
                if await self._store.fail(run.record.id, owner=run.owner or "", error=error, retry_at=None) is not None:
                    self._on_finished()
                return None
            for choice, text in zip(run.completion.choices, checked.texts):
                choice.text = text
        return completion_body(run.completion, run.request.endpoint)

    async def _attempt_failed(self, run: _Run, failure: JobFailed) -> None:
        assert run.record is not None
        job_id, owner = run.record.id, run.owner or ""
        if failure.shutdown:
            if await self._store.release(job_id, owner=owner, message=failure.message) and self._shared:
                # Another worker process takes it now; an embedded server recovers it at its next start.
                await self.enqueue(await self._store.get(job_id, history=False), retry=True)
            return
        error = {"message": failure.message, "code": "generation_failed"}
        retry_at: datetime | None = None
        # Another try may pass, or a fallback model may answer what this one could not start.
        chain = [run.record.model] if run.record.url == IMAGES_ENDPOINT else self._text.chain(run.record.model)
        fallback_left = job_may_fall_back(chain, attempts=run.record.attempts, before_output=failure.before_output)
        if failure.retryable or fallback_left:
            delay = retry_delay(
                max(1, run.record.attempts), base_s=self._settings.retry_base_s, max_s=self._settings.retry_max_s,
                rng=self._rng,
            )
            retry_at = utc_now() + timedelta(seconds=delay)
        record = await self._store.fail(job_id, owner=owner, error=error, retry_at=retry_at)
        if record is None:
            return
        if record.state is JobState.RETRYING:
            self._observer.job_retried(model=record.model)
            await self.enqueue(record, retry=True)
        else:
            self._on_finished()

    async def _heartbeat_forever(self) -> None:
        while True:
            await asyncio.sleep(self._settings.heartbeat_s)
            leases = {job_id: run.owner for job_id, run in self._runs.items() if run.owner}
            if not leases:
                continue
            try:
                held = await self._store.heartbeat(leases, lease_until=utc_now() + timedelta(seconds=self._settings.lease_s))
            except Exception:
                log.exception("heartbeat failed; leases may expire")
                continue
            for job_id in leases.keys() - held:
                run = self._runs.get(job_id)
                if run is not None and run.owner == leases[job_id]:
                    log.warning("job %s: lease lost; stopping this run", job_id)
                    run.job.cancel()
                    run.events.put_nowait(_Stop())

    async def _reclaim_forever(self) -> None:
        while True:
            await asyncio.sleep(max(0.5, self._settings.lease_s / 2))
            try:
                for record in await self._store.reclaim_expired():
                    log.warning("job %s: its worker was lost; now %s", record.id, record.state.value)
                    try:
                        if record.state is JobState.RETRYING:
                            self._observer.job_retried(model=record.model)
                            await self.enqueue(record, retry=True)
                        else:
                            self._on_finished()
                    except Exception:  # the others must still be queued; this one waits for the next start
                        log.exception("job %s: could not be queued again", record.id)
                    self.notify()
            except Exception:
                log.exception("reclaiming expired leases failed")

    def notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()
