"""Text generation as the API sees it: validate, queue, stream events back, record the outcome."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from genloom.config import ApiSettings, ClassificationSettings
from genloom.gateway.breaker import CircuitBreaker
from genloom.gateway.events import DisconnectProbe, next_event, thread_emitter
from genloom.gateway.errors import GenerationFailed, InvalidRequest, ModelNotFound, NotReady
from genloom.gateway.rate_limit import Admission, Limits, RateLimiter
from genloom.gateway.queue_io import queue_call
from genloom.gateway.readiness import Readiness
from genloom.gateway.routing import Router
from genloom.gateway.versions import not_loaded
from genloom.queue import (
    ChoiceFinished,
    Job,
    JobEvent,
    JobFailed,
    JobStarted,
    PromptCounted,
    QueueClosed,
    RequestClass,
    Tier,
    TokenEvent,
)
from genloom.queue.backoff import retry_delay
from genloom.queue.protocol import JobQueue
from genloom.registry import UnknownModel, model_name
from genloom.registry.catalog import Resolution
from genloom.registry.rollout import Outcome
from genloom.registry.registry import ModelRegistry
from genloom.runtimes.sampling import SamplingParams
from genloom.runtimes.text import PromptError, TextRuntime
from genloom.store import RequestEntry, RequestLog, RequestStatus
from genloom.worker import TextTask
from genloom.worker.remote_worker import RemoteTask



@dataclass(frozen=True)
class TextRequest:
    """A validated generation request. `messages` for chat, `prompt` for completions."""

    endpoint: str
    model: str
    params: SamplingParams
    n: int = 1
    messages: list[dict[str, str]] | None = None
    prompt: str | None = None
    max_tokens_given: bool = True
    tier: Tier = Tier.FREE
    tenant: str = "default"
    key_id: str | None = None  # the API key charged for it; None when auth is disabled
    limits: dict[str, int] = field(default_factory=dict)  # the tenant's rate limits and quotas
    key_limits: dict[str, int] = field(default_factory=dict)  # the API key's own
    stream: bool = False  # the client reads tokens as they come (a remote model is then streamed too)
    user: str | None = None  # OpenAI's `user`: what a rollout sticky by user hashes
    resolution: Resolution | None = None  # set by `route`: the version, and the rollout arm if any
    background: bool = False  # queued as async work (a shadow mirror): it never delays realtime requests
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def to_record(self) -> dict[str, Any]:
        """A JSON-ready form, so a stored job can be run again without the API layer."""
        params = asdict(self.params) | {"stop": list(self.params.stop)}
        return {
            "endpoint": self.endpoint, "model": self.model, "params": params, "n": self.n,
            "messages": self.messages, "prompt": self.prompt, "max_tokens_given": self.max_tokens_given,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any], *, id: str, tier: Tier, tenant: str) -> TextRequest:
        params = dict(record["params"]) | {"stop": tuple(record["params"]["stop"])}
        return cls(
            endpoint=record["endpoint"], model=record["model"], params=SamplingParams(**params), n=record["n"],
            messages=record["messages"], prompt=record["prompt"], max_tokens_given=record["max_tokens_given"],
            tier=tier, tenant=tenant, id=id,
        )


@dataclass(frozen=True)
class PreparedText:
    """A request checked against one model: what to queue for it and what it may cost."""

    model: str
    params: SamplingParams
    prompt_tokens: int  # counted by a local model's tokenizer; estimated for a remote one
    payload: TextTask | RemoteTask
    prompt_ids: list[int] = field(default_factory=list)  # local models only


@dataclass(frozen=True)
class RemoteModel:
    """A model served by a remote OpenAI-compatible upstream (its worker holds the connection)."""

    name: str
    max_context: int
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def info(self) -> RemoteModel:  # the same card fields as a local runtime's info
        return self

    parameters = None


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Choice:
    index: int
    text: str = ""
    tokens: int = 0
    finish_reason: str | None = None


@dataclass
class Completion:
    id: str
    model: str
    created: int
    choices: list[Choice]
    prompt_tokens: int
    rate_limit_headers: dict[str, str] = field(default_factory=dict)

    @property
    def usage(self) -> Usage:
        return Usage(self.prompt_tokens, sum(c.tokens for c in self.choices))

    def openai_body(self, endpoint: str) -> dict[str, Any]:
        """The non-streaming response body OpenAI's API gives for `endpoint`."""
        if endpoint == "/v1/chat/completions":
            obj = "chat.completion"
            choices = [
                {"index": c.index, "message": {"role": "assistant", "content": c.text}, "logprobs": None,
                 "finish_reason": c.finish_reason}
                for c in self.choices
            ]
        else:
            obj = "text_completion"
            choices = [
                {"index": c.index, "text": c.text, "logprobs": None, "finish_reason": c.finish_reason}
                for c in self.choices
            ]
        u = self.usage
        usage = {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens, "total_tokens": u.total_tokens}
        return {
            "id": self.id, "object": obj, "created": self.created, "model": model_name(self.model),
            "system_fingerprint": self.model, "choices": choices, "usage": usage,
        }


