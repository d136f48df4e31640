"""Embeddings as the API sees them: validate, queue one job per request, await its one result."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from genloom.config import ModelKind
from genloom.gateway.pipeline.guard import Guarded, GuardStage
from genloom.gateway.events import DisconnectProbe, WaitBounds, final_event, thread_emitter
from genloom.gateway.presence import WorkerPresence
from genloom.gateway.errors import InvalidRequest, ModelNotFound, NotReady
from genloom.gateway.readiness import Readiness
from genloom.gateway.queue_io import queue_call, withdraw
from genloom.gateway.versions import served_version
from genloom.jobs import EmbeddingsReady, EmbeddingTask, Job, RequestClass, Tier
from genloom.queue import QueueClosed
from genloom.queue.protocol import JobQueue
from genloom.registry import model_name
from genloom.registry.registry import ModelRegistry
from genloom.telemetry import NO_OBSERVER, Observer
from genloom.runtimes.embeddings import EmbeddingRuntime
from genloom.jobs.tasks import DEFAULT_MAX_BATCH_TEXTS
from genloom.telemetry.tracing import job_trace

EMBEDDINGS_ENDPOINT = "/v1/embeddings"
_CHARS_PER_TOKEN = 4  # a rough English average, good enough to order work before it is tokenized


@dataclass(frozen=True)
class EmbeddingRequest:
    """An embeddings request as sent: `input` is checked by the service, not trusted."""

    model: str
    input: str | Sequence[object]
    dimensions: int | None = None
    tier: Tier = Tier.FREE
    tenant: str = "default"
    limits: dict[str, int] = field(default_factory=dict)  # the tenant's (its guard_blocks_per_hour)
    guardrails: dict[str, Any] = field(default_factory=dict)  # the tenant's guard policy overrides
    id: str = field(default_factory=lambda: f"emb-{uuid.uuid4().hex}")


@dataclass(frozen=True)
class EmbeddingResult:
    """One vector and token count per input, in the request's order."""

    model: str
    vectors: list[list[float]]
    token_counts: list[int]
    version: str = ""  # name@vN, the version that made them

    @property
    def prompt_tokens(self) -> int:
        return sum(self.token_counts)


@dataclass(frozen=True)
class PreparedEmbedding:
    runtime: EmbeddingRuntime
    texts: tuple[str, ...]


