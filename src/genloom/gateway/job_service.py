"""Async jobs as clients see them: submit (checked like a realtime request, persisted before
the 202, then queued), read, list, cancel, retry, watch. Running them under leases is the job
runner's (`job_runner.py`); delivering their webhooks the dispatcher's (`job_webhooks.py`)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from genloom.config import JobsSettings
from genloom.gateway.errors import InvalidRequest, ModelNotFound
from genloom.gateway.job_runner import JobRunner, Prepared, Request
from genloom.gateway.image_service import IMAGES_ENDPOINT, ImageRequest, ImageService
from genloom.gateway.pipeline.admit import Admit
from genloom.gateway.pipeline.call import guarded, request_roles, request_texts, with_texts
from genloom.gateway.pipeline.guard import GuardStage
from genloom.gateway.presence import WorkerPresence
from genloom.telemetry import NO_OBSERVER, Observer
from genloom.gateway.queue_io import queue_call
from genloom.gateway.rate_limit import Admission
from genloom.gateway.text_service import TextService
from genloom.gateway.webhooks import Resolver, WebhookTargetRefused, check_target, resolve_host
from genloom.jobs import Job, JobEvent, RequestClass
from genloom.queue import QueueUnavailable
from genloom.queue.protocol import JobQueue, Reservation
from genloom.jobs.records import JobRecord, JobState, JobTransition
from genloom.store.jobs import JobStore, utc_now

log = logging.getLogger("genloom.jobs")
JOB_URLS = ("/v1/chat/completions", "/v1/completions", IMAGES_ENDPOINT)


@dataclass(frozen=True, kw_only=True)
class JobSubmission:
    url: str
    body: dict[str, Any]
    request: Request
    callback_url: str | None = None
    metadata: dict[str, str] | None = None
    idempotency_key: str | None = None


@dataclass(frozen=True)
class _Checked:
    request: Request
    prepared: Prepared
    cost: float
    charge: Callable[[], Awaitable[Admission | None]]
    refund: Callable[[Admission | None], Awaitable[None]]


@dataclass(frozen=True)
class JobView:
    """A stored job plus what only the running process knows: its place in line and progress."""

    record: JobRecord
    position: int | None = None
    completion_tokens: int | None = None
    waiting_reason: str | None = None  # why a queued job does not start (no worker runs its model)


class JobService:
    def __init__(
        self,
        *,
        store: JobStore,
        queue: JobQueue,
        text: TextService,
        admit: Admit,
        settings: JobsSettings,
        guard_input: GuardStage | None = None,
        guard_output: GuardStage | None = None,
        process_id: str,
        webhooks_enabled: bool,
        webhook_allow_hosts: frozenset[str],
        on_finished: Callable[[], None] = lambda: None,
        resolve: Resolver = resolve_host,
        rng: random.Random | None = None,
        images: ImageService | None = None,
        shared_queue: bool = False,
        observer: Observer = NO_OBSERVER,
    ) -> None:
        """With `shared_queue`, jobs queued here run on any worker process: this process keeps no
        run for them, and runs the ones its own workers take (`adopt`)."""
        self._store = store
        self._shared = shared_queue
        self._images = images
        self._queue = queue
        self._text = text
        self._admit = admit
        self._guard_input = guard_input
        self._settings = settings
        self.presence = WorkerPresence()  # set by the wiring: which models have a live worker
        self._webhooks_enabled = webhooks_enabled
        self._allow_hosts = webhook_allow_hosts
        self._resolve = resolve
        self.async_rows: dict[str, int] = {}  # the most rows an async job may take, per model
        self.runner = JobRunner(
            store=store, queue=queue, text=text, images=images, settings=settings, process_id=process_id,
            on_finished=on_finished, rng=rng, shared_queue=shared_queue, observer=observer, guard_output=guard_output,
        )

    # The runner's lifecycle, as the process drives it.
    @property
    def running(self) -> int:
        return self.runner.running

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self.runner.attach(loop)

    async def start(self) -> None:
        await self.runner.start()

    async def stop(self, timeout_s: float = 10.0) -> None:
        await self.runner.stop(timeout_s)

    async def sweep(self, *, settled_s: float) -> int:
        return await self.runner.sweep(settled_s=settled_s)

    def adopt(self, job: Job) -> Callable[[JobEvent], None]:
        return self.runner.adopt(job)

    async def submit(self, submission: JobSubmission) -> tuple[JobView, bool]:
        """Validate, persist, then queue; (record, False) when the Idempotency-Key names an existing job."""
        checked = await self._check(submission.request)
        request = checked.request
        submission = replace(submission, request=request)  # its version (and seed) fixed: a recovered job runs alike
        rows = self.async_rows.get(request.model)
        if rows is not None and request.n > rows:
            raise InvalidRequest(f"n must be at most {rows} for a job on model {request.model}", param="body.n")
        if submission.callback_url is not None:
            await self._check_callback(submission.callback_url)
        place = await queue_call(
            self._queue, self._queue.reserve, model=request.model, request_class=RequestClass.ASYNC, tenant=request.tenant
        )
        admission, created = None, False
        try:
            # Charged at submission for the most the job can use (it runs later, so it is not settled
            # on use); a job refused or replayed by its Idempotency-Key is given its charge back.
            admission = await checked.charge()
            view, created = await self._store_and_queue(submission, checked.prepared, place, utc_now(), checked.cost)
            return view, created
        finally:
            await queue_call(self._queue, self._queue.release, place)
            if not created:
                await checked.refund(admission)

    async def _check(self, request: Request) -> _Checked:
        """The request against its version, through the input guard: what it costs and how it is charged."""
        if isinstance(request, ImageRequest):
            images = self._image_service()
            prepared = images.prepare(request)
            await images.check_prompt(request)
            # Its version and seed fixed: a retry or a recovery makes the same pictures.
            request = replace(request, model=prepared.model, seed=prepared.task.seed)
            charged = request
            return _Checked(request, prepared, images.cost(prepared), lambda: images.admit(charged, prepared), images.refund)
        text = self._text.route(request)
        if self._guard_input is not None:  # a job's redacted text stays redacted: nothing is kept to restore it
            param = "messages" if text.messages is not None else "prompt"
            checked = await self._guard_input.check(request_texts(text), who=guarded(text), roles=request_roles(text), param=param)
            if checked.texts != request_texts(text):
                text = with_texts(text, checked.texts)
        prepared_text = self._text.prepare(text)

        async def refund(admission: Admission | None) -> None:
            await self._admit.settle(admission, tokens_used=0)

        return _Checked(
            text, prepared_text, self._text.cost(prepared_text, text.n), lambda: self._admit.charge(text, prepared_text), refund,
        )

    def _image_service(self) -> ImageService:
        if self._images is None:
            raise ModelNotFound("an image model", [])
        return self._images

    async def _store_and_queue(
        self, submission: JobSubmission, prepared: Prepared, place: Reservation, now: datetime, cost: float
    ) -> tuple[JobView, bool]:
        request = submission.request
        record = JobRecord(
            id=f"job_{uuid.uuid4().hex}", tenant=request.tenant, tier=request.tier.value, url=submission.url,
            body=submission.body, request=request.to_record(), model=request.model, cost=cost, state=JobState.QUEUED,
            max_attempts=self._settings.max_attempts, request_hash=_request_hash(submission),
            callback_url=submission.callback_url, metadata=submission.metadata,
            idempotency_key=submission.idempotency_key, created_at=now, updated_at=now,
        )
        stored, created = await self._store.create(record, idempotency_window_s=self._settings.idempotency_window_s)
        if created:
            try:
                await self.runner.enqueue(stored, prepared)
            except QueueUnavailable as e:
                if not self._shared:
                    raise
                # Stored is accepted: the sweep queues it once the queue's Redis answers again.
                log.warning("job %s is stored but not queued yet: %s", stored.id, e)
            await queue_call(self._queue, self._queue.release, place)  # queued now: it counts in the queue's own depth
            self.runner.notify()
        return await self._view(stored), created

    def queue_status(self) -> dict[str, Any]:
        """What operators see of the queue: its backend, waiting work per model and class, and
        the jobs given up after too many deliveries (shared queue only)."""
        depths = self._queue.depths()
        return {
            "backend": self._queue.backend,
            "models": {m: {c.value: n for c, n in by_class.items()} for m, by_class in sorted(depths.items())},
            "dead_letters": self._queue.dead_letters(),
        }

    async def get(self, job_id: str, *, tenant: str | None) -> JobView:
        return await self._view(await self._store.get(job_id, tenant=tenant))

    async def list(
        self, *, tenant: str | None, state: JobState | None, limit: int, after: str | None, model: str | None = None,
    ) -> tuple[list[JobView], bool]:
        """One page, newest first, and whether more follow."""
        records = await self._store.list(tenant=tenant, state=state, limit=limit + 1, after=after, model=model)
        return [await self._view(r) for r in records[:limit]], len(records) > limit

    async def cancel(self, job_id: str, *, tenant: str | None) -> JobView:
        record = await self._store.cancel(job_id, tenant=tenant)
        await queue_call(self._queue, self._queue.remove, job_id)
        self.runner.stop_job(job_id)
        self.runner.notify()
        return await self._view(record)

    async def retry(self, job_id: str, *, tenant: str | None) -> JobView:
        """Back to the queue by hand: admitted like a new job, so retries cannot overfill the queue."""
        current = await self._store.get(job_id, tenant=tenant, history=False)
        place = await queue_call(
            self._queue, self._queue.reserve, model=current.model, request_class=RequestClass.ASYNC, tenant=current.tenant
        )
        try:
            record = await self._store.retry(job_id, tenant=tenant, extra_attempts=self._settings.max_attempts)
            await self.runner.enqueue(record, retry=True)
        finally:
            await queue_call(self._queue, self._queue.release, place)
        self.runner.notify()
        return await self._view(record)

    async def transitions(self, job_id: str, *, tenant: str | None) -> AsyncIterator[JobTransition | JobView]:
        """Every state change of a job as it happens, with progress views between; ends at a terminal state."""
        record = await self._store.get(job_id, tenant=tenant, history=False)
        seen, tokens = 0, None
        while True:
            changed = self.runner.changed
            batch = await self._store.transitions_since(record.id, seen)
            for seen, transition in batch:
                yield transition
            # A terminal state ends the stream only if it is the job's latest (a retried job goes on).
            if batch and batch[-1][1].state.terminal:
                current = await self._store.get(job_id, tenant=tenant, history=False)
                if current.state.terminal:
                    return
            running_here, progress = self.runner.progress(job_id)
            if progress is not None and progress != tokens:
                tokens = progress
                yield await self._view(await self._store.get(job_id, tenant=tenant, history=False))
            # Another process (a scaled-out worker) does not wake us: look again within a second.
            with suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout=0.25 if running_here else 1.0)

    async def _check_callback(self, url: str) -> None:
        if not self._webhooks_enabled:
            raise InvalidRequest(
                "webhooks are not configured on this server: the operator must set GENLOOM_WEBHOOK_SECRET",
                "callback_url",
            )
        try:
            await check_target(url, allow_hosts=self._allow_hosts, resolve=self._resolve)
        except WebhookTargetRefused as e:
            raise InvalidRequest(str(e), "callback_url") from e

    async def _view(self, record: JobRecord) -> JobView:
        if record.state in (JobState.QUEUED, JobState.RETRYING):
            try:
                position = await queue_call(self._queue, self._queue.position, record.id)
            except QueueUnavailable:  # the stored state is the answer; the place in line is unknown now
                position = None
            reason = None
            if not self.presence.has_worker(record.model):
                reason = f"no worker is running model {record.model}; the job waits until one starts"
            return JobView(record, position=position, waiting_reason=reason)
        _, progress = self.runner.progress(record.id)
        if record.state is JobState.PROCESSING and progress is not None:
            return JobView(record, completion_tokens=progress)
        return JobView(record)

def _request_hash(submission: JobSubmission) -> str:
    """Identifies 'the same request' for Idempotency-Key reuse."""
    canonical = json.dumps(
        [submission.url, submission.body, submission.callback_url, submission.metadata, submission.request.tier.value],
        sort_keys=True, separators=(",", ":"), default=str,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()
