"""Image generation as the API sees it: validate against the model, charge the caller's limits,
queue one job, await its pictures, store them (with provenance) and answer in OpenAI's shape.

The same preparation and result-building serve async image jobs (JobService calls them)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import random
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from genloom.config import ImageSettings, ModelKind
from genloom.gateway.pipeline.guard import Guarded, GuardStage
from genloom.gateway.events import DisconnectProbe, WaitBounds, final_event, thread_emitter
from genloom.gateway.presence import WorkerPresence
from genloom.gateway.errors import InvalidRequest, ModelNotFound, NotReady
from genloom.gateway.rate_limit import Admission, Limits, RateLimiter
from genloom.gateway.readiness import Readiness
from genloom.gateway.queue_io import queue_call, withdraw
from genloom.gateway.versions import served_version
from genloom.jobs import ImagesReady, ImageTask, Job, RequestClass, Tier
from genloom.queue import QueueClosed
from genloom.queue.protocol import JobQueue
from genloom.registry import model_name
from genloom.registry.registry import ModelRegistry
from genloom.runtimes.image import ImageInputError, ImageRuntime, SCHEDULERS
from genloom.store.files import FileStore
from genloom.telemetry import NO_OBSERVER, Observer
from genloom.telemetry.tracing import job_trace

IMAGES_ENDPOINT = "/v1/images/generations"
MAX_PROMPT_CHARS = 4000  # OpenAI's limit for its larger image models
MAX_GUIDANCE = 30.0
MAX_SEED = 2**63 - 1
_SIZE = re.compile(r"([0-9]{1,5})x([0-9]{1,5})", re.ASCII)


MAX_LORA_SCALE = 2.0


@dataclass(frozen=True)
class ImageRequest:
    """An image request as sent; the service checks every field against the model."""

    model: str
    prompt: str
    n: int = 1
    size: str | None = None  # "WIDTHxHEIGHT" or "auto"; None is the model's own size
    response_format: str = "b64_json"
    negative_prompt: str | None = None
    steps: int | None = None
    guidance_scale: float | None = None
    seed: int | None = None
    scheduler: str | None = None
    lora_scale: float | None = None  # a LoRA version only; None: 1
    tier: Tier = Tier.FREE
    tenant: str = "default"
    key_id: str | None = None
    limits: dict[str, int] = field(default_factory=dict)
    key_limits: dict[str, int] = field(default_factory=dict)
    guardrails: dict[str, Any] = field(default_factory=dict)  # the tenant's guard policy overrides
    id: str = field(default_factory=lambda: f"img-{uuid.uuid4().hex}")

    def to_record(self) -> dict[str, Any]:
        """A JSON-ready form, so a stored job can be run again without the API layer."""
        keys = ("model", "prompt", "n", "size", "response_format", "negative_prompt", "steps", "guidance_scale", "seed", "scheduler")
        record = {"endpoint": IMAGES_ENDPOINT, **{k: getattr(self, k) for k in keys}}
        if self.lora_scale is not None:  # only when given: records stored before it existed read the same
            record["lora_scale"] = self.lora_scale
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any], *, id: str, tier: Tier, tenant: str) -> ImageRequest:
        values = {k: v for k, v in record.items() if k != "endpoint"}
        return cls(**values, id=id, tier=tier, tenant=tenant)


@dataclass(frozen=True)
class PreparedImage:
    model: str
    task: ImageTask

    @property
    def payload(self) -> ImageTask:
        return self.task


class UrlSigner:
    """HMAC-signed, expiring links to stored files, so an <img src> works without an API key."""

    def __init__(self, key: bytes, ttl_s: int, clock: Callable[[], float] = time.time) -> None:
        if len(key) < 16:
            raise ValueError("a URL signing key needs at least 16 bytes")
        self._key, self._ttl_s, self._clock = key, ttl_s, clock

    def _signature(self, file_id: str, expires: int) -> str:
        return hmac.new(self._key, f"{file_id}:{expires}".encode(), hashlib.sha256).hexdigest()

    def path(self, file_id: str) -> str:
        expires = int(self._clock()) + self._ttl_s
        return f"/v1/files/{file_id}/content?expires={expires}&signature={self._signature(file_id, expires)}"

    def valid(self, file_id: str, expires: int, signature: str) -> bool:
        expected = self._signature(file_id, expires).encode()
        return expires >= self._clock() and hmac.compare_digest(signature.encode("utf-8", "replace"), expected)


class ImageService:
    def __init__(
        self,
        *,
        runtimes: dict[str, ImageRuntime],
        queue: JobQueue,
        readiness: Readiness,
        settings: ImageSettings,
        files: FileStore,
        signer: UrlSigner,
        limiter: RateLimiter | None = None,
        model_defaults: dict[str, tuple[int | None, float | None]] | None = None,
        rng: random.Random | None = None,
        registry: ModelRegistry | None = None,
        guard_input: GuardStage | None = None,
        observer: Observer = NO_OBSERVER,
    ) -> None:
        """`guard_input` reads every prompt (realtime and jobs) before it is charged or queued."""
        self._registry = registry
        self.guard_input = guard_input
        self._observer = observer
        # Set by the wiring: which models have a live worker, and how long a realtime request may wait.
        self.presence = WorkerPresence()
        self.wait_bounds: WaitBounds | None = None
        self._runtimes = runtimes
        self._queue = queue
        self._readiness = readiness
        self._settings = settings
        self.files = files
        self.signer = signer
        self._limiter = limiter
        self.model_defaults = model_defaults if model_defaults is not None else {}
        self._rng = rng or random.SystemRandom()
        self.batch_limits: dict[str, int] = {}  # a model's batch size: a request's images run in one batch
        self.lora_versions: set[str] = set()  # versions that are a LoRA on a base pipeline (they take lora_scale)
        self.in_flight = 0

    def prepare(self, request: ImageRequest, *, accepted: bool = False) -> PreparedImage:
        """Check a request against its model: 404 for an unknown model, 400 for what it cannot make.
        `accepted`: a stored job queued again, which a draining server still puts back."""
        if not accepted and not self._readiness.ready:
            raise NotReady(f"the server is not ready: {self._readiness.reason}")
        # The version that serves it (`name@vN`): 404 or 503 when none can; `prepared.model` names it.
        request = replace(request, model=served_version(self._registry, request.model, self._runtimes, ModelKind.IMAGE))
        runtime = self._runtimes.get(request.model)
        if runtime is None:
            raise ModelNotFound(request.model, sorted(self._runtimes))
        s = self._settings
        if not request.prompt.strip():
            raise InvalidRequest("prompt is empty; describe the picture", param="prompt")
        if len(request.prompt) > MAX_PROMPT_CHARS:
            raise InvalidRequest(f"prompt is {len(request.prompt)} characters; at most {MAX_PROMPT_CHARS}", param="prompt")
        most = min(s.max_images_per_request, self.batch_limits.get(request.model, s.max_images_per_request))
        if not 1 <= request.n <= most:
            raise InvalidRequest(f"n must be between 1 and {most} for model {request.model}", param="n")
        if request.response_format not in ("b64_json", "url"):
            raise InvalidRequest("response_format must be 'b64_json' or 'url'", param="response_format")
        width, height = self._size(request.size, runtime)
        default_steps, default_guidance = self.model_defaults.get(request.model, (None, None))
        steps = request.steps if request.steps is not None else default_steps or s.default_steps
        if not 1 <= steps <= s.max_steps:
            raise InvalidRequest(f"steps must be between 1 and {s.max_steps}", param="steps")
        guidance = request.guidance_scale
        if guidance is None:
            guidance = default_guidance if default_guidance is not None else s.default_guidance_scale
        if not 0 <= guidance <= MAX_GUIDANCE:
            raise InvalidRequest(f"guidance_scale must be between 0 and {MAX_GUIDANCE:g}", param="guidance_scale")
        if request.scheduler is not None and request.scheduler not in SCHEDULERS:
            raise InvalidRequest(f"scheduler must be one of {', '.join(SCHEDULERS)}", param="scheduler")
        if request.seed is not None and not 0 <= request.seed <= MAX_SEED - request.n:
            raise InvalidRequest(f"seed must be between 0 and {MAX_SEED - request.n}", param="seed")
        # Without a seed one is drawn here, so the provenance of every picture can make it again.
        seed = request.seed if request.seed is not None else self._rng.randrange(2**31)
        provenance: dict[str, Any] = {"request_id": request.id}
        lora_scale = 1.0
        if request.model in self.lora_versions:  # the base's pipeline may draw it: the PNG names the version
            lora_scale = 1.0 if request.lora_scale is None else float(request.lora_scale)
            provenance |= {"model": request.model, "lora_scale": lora_scale}
        elif request.lora_scale is not None:
            raise InvalidRequest(f"lora_scale applies to a LoRA version; model {request.model} is not one", param="lora_scale")
        if not 0 <= lora_scale <= MAX_LORA_SCALE:
            raise InvalidRequest(f"lora_scale must be between 0 and {MAX_LORA_SCALE:g}", param="lora_scale")
        task = ImageTask(
            prompt=request.prompt, negative_prompt=request.negative_prompt or None, n=request.n, width=width,
            height=height, steps=steps, guidance_scale=float(guidance), scheduler=request.scheduler, seed=seed,
            provenance=provenance, lora_scale=lora_scale,
        )
        try:
            runtime.check(task)
        except ImageInputError as e:
            raise InvalidRequest(str(e), param="size" if "multiple" in str(e) else "scheduler") from e
        return PreparedImage(model=request.model, task=task)

    def _size(self, size: str | None, runtime: ImageRuntime) -> tuple[int, int]:
        info = runtime.info
        if size is None or size == "auto":
            return info.default_size, info.default_size
        match = _SIZE.fullmatch(size.lower())
        if match is None:
            raise InvalidRequest(f"size must look like '{info.default_size}x{info.default_size}' (WIDTHxHEIGHT) or 'auto'", param="size")
        width, height = int(match[1]), int(match[2])
        m, top = info.size_multiple, self._settings.max_side
        if not (m <= width <= top and m <= height <= top) or width % m or height % m:
            raise InvalidRequest(
                f"size {size} is not available for model {runtime.name}: width and height must be multiples of {m} "
                f"from {m} to {top} (the model's own size is {info.default_size}x{info.default_size})",
                param="size",
            )
        return width, height

    def cost(self, prepared: PreparedImage) -> float:
        """What the scheduler charges: images x steps x pixels, in units of one default-size image-step."""
        t = prepared.task
        side = self._runtimes[prepared.model].info.default_size
        return max(1.0, t.n * t.steps * (t.width * t.height) / (side * side))

    async def refund(self, admission: Admission | None) -> None:
        """Give the image quota back for pictures that were never made."""
        if admission is not None and self._limiter is not None:
            await self._limiter.settle(admission, tokens_used=0, images_made=0)

    async def admit(self, request: ImageRequest, prepared: PreparedImage) -> Admission | None:
        """Charge requests per minute and the daily image quota (429 when over)."""
        if self._limiter is None:
            return None
        return await self._limiter.check(
            key_id=request.key_id or f"tenant:{request.tenant}", tenant_id=request.tenant,
            key_limits=Limits.of(request.key_limits), tenant_limits=Limits.of(request.limits), tokens=0,
            images=prepared.task.n,
        )

    def job(self, prepared: PreparedImage, *, id: str, emit, request_class: RequestClass, tier: Tier, tenant: str, **extra) -> Job:
        return Job(
            id=id, model=prepared.model, payload=prepared.task, emit=emit, rows=prepared.task.n,
            request_class=request_class, tier=tier, tenant=tenant, cost=self.cost(prepared), trace=job_trace(), **extra,
        )

    async def generate(self, request: ImageRequest, disconnected: DisconnectProbe, base_url: str = "") -> dict[str, Any] | None:
        """Queue the request as one realtime job and answer with its stored pictures; None when
        the client went away first (its job is cancelled then)."""
        started, status, body = time.monotonic(), "failed", None
        self._observer.request_started(route=IMAGES_ENDPOINT, model=request.model, tier=request.tier.value)
        try:
            body = await self._generate(request, disconnected, base_url)
            status = "completed" if body is not None else "cancelled"
            return body
        finally:
            self._observer.request_finished(
                route=IMAGES_ENDPOINT, model=request.model, version=(body or {}).get("system_fingerprint", request.model),
                tier=request.tier.value, status=status, duration_s=time.monotonic() - started, tenant=request.tenant,
            )

    async def check_prompt(self, request: ImageRequest) -> None:
        """The input guard on what the picture is asked to show (and not to)."""
        if self.guard_input is not None:
            texts = [request.prompt, *([request.negative_prompt] if request.negative_prompt else [])]
            who = Guarded(tenant=request.tenant, request_id=request.id, overrides=request.guardrails, limits=request.limits)
            await self.guard_input.check(texts, who=who, param="prompt")

    async def _generate(self, request: ImageRequest, disconnected: DisconnectProbe, base_url: str) -> dict[str, Any] | None:
        prepared = self.prepare(request)
        await self.check_prompt(request)
        admission = await self.admit(request, prepared)
        made = False
        events: asyncio.Queue[object] = asyncio.Queue()
        job = self.job(prepared, id=request.id, emit=thread_emitter(events), request_class=RequestClass.REALTIME, tier=request.tier, tenant=request.tenant)
        try:
            self.presence.require(job.model)
            await queue_call(self._queue, self._queue.submit, job)
        except BaseException as e:
            await self.refund(admission)
            if isinstance(e, QueueClosed):
                raise NotReady("the server is shutting down; retry on another replica") from e
            raise
        self.in_flight += 1
        try:
            event = await final_event(events, disconnected, bounds=self.wait_bounds, model=job.model, tier=job.tier)
            if event is None:
                return None
            assert isinstance(event, ImagesReady)
            made = True
            return await self.result_body(request, event, base_url=base_url, job_id=None)
        finally:
            await withdraw(self._queue, job)
            self.in_flight -= 1
            if not made:  # failed, refused or abandoned: only pictures made count against the quota
                await self.refund(admission)

    async def result_body(self, request: ImageRequest, ready: ImagesReady, *, base_url: str, job_id: str | None) -> dict[str, Any]:
        """Store every picture (provenance recorded) and build OpenAI's response: b64_json or a signed url.

        Each item also names its stored `file_id` and `seed`, so a picture can be fetched again or remade.
        A job's result is stored and read much later, so it holds neither the pictures nor a link
        that expires: its `url` is the file's content route, read with the tenant's key."""
        now = datetime.now(UTC)
        version = str((ready.provenance[0] if ready.provenance else {}).get("model") or request.model)
        self._observer.images_generated(model=version, count=len(ready.pngs))
        data = []
        for png, provenance in zip(ready.pngs, ready.provenance):
            record = await self.files.add(
                png, tenant=request.tenant, content_type="image/png", purpose="image_generation", job_id=job_id,
                metadata=provenance, at=now,
            )
            item: dict[str, Any] = {"revised_prompt": None, "file_id": record.id, "seed": provenance["seed"]}
            if job_id is not None:
                item["url"] = f"/v1/files/{record.id}/content"
            elif request.response_format == "url":
                item["url"] = base_url + self.signer.path(record.id)
            else:
                item["b64_json"] = base64.b64encode(png).decode("ascii")
            data.append(item)
        version = ready.provenance[0].get("model", request.model) if ready.provenance else request.model
        return {"created": int(now.timestamp()), "data": data, "model": model_name(version), "system_fingerprint": version}