class TextService:
    def __init__(
        self,
        *,
        runtimes: dict[str, TextRuntime],
        queue: JobQueue,
        request_log: RequestLog,
        readiness: Readiness,
        settings: ApiSettings,
        classification: ClassificationSettings,
        max_batch_size: int,
        limiter: RateLimiter | None = None,
        remotes: dict[str, RemoteModel] | None = None,
        fallbacks: dict[str, list[str]] | None = None,
        breakers: dict[str, CircuitBreaker] | None = None,
        router: Router | None = None,
        max_attempts_per_model: int = 1,
        retry_delay_s: tuple[float, float] = (0.05, 1.0),
        rng: random.Random | None = None,
        registry: ModelRegistry | None = None,
        on_rollout_outcome: Callable[[Resolution, Outcome], None] | None = None,
        on_shadow: Callable[[TextRequest, Completion], None] | None = None,
    ) -> None:
        self.on_shadow = on_shadow
        self._router = router
        self._registry = registry
        self.on_rollout_outcome = on_rollout_outcome
        self.model_rows: dict[str, int] = {}  # the most rows (choices) a job may take, per model
        self._max_attempts = max_attempts_per_model
        self._retry_delay_s = retry_delay_s
        self._rng = rng or random.Random()
        self._runtimes = runtimes
        self._remotes = remotes if remotes is not None else {}
        self.fallbacks: dict[str, list[str]] = fallbacks if fallbacks is not None else {}
        self.breakers = breakers if breakers is not None else {}
        self._classification = classification
        self._limiter = limiter
        self._queue = queue
        self._log = request_log
        self._readiness = readiness
        self._settings = settings
        self._max_batch_size = max_batch_size
        self.in_flight = 0

    async def queued(self) -> int:
        """Requests and jobs waiting, for every model (the whole shared line when scaled out)."""
        return await queue_call(self._queue, self._queue.depth)

    def models(self) -> list[TextRuntime | RemoteModel]:
        return [*self._runtimes.values(), *self._remotes.values()]

    async def complete(self, request: TextRequest, disconnected: DisconnectProbe) -> Completion:
        """Run to the end and return every choice."""
        completion: Completion | None = None
        async for event, completion in self.stream(request, disconnected):
            pass
        assert completion is not None
        return completion

    async def stream(
        self, request: TextRequest, disconnected: DisconnectProbe
    ) -> AsyncIterator[tuple[JobEvent | None, Completion]]:
        """Yield (event, completion so far) as tokens arrive; the first item has event None and
        is yielded once the request is accepted, so errors surface before a stream starts.

        The request's model answers if it can; when it fails before producing anything (or its
        breaker is open), the next model of its fallback chain is asked instead, and
        `completion.model` says which one answered."""
        request = self.route(request)
        prepared = self.prepare(request)
        admission = await self.admit(request, prepared)
        created = time.time()
        started = time.monotonic()
        completion = Completion(
            id=request.id,
            model=request.model,
            created=int(created),
            choices=[Choice(i) for i in range(request.n)],
            prompt_tokens=prepared.prompt_tokens,
            rate_limit_headers=dict(admission.headers) if admission else {},
        )
        status, error, first_token_at, accepted = RequestStatus.FAILED, None, None, False
        job: Job | None = None
        failures: list[str] = []
        skip_rest_of: set[str] = set()  # models that failed in a way another try would not fix
        tries: Counter[str] = Counter()
        last_failed: str | None = None
        pending_verdict: CircuitBreaker | None = None  # a breaker that let a call through and has not heard back
        client_fault = False  # an upstream refused the request itself: no verdict on the version
        try:
            for target in self._attempts(request):
                if target in skip_rest_of:
                    continue
                if last_failed == target:  # a second try on the same model waits a little first
                    await asyncio.sleep(self._backoff(tries[target]))
                breaker = self.breakers.get(target)
                if breaker is not None and not breaker.allow():
                    failures.append(f"{target}: skipped, its circuit breaker is open")
                    continue
                pending_verdict = breaker
                if target != request.model:
                    try:
                        prepared = self.prepare(replace(request, model=target))
                    except (InvalidRequest, ModelNotFound) as e:
                        failures.append(f"{target}: {e}")
                        if pending_verdict is not None:
                            pending_verdict.release()
                            pending_verdict = None
                        continue
                events: asyncio.Queue[JobEvent] = asyncio.Queue()
                job = self._job(request, prepared, events)
                try:
                    await queue_call(self._queue, self._queue.submit, job)
                except QueueClosed as e:
                    raise NotReady("the server is shutting down; retry on another replica") from e
                except Exception as e:
                    status, error = RequestStatus.REJECTED, str(e)
                    raise
                if not accepted:
                    accepted = True
                    self.in_flight += 1
                    yield None, completion
                open_choices = request.n
                while open_choices:
                    event = await next_event(events, disconnected)
                    if event is None:
                        status = RequestStatus.CANCELLED
                        return
                    if isinstance(event, JobFailed):
                        error = event.message
                        if breaker is not None:
                            # A 400 from the upstream means it is working: the request is at fault.
                            (breaker.record_success if event.rejected else breaker.record_failure)()
                            pending_verdict = None
                        if event.shutdown:
                            status = RequestStatus.ABORTED
                            raise NotReady(f"{event.message}; retry on another replica")
                        if event.rejected:
                            client_fault = True
                            raise InvalidRequest(event.message)
                        if event.before_output and first_token_at is None:
                            failures.append(f"{target}: {event.message}")
                            last_failed, tries[target] = target, tries[target] + 1
                            if not event.retryable:
                                skip_rest_of.add(target)
                            break  # try again, or the next model
                        raise GenerationFailed(event.message)
                    if isinstance(event, JobStarted):
                        continue
                    if isinstance(event, PromptCounted):
                        completion.prompt_tokens = event.prompt_tokens
                        continue
                    if first_token_at is None:
                        first_token_at = time.monotonic()
                        completion.model = target
                        if breaker is not None:
                            breaker.record_success()
                            pending_verdict = None
                    choice = completion.choices[event.index]
                    choice.tokens = event.completion_tokens
                    if isinstance(event, TokenEvent):
                        choice.text += event.delta
                    elif isinstance(event, ChoiceFinished):
                        choice.finish_reason = event.finish_reason
                        open_choices -= 1
                    yield event, completion
                else:
                    status = RequestStatus.COMPLETED
                    return
                job.cancel()
            error = "; ".join(failures)
            if not accepted:
                raise NotReady(f"no model could take this request now: {error}")
            raise GenerationFailed(f"no model in the fallback chain answered: {error}")
        except (asyncio.CancelledError, GeneratorExit):
            status = RequestStatus.CANCELLED
            raise
        finally:
            if pending_verdict is not None:  # cancelled, refused by the queue, or ended before a verdict
                pending_verdict.release()
            if job is not None:
                job.cancel()
                await queue_call(self._queue, self._queue.remove, job.id)
            if admission is not None:
                # Charged the estimate up front; settle on what the request really used.
                await self.settle(admission, tokens_used=completion.usage.total_tokens if accepted else 0)
            if accepted:
                self.in_flight -= 1
            self._record(request, prepared.params, completion, status, error, created, started, first_token_at)
            if accepted and not client_fault:
                self._rollout_outcome(request, completion, status, started, first_token_at)
            shadow = request.resolution.shadow if request.resolution else None
            if shadow and status is RequestStatus.COMPLETED and self.on_shadow is not None:
                self.on_shadow(request, completion)  # runs on its own; this answer does not wait for it

    def _rollout_outcome(
        self, request: TextRequest, completion: Completion, status: RequestStatus, started: float,
        first_token_at: float | None,
    ) -> None:
        """Tell the rollout how its arm did: the candidate failed when another version answered."""
        r = request.resolution
        if r is None or r.rollout is None or r.arm is None or self.on_rollout_outcome is None:
            return
        if status not in (RequestStatus.COMPLETED, RequestStatus.FAILED):
            return  # cancelled or aborted: says nothing about the version
        now = time.monotonic()
        self.on_rollout_outcome(r, Outcome(
            arm=r.arm, ok=status is RequestStatus.COMPLETED and completion.model == r.key,
            latency_ms=(now - started) * 1000, ttft_ms=(first_token_at - started) * 1000 if first_token_at else None,
            at=time.time(), output_chars=sum(len(c.text) for c in completion.choices),
        ))

    def route(self, request: TextRequest) -> TextRequest:
        """The request with its model resolved to the version that serves it: an alias or a
        tiered route becomes a model name, and the registry picks its version (and rollout arm)."""
        if request.resolution is not None:
            return request
        if self._router is not None and request.model in self._router.names():
            prompt = json.dumps(request.messages) if request.messages is not None else (request.prompt or "")
            route = self._router.route(request.model, prompt=prompt, max_tokens=request.params.max_tokens)
            request = replace(request, model=route.model)
        if self._registry is None:
            return request
        try:
            resolution = self._registry.catalog.resolve(
                request.model, request_id=request.id, user=request.user, tenant=request.tenant
            )
        except UnknownModel as e:
            raise ModelNotFound(request.model, self._registry.catalog.names()) from e
        if resolution.stable and resolution.key not in self._runtimes and resolution.key not in self._remotes:
            resolution = Resolution(resolution.stable, resolution.name)  # the candidate is not loaded here yet
        return replace(request, model=resolution.key, resolution=resolution)

    def served(self, ref: str) -> str:
        """The version a fallback named by `ref` runs on now (unknown names stay, and fail in prepare)."""
        if self._registry is None:
            return ref
        try:
            return self._registry.catalog.version(ref).key
        except UnknownModel:
            return ref

    def chain(self, model: str) -> list[str]:
        """The model, then its fallbacks, in the order they are asked."""
        return [model, *(self.served(f) for f in self.fallbacks.get(model, []))]

    def _attempts(self, request: TextRequest) -> list[str]:
        """The versions to try in order: each up to max_attempts_per_model times, then its
        fallbacks; a rollout's candidate falls back to the stable version's chain."""
        resolution = request.resolution
        chain = [request.model] if resolution and resolution.stable else self.chain(request.model)
        if resolution is not None and resolution.stable:
            chain += self.chain(resolution.stable)
        return [m for m in chain for _ in range(self._max_attempts)]

    def _backoff(self, attempt: int) -> float:
        base_s, max_s = self._retry_delay_s
        return retry_delay(attempt, base_s=base_s, max_s=max_s, rng=self._rng)

    def _job(self, request: TextRequest, prepared: PreparedText, events: asyncio.Queue[JobEvent]) -> Job:
        return Job(
            id=request.id,
            model=prepared.model,
            payload=prepared.payload,
            emit=thread_emitter(events),
            rows=request.n,
            request_class=RequestClass.ASYNC if request.background else RequestClass.REALTIME,
            tier=request.tier,
            tenant=request.tenant,
            cost=self.cost(prepared, request.n),
        )

    async def admit(self, request: TextRequest, prepared: PreparedText) -> Admission | None:
        """Charge the caller's rate limits with the most this request can use (429 when over)."""
        if self._limiter is None:
            return None
        estimate = (prepared.prompt_tokens + prepared.params.max_tokens) * request.n
        return await self._limiter.check(
            key_id=request.key_id or f"tenant:{request.tenant}", tenant_id=request.tenant,
            key_limits=Limits(**request.key_limits),
            tenant_limits=Limits(**request.limits), tokens=estimate,
        )

    async def settle(self, admission: Admission, *, tokens_used: int) -> None:
        if self._limiter is not None:
            await self._limiter.settle(admission, tokens_used=tokens_used)

    def cost(self, prepared: PreparedText, n: int) -> float:
        """What the scheduler charges a tenant for this request: prompt and completion tokens."""
        c = self._classification
        return max(1.0, n * (prepared.prompt_tokens * c.prompt_token_cost + prepared.params.max_tokens * c.completion_token_cost))

    def check_model(self, model: str, *, accepted: bool = False) -> None:
        """503 while not ready (unless the work was `accepted` before: a job queued again), 404
        for a model this server does not serve; nothing more costly."""
        if not accepted and not self._readiness.ready:
            raise NotReady(f"the server is not ready: {self._readiness.reason}")
        if model not in self._runtimes and model not in self._remotes:
            if self._registry is not None and model in self._registry.catalog.versions:
                raise not_loaded(self._registry, model)
            known = self._registry.catalog.names() if self._registry is not None else sorted([*self._runtimes, *self._remotes])
            raise ModelNotFound(model, known)

    def prepare(self, request: TextRequest, *, accepted: bool = False) -> PreparedText:
        """Check a request against its model: 404 for an unknown model, 400 for what cannot fit.
        `accepted`: a stored job queued again, which a draining server still puts back."""
        self.check_model(request.model, accepted=accepted)
        runtime = self._runtimes.get(request.model)
        # A job needing more rows than its model ever frees would wait at the head of its queue forever.
        rows = self.model_rows.get(request.model, self._max_batch_size)
        limit = min(self._settings.max_n, rows)
        if request.n > limit:
            raise InvalidRequest(f"n must be at most {limit} for model {request.model}", param="n")
        if runtime is not None:
            return self._prepare_local(request, runtime)
        return self._prepare_remote(request, self._remotes[request.model])

    def _prepare_local(self, request: TextRequest, runtime: TextRuntime) -> PreparedText:
        try:
            if request.messages is not None:
                prompt_ids = runtime.encode_chat(request.messages)
            else:
                prompt_ids = runtime.encode_completion(request.prompt or "")
        except PromptError as e:
            raise InvalidRequest(str(e), param="messages" if request.messages is not None else "prompt") from e
        params = self._fit(request, runtime.name, runtime.max_context, len(prompt_ids))
        task = TextTask(prompt_ids=tuple(prompt_ids), params=params, n=request.n)
        return PreparedText(runtime.name, params, len(prompt_ids), task, prompt_ids)

    def _prepare_remote(self, request: TextRequest, remote: RemoteModel) -> PreparedText:
        text = json.dumps(request.messages) if request.messages is not None else (request.prompt or "")
        prompt_tokens = len(text) // 4 + 1  # an estimate for limits and scheduling; the upstream counts exactly
        params = self._fit(request, remote.name, remote.max_context, prompt_tokens)
        body: dict[str, Any] = {
            "max_tokens": params.max_tokens, "temperature": params.temperature, "top_p": params.top_p, "n": request.n,
            "stream_options": {"include_usage": True},
        }
        if params.stop:
            body["stop"] = list(params.stop)
        if params.seed is not None:
            body["seed"] = params.seed
        if request.messages is not None:
            task = RemoteTask(path="/chat/completions", body=body | {"messages": request.messages}, stream=request.stream)
        else:
            task = RemoteTask(path="/completions", body=body | {"prompt": request.prompt or ""}, stream=request.stream)
        return PreparedText(remote.name, params, prompt_tokens, task)

    def _fit(self, request: TextRequest, model: str, max_context: int, prompt_tokens: int) -> SamplingParams:
        room = max_context - prompt_tokens
        params = request.params
        if not request.max_tokens_given:
            return replace(params, max_tokens=max(1, min(self._settings.default_max_tokens, room)))
        if params.max_tokens > room:
            raise InvalidRequest(
                f"the prompt has {prompt_tokens} tokens and max_tokens is {params.max_tokens}, but model "
                f"{model} takes at most {max_context} tokens in all; lower max_tokens to {room} or less",
                param="max_tokens",
            )
        return params

    def _record(
        self,
        request: TextRequest,
        params: SamplingParams,
        completion: Completion,
        status: RequestStatus,
        error: str | None,
        created: float,
        started: float,
        first_token_at: float | None,
    ) -> None:
        now = time.monotonic()
        params_record: dict[str, Any] = asdict(params) | {"n": request.n}
        params_record["stop"] = list(params.stop)
        self._log.record(
            RequestEntry(
                id=request.id,
                endpoint=request.endpoint,
                model=request.model,
                params=params_record,
                prompt=request.messages if request.messages is not None else request.prompt,
                output=[c.text for c in completion.choices],
                prompt_tokens=completion.prompt_tokens,
                completion_tokens=completion.usage.completion_tokens,
                latency_ms=round((now - started) * 1000, 3),
                ttft_ms=round((first_token_at - started) * 1000, 3) if first_token_at else None,
                status=status,
                error=error,
                created_at=datetime.fromtimestamp(created, UTC),
                finished_at=datetime.now(UTC),
            )
        )