class EmbeddingService:
    def __init__(
        self,
        *,
        runtimes: dict[str, EmbeddingRuntime],
        queue: JobQueue,
        readiness: Readiness,
        max_inputs: int = 2048,
        max_batch_texts: int = DEFAULT_MAX_BATCH_TEXTS,
        registry: ModelRegistry | None = None,
        guard_input: GuardStage | None = None,
        observer: Observer = NO_OBSERVER,
    ) -> None:
        self._registry = registry
        self._guard_input = guard_input
        self._observer = observer
        # Set by the wiring: which models have a live worker, and how long a realtime request may wait.
        self.presence = WorkerPresence()
        self.wait_bounds: WaitBounds | None = None
        if max_inputs < 1 or max_batch_texts < 1:
            raise ValueError(f"max_inputs and max_batch_texts must be at least 1, got {max_inputs}, {max_batch_texts}")
        self._runtimes = runtimes
        self._queue = queue
        self._readiness = readiness
        self._max_inputs = max_inputs
        # The workers' batch size: a job never asks for more rows than a batch has (see EmbeddingWorker).
        self._max_batch_texts = max_batch_texts
        self.in_flight = 0

    async def embed(self, request: EmbeddingRequest, disconnected: DisconnectProbe) -> EmbeddingResult | None:
        """Queue the request as one job and wait for its vectors; None when the client went away
        first (its job is cancelled then, so a worker that has not taken it yet never runs it)."""
        started, status, version = time.monotonic(), "failed", request.model
        self._observer.request_started(route=EMBEDDINGS_ENDPOINT, model=request.model, tier=request.tier.value)
        try:
            prepared = self.prepare(request)
            version = prepared.runtime.name
            if self._guard_input is not None:
                who = Guarded(tenant=request.tenant, request_id=request.id, overrides=request.guardrails, limits=request.limits)
                await self._guard_input.check(list(prepared.texts), who=who, param="input")
            result = await self._embed(request, prepared, disconnected)
            status = "completed" if result is not None else "cancelled"
            return result
        finally:
            self._observer.request_finished(
                route=EMBEDDINGS_ENDPOINT, model=request.model, version=version, tier=request.tier.value, status=status,
                duration_s=time.monotonic() - started, tenant=request.tenant,
            )

    async def _embed(
        self, request: EmbeddingRequest, prepared: PreparedEmbedding, disconnected: DisconnectProbe
    ) -> EmbeddingResult | None:
        events: asyncio.Queue[object] = asyncio.Queue()

        job = Job(
            id=request.id,
            model=prepared.runtime.name,
            payload=EmbeddingTask(texts=prepared.texts),
            emit=thread_emitter(events),
            rows=min(len(prepared.texts), self._max_batch_texts),
            request_class=RequestClass.REALTIME,
            tier=request.tier,
            tenant=request.tenant,
            cost=self.cost(prepared),
            trace=job_trace(),
        )
        self.presence.require(job.model)
        try:
            await queue_call(self._queue, self._queue.submit, job)
        except QueueClosed as e:
            raise NotReady("the server is shutting down; retry on another replica") from e
        self.in_flight += 1
        try:
            event = await final_event(events, disconnected, bounds=self.wait_bounds, model=job.model, tier=job.tier)
            if event is None:
                return None
            assert isinstance(event, EmbeddingsReady)
            return EmbeddingResult(model_name(prepared.runtime.name), event.vectors, event.token_counts, prepared.runtime.name)
        finally:
            await withdraw(self._queue, job)
            self.in_flight -= 1

    def cost(self, prepared: PreparedEmbedding) -> float:
        """What the scheduler charges a tenant: estimated input tokens (the worker counts them exactly)."""
        limit = prepared.runtime.info.max_tokens
        return float(max(1, sum(min(limit, len(text) // _CHARS_PER_TOKEN + 2) for text in prepared.texts)))

    def prepare(self, request: EmbeddingRequest) -> PreparedEmbedding:
        """Check a request against its model: 404 for an unknown model, 400 for input it cannot take."""
        if not self._readiness.ready:
            raise NotReady(f"the server is not ready: {self._readiness.reason}")
        runtime = self._runtimes.get(served_version(self._registry, request.model, self._runtimes, ModelKind.EMBEDDING))
        if runtime is None:
            raise ModelNotFound(request.model, sorted(self._runtimes))
        texts = self._texts(request.input)
        dimensions = runtime.info.dimensions
        if request.dimensions is not None and request.dimensions != dimensions:
            raise InvalidRequest(
                f"model {runtime.name} gives {dimensions}-dimensional vectors and cannot shorten them; "
                f"leave dimensions out or set it to {dimensions}",
                param="dimensions",
            )
        return PreparedEmbedding(runtime, texts)

    def _texts(self, input: object) -> tuple[str, ...]:
        if isinstance(input, str):
            texts: tuple[object, ...] = (input,)
        elif isinstance(input, (list, tuple)):
            texts = tuple(input)
        else:
            raise InvalidRequest("input must be a string or a list of strings", param="input")
        if not texts:
            raise InvalidRequest(f"input is an empty list; send 1 to {self._max_inputs} strings", param="input")
        if len(texts) > self._max_inputs:
            raise InvalidRequest(
                f"input holds {len(texts)} strings; send at most {self._max_inputs} per request", param="input"
            )
        for i, text in enumerate(texts):
            if isinstance(text, (int, list)):
                raise InvalidRequest(
                    "input as token ids is not supported: this server tokenizes for its own model; send strings",
                    param="input",
                )
            if not isinstance(text, str):
                raise InvalidRequest(f"input[{i}] must be a string, got {type(text).__name__}", param="input")
            if not text:
                raise InvalidRequest(
                    f"input[{i}] is an empty string; every input must hold some text", param="input"
                )
        return texts  # type: ignore[return-value]  # every item was checked to be a str just above
