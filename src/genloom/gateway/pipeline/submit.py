"""Stage 5, submit and await: queue the request on its version and read the worker's events.
When a model fails before its first token, the fallback plan (`gateway/fallback.py`) says what
to try next; after the first token a failure ends the answer. Yields None once a queue has
accepted the request (so errors before that stay HTTP errors), then every event."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace

from genloom.gateway.breaker import CircuitBreaker
from genloom.gateway.errors import GenerationFailed, InvalidRequest, ModelNotFound, NoWorker, NotReady
from genloom.gateway.events import DisconnectProbe, WaitBounds, next_event, thread_emitter
from genloom.gateway.fallback import Attempt, FallbackPlan
from genloom.gateway.pipeline.call import TextCall
from genloom.gateway.presence import WorkerPresence
from genloom.gateway.queue_io import queue_call, withdraw
from genloom.gateway.text_service import Choice, Completion, PreparedText, TextRequest, TextService
from genloom.jobs import ChoiceFinished, Job, JobEvent, JobFailed, JobStarted, RequestClass, TokenEvent, TraceContext
from genloom.queue import QueueClosed
from genloom.queue.backoff import retry_delay
from genloom.queue.protocol import JobQueue
from genloom.store import RequestStatus
from genloom.telemetry import Observer


class Submit:
    name = "submit"

    def __init__(
        self, *, text: TextService, queue: JobQueue, breakers: Mapping[str, CircuitBreaker], attempts_per_model: int,
        retry_delay_s: tuple[float, float], observer: Observer, presence: WorkerPresence, wait_bounds: WaitBounds,
        rng: random.Random | None = None,
    ) -> None:
        self._text = text
        self._queue = queue
        self._breakers = breakers
        self._attempts_per_model = attempts_per_model
        self._retry_delay_s = retry_delay_s
        self._observer = observer
        self._presence = presence
        self._wait_bounds = wait_bounds
        self._rng = rng or random.Random()

    def chain(self, request: TextRequest) -> list[str]:
        """The versions to try in order: the request's, then its fallbacks; a rollout's candidate
        is followed by the stable version's chain instead of its own."""
        resolution = request.resolution
        if resolution is not None and resolution.stable:
            return [request.model, *self._text.chain(resolution.stable)]
        return self._text.chain(request.model)

    async def run(self, call: TextCall, disconnected: DisconnectProbe) -> AsyncIterator[JobEvent | None]:
        request, prepared = call.request, call.prepared
        assert prepared is not None
        call.completion = Completion(
            id=request.id, model=request.model, created=int(call.created), choices=[Choice(i) for i in range(request.n)],
            prompt_tokens=prepared.prompt_tokens,
            rate_limit_headers=dict(call.admission.headers) if call.admission else {},
            logprobs=request.params.logprobs, top_logprobs=request.params.top_logprobs,
            echo=(request.prompt or "") if request.echo else "",
            tools=replace(request.tools, parser=prepared.tool_parser) if request.tools else None,
        )
        plan = FallbackPlan(
            chain=self.chain(request), attempts_per_model=self._attempts_per_model, breakers=self._breakers,
            backoff=self._backoff,
        )
        previous: str | None = None
        no_worker: NoWorker | None = None
        tried = False
        try:
            while (attempt := plan.next()) is not None:
                if attempt.delay_s:
                    await asyncio.sleep(attempt.delay_s)
                if attempt.model != prepared.model:
                    try:
                        prepared = self._text.prepare(replace(request, model=attempt.model))
                    except (InvalidRequest, ModelNotFound, NotReady) as e:
                        plan.unusable(attempt, str(e))
                        continue
                if not self._presence.has_worker(attempt.model):
                    no_worker = no_worker or NoWorker(attempt.model, self._presence.retry_after_s)
                    plan.unusable(attempt, "no worker is running it")
                    continue
                tried = True
                if previous is not None and previous != attempt.model:
                    self._observer.fallback(from_model=previous, to_model=attempt.model)
                previous = attempt.model
                async for event in self._attempt(call, plan, attempt, prepared, disconnected):
                    yield event
                if call.status is not RequestStatus.FAILED:  # completed, or the client left
                    return
            call.error = "; ".join(plan.failures)
            if no_worker is not None and not tried:
                raise no_worker
            if not call.accepted:
                raise NotReady(f"no model could take this request now: {call.error}")
            raise GenerationFailed(f"no model in the fallback chain answered: {call.error}")
        finally:
            plan.abandon()
            if call.job is not None:
                await withdraw(self._queue, call.job)

    async def _attempt(
        self, call: TextCall, plan: FallbackPlan, attempt: Attempt, prepared: PreparedText, disconnected: DisconnectProbe,
    ) -> AsyncIterator[JobEvent | None]:
        """One try on one model. Returns with `call.status` COMPLETED, CANCELLED or ABORTED when
        the request is over; with FAILED and `call.error` set when the next attempt may follow."""
        request, completion = call.request, call.completion
        assert completion is not None
        events: asyncio.Queue[JobEvent] = asyncio.Queue()
        if call.job is not None:
            call.job.cancel()
        call.job = job = self._job(request, prepared, events, call.trace)
        try:
            await queue_call(self._queue, self._queue.submit, job)
        except QueueClosed as e:
            plan.abandon()
            raise NotReady("the server is shutting down; retry on another replica") from e
        except Exception as e:
            plan.abandon()
            call.status, call.error = RequestStatus.REJECTED, str(e)
            raise
        if not call.accepted:
            call.accepted = True
            yield None
        open_choices = request.n
        bound = self._wait_bounds.silence_s(request.tier) if job.request_class is RequestClass.REALTIME else None
        started = False
        while open_choices:
            try:
                event = await next_event(events, disconnected, silence_s=bound)
            except TimeoutError:
                if started:  # a model that goes silent mid-answer counts against its breaker
                    plan.broke(attempt)
                else:
                    plan.abandon()
                timed_out = self._wait_bounds.timed_out(attempt.model, request.tier, started=started)
                call.status, call.error = RequestStatus.FAILED, str(timed_out)
                raise timed_out from None
            if event is None:
                call.status = RequestStatus.CANCELLED
                return
            if isinstance(event, JobFailed):
                call.error = event.message
                if event.rejected:  # a 400 from the upstream: it works, the request is at fault
                    plan.answered(attempt)
                    call.client_fault = True
                    raise InvalidRequest(event.message)
                if event.shutdown:
                    plan.abandon()
                    call.status = RequestStatus.ABORTED
                    raise NotReady(f"{event.message}; retry on another replica")
                if event.before_output and call.first_token_at is None:
                    plan.failed(attempt, event.message, retryable=event.retryable)
                    job.cancel()
                    return  # the plan decides what comes next
                plan.broke(attempt)
                raise GenerationFailed(event.message)
            if isinstance(event, JobStarted):
                started = True
                self._observer.queue_wait(
                    model=attempt.model, request_class=job.request_class.value, tier=request.tier.value,
                    seconds=max(0.0, time.monotonic() - job.enqueued_at),
                )
                continue
            if call.first_token_at is None and isinstance(event, (TokenEvent, ChoiceFinished)):
                call.first_token_at = time.monotonic()
                completion.model = attempt.model
                plan.answered(attempt)
                self._observer.first_token(model=attempt.model, seconds=call.first_token_at - call.started)
            if completion.apply(event):
                open_choices -= 1
            yield event
        call.status = RequestStatus.COMPLETED

    def _job(
        self, request: TextRequest, prepared: PreparedText, events: asyncio.Queue[JobEvent], trace: TraceContext | None,
    ) -> Job:
        return Job(
            id=request.id, model=prepared.model, payload=prepared.payload, emit=thread_emitter(events), rows=request.n,
            request_class=RequestClass.ASYNC if request.background else RequestClass.REALTIME,
            tier=request.tier, tenant=request.tenant, cost=self._text.cost(prepared, request.n),
            trace=None if trace is None else replace(trace, queued_ns=time.time_ns()),  # this attempt's wait starts now
        )

    def _backoff(self, tries: int) -> float:
        base_s, max_s = self._retry_delay_s
        return retry_delay(tries, base_s=base_s, max_s=max_s, rng=self._rng)
