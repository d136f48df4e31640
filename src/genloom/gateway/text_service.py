"""Text generation as the API sees it: validate, queue, stream events back, record the outcome."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from genloom.config import ApiSettings, ClassificationSettings
from genloom.gateway.errors import GenerationFailed, InvalidRequest, ModelNotFound, NotReady
from genloom.gateway.rate_limit import Admission, Limits, RateLimiter
from genloom.gateway.readiness import Readiness
from genloom.queue import (
    ChoiceFinished,
    InMemoryQueue,
    Job,
    JobEvent,
    JobFailed,
    JobStarted,
    QueueClosed,
    RequestClass,
    Tier,
    TokenEvent,
)
from genloom.runtimes.sampling import SamplingParams
from genloom.runtimes.text import PromptError, TextRuntime
from genloom.store import RequestEntry, RequestLog, RequestStatus
from genloom.worker import TextTask

DisconnectProbe = Callable[[], Awaitable[bool]]
_PROBE_INTERVAL_S = 0.25


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
    """A request checked against its model: the prompt as token ids and the final parameters."""

    runtime: TextRuntime
    prompt_ids: list[int]
    params: SamplingParams


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
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model, "choices": choices, "usage": usage}


class TextService:
    def __init__(
        self,
        *,
        runtimes: dict[str, TextRuntime],
        queue: InMemoryQueue,
        request_log: RequestLog,
        readiness: Readiness,
        settings: ApiSettings,
        classification: ClassificationSettings,
        max_batch_size: int,
        limiter: RateLimiter | None = None,
    ) -> None:
        self._runtimes = runtimes
        self._classification = classification
        self._limiter = limiter
        self._queue = queue
        self._log = request_log
        self._readiness = readiness
        self._settings = settings
        self._max_batch_size = max_batch_size
        self.in_flight = 0

    def queued(self) -> int:
        return self._queue.depth()

    def models(self) -> list[TextRuntime]:
        return list(self._runtimes.values())

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
        is yielded once the request is accepted, so errors surface before a stream starts."""
        prepared = self.prepare(request)
        runtime, prompt_ids, params = prepared.runtime, prepared.prompt_ids, prepared.params
        admission = await self.admit(request, prepared)
        created = time.time()
        started = time.monotonic()
        completion = Completion(
            id=request.id,
            model=request.model,
            created=int(created),
            choices=[Choice(i) for i in range(request.n)],
            prompt_tokens=len(prompt_ids),
            rate_limit_headers=dict(admission.headers) if admission else {},
        )
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[JobEvent] = asyncio.Queue()

        def emit(event: JobEvent) -> None:  # called on a worker thread
            try:
                loop.call_soon_threadsafe(events.put_nowait, event)
            except RuntimeError:
                pass  # the event loop has closed: nobody is waiting for this request any more

        job = Job(
            id=request.id,
            model=runtime.name,
            payload=TextTask(prompt_ids=tuple(prompt_ids), params=params, n=request.n),
            emit=emit,
            rows=request.n,
            request_class=RequestClass.REALTIME,
            tier=request.tier,
            tenant=request.tenant,
            cost=self.cost(prepared, request.n),
        )
        status, error, first_token_at, submitted = RequestStatus.FAILED, None, None, False
        try:
            try:
                self._queue.submit(job)
            except QueueClosed as e:
                raise NotReady("the server is shutting down; retry on another replica") from e
            except Exception as e:
                status, error = RequestStatus.REJECTED, str(e)
                raise
            submitted = True
            self.in_flight += 1
            yield None, completion
            open_choices = request.n
            while open_choices:
                event = await self._next_event(events, disconnected)
                if event is None:
                    status = RequestStatus.CANCELLED
                    return
                if isinstance(event, JobFailed):
                    error = event.message
                    if event.shutdown:
                        status = RequestStatus.ABORTED
                        raise NotReady(f"{event.message}; retry on another replica")
                    status = RequestStatus.FAILED
                    raise GenerationFailed(event.message)
                if isinstance(event, JobStarted):
                    continue
                choice = completion.choices[event.index]
                first_token_at = first_token_at or time.monotonic()
                choice.tokens = event.completion_tokens
                if isinstance(event, TokenEvent):
                    choice.text += event.delta
                elif isinstance(event, ChoiceFinished):
                    choice.finish_reason = event.finish_reason
                    open_choices -= 1
                yield event, completion
            status = RequestStatus.COMPLETED
        except (asyncio.CancelledError, GeneratorExit):
            status = RequestStatus.CANCELLED
            raise
        finally:
            job.cancel()
            self._queue.remove(job.id)
            if admission is not None and self._limiter is not None:
                # Charged the estimate up front; settle on what the request really used.
                await self._limiter.settle(admission, tokens_used=completion.usage.total_tokens if submitted else 0)
            if submitted:
                self.in_flight -= 1
            self._record(request, params, completion, status, error, created, started, first_token_at)

    async def _next_event(self, events: asyncio.Queue[JobEvent], disconnected: DisconnectProbe) -> JobEvent | None:
        """The next event, or None once the client has gone away."""
        if not events.empty():
            return events.get_nowait()
        while True:
            try:
                return await asyncio.wait_for(events.get(), _PROBE_INTERVAL_S)
            except TimeoutError:
                if await disconnected():
                    return None

    async def admit(self, request: TextRequest, prepared: PreparedText) -> Admission | None:
        """Charge the caller's rate limits with the most this request can use (429 when over)."""
        if self._limiter is None:
            return None
        estimate = len(prepared.prompt_ids) * request.n + prepared.params.max_tokens * request.n
        return await self._limiter.check(
            key_id=request.key_id or f"tenant:{request.tenant}", tenant_id=request.tenant, key_limits=Limits(),
            tenant_limits=Limits(**request.limits), tokens=estimate,
        )

    def cost(self, prepared: PreparedText, n: int) -> float:
        """What the scheduler charges a tenant for this request: prompt and completion tokens."""
        c = self._classification
        return max(1.0, n * (len(prepared.prompt_ids) * c.prompt_token_cost + prepared.params.max_tokens * c.completion_token_cost))

    def prepare(self, request: TextRequest) -> PreparedText:
        """Check a request against its model: 404 for an unknown model, 400 for what cannot fit."""
        if not self._readiness.ready:
            raise NotReady(f"the server is not ready: {self._readiness.reason}")
        runtime = self._runtimes.get(request.model)
        if runtime is None:
            raise ModelNotFound(request.model, sorted(self._runtimes))
        if request.n > min(self._settings.max_n, self._max_batch_size):
            limit = min(self._settings.max_n, self._max_batch_size)
            raise InvalidRequest(f"n must be at most {limit}", param="n")
        try:
            if request.messages is not None:
                prompt_ids = runtime.encode_chat(request.messages)
            else:
                prompt_ids = runtime.encode_completion(request.prompt or "")
        except PromptError as e:
            raise InvalidRequest(str(e), param="messages" if request.messages is not None else "prompt") from e
        room = runtime.max_context - len(prompt_ids)
        params = request.params
        if not request.max_tokens_given:
            params = _with_max_tokens(params, min(self._settings.default_max_tokens, room))
        elif params.max_tokens > room:
            raise InvalidRequest(
                f"the prompt has {len(prompt_ids)} tokens and max_tokens is {params.max_tokens}, but model "
                f"{runtime.name} takes at most {runtime.max_context} tokens in all; lower max_tokens to {room} or less",
                param="max_tokens",
            )
        return PreparedText(runtime, prompt_ids, params)

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


def _with_max_tokens(params: SamplingParams, max_tokens: int) -> SamplingParams:
    from dataclasses import replace

    return replace(params, max_tokens=max(1, max_tokens))
