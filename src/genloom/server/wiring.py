"""The components of one process, built from the settings tree in the order they depend on each
other: stores, queue and limiter (in process, or on Redis), auth, the registry, the services,
the text pipeline stage by stage, jobs, the model host, rollouts. Nothing here starts or stops
anything; `lifecycle.py` does."""

from __future__ import annotations

import os
from datetime import datetime
import socket
import uuid
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import redis
import redis.asyncio as aioredis

from genloom.config import ConfigError, ModelKind, ModelSettings, Settings
from genloom.config.settings import BlobBackend
from genloom.gateway import Readiness, TextService
from genloom.gateway.auth import Authenticator, TenantAdmin
from genloom.gateway.breaker import CircuitBreaker
from genloom.gateway.cache import InMemoryResponseCache, InMemorySemanticCache, ResponseCache, SemanticCache
from genloom.gateway.embedding_service import EmbeddingService
from genloom.gateway.events import WaitBounds
from genloom.gateway.image_service import ImageService, UrlSigner
from genloom.gateway.job_service import JobService
from genloom.gateway.job_webhooks import WebhookDispatcher
from genloom.gateway.pipeline import TextPipeline
from genloom.gateway.pipeline.admit import Admit
from genloom.gateway.pipeline.caching import Cache
from genloom.gateway.guard_blocks import InMemoryBlockCounter, RedisBlockCounter
from genloom.gateway.pipeline.guard import GuardStage
from genloom.gateway.pipeline.record import Record
from genloom.gateway.pipeline.resolve import Resolve
from genloom.gateway.pipeline.submit import Submit
from genloom.gateway.presence import WorkerPresence
from genloom.gateway.rate_limit import InMemoryRateLimiter, ObservedLimiter, RateLimiter
from genloom.gateway.redis_cache import RedisResponseCache, RedisSemanticCache
from genloom.gateway.redis_rate_limit import RedisRateLimiter
from genloom.gateway.routing import Router
from genloom.gateway.shadow import ShadowMirror
from genloom.gateway.templates import TemplateService
from genloom.guardrails.engine import Guardrails, builtin_guardrails
from genloom.guardrails.policy import Policies, PolicyError
from genloom.guardrails.scan import Scanner
from genloom.gateway.text_service import RemoteModel
from genloom.jobs import Job, JobEvent, RequestClass, Tier
from genloom.model_host import ModelHost
from genloom.queue import InMemoryQueue, SchedulerPolicy, TierPolicy
from genloom.queue.protocol import JobQueue
from genloom.queue.redis_queue import RedisQueue
from genloom.queue.workers import WorkerDirectory
from genloom.registry.redis_outcomes import RedisOutcomes
from genloom.registry.registry import ModelRegistry
from genloom.registry.rollouts import RolloutService
from genloom.registry.rollout import Feedback as RolloutFeedback
from genloom.runtimes.embeddings import EmbeddingRuntime, builtin_embedding_model_path
from genloom.runtimes.image import ImageRuntime
from genloom.runtimes.text import TextRuntime
from genloom.server.roles import Process
from genloom.store import Database, RequestLog
from genloom.store.feedback import FeedbackStore
from genloom.store.responses import ResponseStore
from genloom.gateway.feedback import FeedbackService
from genloom.gateway.datasets import DatasetService
from genloom.gateway.privacy import DataDeletion
from genloom.store.datasets import DatasetStore
from genloom.store.fine_tuning import FineTuningStore
from genloom.gateway.fine_tuning import FineTuningService
from genloom.store.guard_audit import GuardAudit
from genloom.store.usage import UsageSeries
from genloom.store.files import BlobStore, FileBlobStore, FileStore, S3BlobStore
from genloom.store.jobs import SqlJobStore
from genloom.store.model_registry import RegistryStore
from genloom.store.templates import TemplateStore
from genloom.store.tenants import TenantStore
from genloom.telemetry import Observer
from genloom.telemetry.monitors import Monitors
from genloom.telemetry.tracing import NO_TRACING, Tracing

BUILTIN_EMBEDDING_MODEL = "all-minilm-l6-v2"
# Longer than any blocking read Genloom makes (BLPOP and XREAD wait at most 0.5 s).
REDIS_TIMEOUTS = {"socket_timeout": 10.0, "socket_connect_timeout": 5.0}


class Hooks(Protocol):
    """What the components call back into the running process for."""

    def adopt(self, job: Job) -> Callable[[JobEvent], None]: ...
    async def auth_changed(self) -> None: ...
    async def registry_changed(self) -> None: ...
    async def warm(self, key: str, requests: int) -> None: ...
    async def embed(self, texts: list[str]) -> list[list[float]]: ...


@dataclass(kw_only=True)
class Components:
    readiness: Readiness
    database: Database
    request_log: RequestLog
    job_store: SqlJobStore
    queue: JobQueue
    shared: RedisQueue | None  # the queue when it is shared through Redis
    redis: redis.Redis | None
    aredis: aioredis.Redis | None
    limiter: RateLimiter
    authenticator: Authenticator
    admin: TenantAdmin
    registry: ModelRegistry
    service: TextService
    pipeline: TextPipeline
    embeddings: EmbeddingService
    images: ImageService
    templates: TemplateService
    webhooks: WebhookDispatcher | None
    jobs: JobService
    models: ModelHost
    rollouts: RolloutService
    shadow: ShadowMirror
    breakers: dict[str, CircuitBreaker]
    presence: WorkerPresence
    workers: WorkerDirectory | None  # the worker processes' cards, when the queue is shared
    monitors: Monitors | None  # quality and drift (not on a worker process)
    guardrails: Guardrails  # the scanners (the moderation API runs them all)
    policies: Policies  # the config's guard policies, and what checks a tenant's or scenario's overrides
    audit: GuardAudit
    responses: ResponseStore
    feedback: FeedbackService
    datasets: DatasetService
    deletion: DataDeletion
    fine_tuning: FineTuningService
    usage: UsageSeries  # the console's rolling usage charts
    closing: list[Callable[[], Awaitable[None]]] = field(default_factory=list)  # clients to close at the end


def build_components(
    settings: Settings, *, process: Process, runs_here: Callable[[str], bool], observer: Observer, hooks: Hooks,
    scanners: Mapping[str, Scanner] | None = None, tracing: Tracing = NO_TRACING,
) -> Components:
    readiness = Readiness()
    database = Database(url=settings.resolved_database_url(), echo=settings.store.echo_sql)
    closing: list[Callable[[], Awaitable[None]]] = []
    sync_redis = async_redis = shared = None
    queue: JobQueue
    limiter: RateLimiter
    if settings.redis_url:
        # A Redis that stops answering (frozen, or cut off without a reset) ends each call within
        # these bounds as an error, instead of hanging a request, a worker or a health check.
        sync_redis = redis.Redis.from_url(settings.redis_url, decode_responses=True, **REDIS_TIMEOUTS)
        async_redis = aioredis.Redis.from_url(settings.redis_url, decode_responses=True, **REDIS_TIMEOUTS)
        queue = shared = RedisQueue(
            client=sync_redis, policy=scheduler_policy(settings), prefix=settings.redis_prefix,
            lease_s=settings.queue.lease_s, max_deliveries=settings.queue.max_deliveries,
            adopt=None if process is Process.API else hooks.adopt,
        )
        limiter = RedisRateLimiter(client=async_redis, prefix=settings.redis_prefix)
    else:
        queue = InMemoryQueue(policy=scheduler_policy(settings))
        limiter = InMemoryRateLimiter()
    limiter = ObservedLimiter(limiter, observer)

    tenants = TenantStore(database=database)
    authenticator = Authenticator(tenants=tenants)
    admin = TenantAdmin(
        tenants=tenants, authenticator=authenticator, default_tier=Tier(settings.classification.default_tier),
        on_change=hooks.auth_changed if settings.redis_url else None,
    )
    registry = ModelRegistry(store=RegistryStore(database=database), on_change=hooks.registry_changed)

    # Scaled out, an API replica refuses work for a model no live worker takes (lifecycle keeps it current).
    presence = WorkerPresence(retry_after_s=max(1, round(settings.queue.worker_ttl_s)))
    wait_bounds = WaitBounds(
        {Tier(name): t.realtime_timeout_s for name, t in settings.queue.tiers.items()},
        generation_s=settings.queue.generation_timeout_s,
    )

    # The tables of what is loaded: the model host fills them, the services read them.
    runtimes: dict[str, TextRuntime] = {}
    remotes: dict[str, RemoteModel] = {}
    breakers: dict[str, CircuitBreaker] = {}
    image_runtimes: dict[str, ImageRuntime] = {}
    embedding_runtimes: dict[str, EmbeddingRuntime] = {}

    # One input guard for every kind of request (text, images, embeddings; realtime and jobs).
    guardrails = builtin_guardrails().with_scanners({name: (lambda s=s: s) for name, s in (scanners or {}).items()})
    try:
        policies = guardrails.policies(settings.guardrails)
    except PolicyError as e:
        raise ConfigError(str(e)) from None
    audit = GuardAudit(database=database)
    blocks = RedisBlockCounter(client=async_redis, prefix=settings.redis_prefix) if async_redis is not None else InMemoryBlockCounter()
    guard_input, guard_output = (
        GuardStage(stage=stage, guardrails=guardrails, settings=settings.guardrails, observer=observer, policies=policies,
                   audit=audit, blocks=blocks)
        for stage in ("input", "output")
    )
    embeddings = EmbeddingService(
        runtimes=embedding_runtimes, queue=queue, readiness=readiness, registry=registry, guard_input=guard_input,
        observer=observer,
    )
    images = ImageService(
        runtimes=image_runtimes, queue=queue, readiness=readiness, settings=settings.images,
        files=FileStore(database=database, blobs=blob_store(settings)),
        signer=UrlSigner(url_signing_key(settings), settings.images.url_ttl_s), limiter=limiter, registry=registry,
        guard_input=guard_input, observer=observer,
    )
    service = TextService(
        runtimes=runtimes, queue=queue, readiness=readiness, settings=settings.api,
        classification=settings.classification, max_batch_size=settings.runtime.max_batch_size, remotes=remotes,
        registry=registry, router=Router(settings=settings.routing),
    )
    for kind in (images, embeddings):
        kind.presence, kind.wait_bounds = presence, wait_bounds
    request_log = RequestLog(database=database)
    # A restarted container has the same host name and pid: the suffix keeps its rows apart.
    usage = UsageSeries(database=database, source=f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}")
    monitors = None
    if settings.monitors.enabled and process is not Process.WORKER:
        embedding_served = BUILTIN_EMBEDDING_MODEL in {model.name for model in configured_models(settings)}
        monitors = Monitors(
            settings=settings.monitors,
            embed=hooks.embed if embedding_served else None,
        )
    admit = Admit(limiter=limiter)
    # The request path, stage by stage, in the order every text request takes.
    pipeline = TextPipeline(
        resolve=Resolve(text=service, observer=observer),
        guard_input=guard_input,
        cache=cache_stage(settings, embed=hooks.embed, observer=observer, closing=closing),
        admit=admit,
        submit=Submit(
            text=service, queue=queue, breakers=breakers, attempts_per_model=settings.routing.max_attempts_per_model,
            retry_delay_s=(settings.routing.retry_base_s, settings.routing.retry_max_s), observer=observer,
            presence=presence, wait_bounds=wait_bounds,
        ),
        guard_output=guard_output,
        record=Record(request_log=request_log, observer=observer, monitors=monitors,
                      keep_content=settings.feedback.keep_content_days > 0, usage=usage),
        observer=observer,
        tracing=tracing,
    )

    job_store = SqlJobStore(database=database)
    secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
    allow_hosts = frozenset(settings.webhook_allow_hosts)
    webhooks = WebhookDispatcher(
        store=job_store, secret=secret, allow_hosts=allow_hosts, settings=settings.jobs, observer=observer
    ) if secret else None
    jobs = JobService(
        store=job_store, queue=queue, text=service, admit=admit, guard_input=guard_input, guard_output=guard_output,
        settings=settings.jobs,
        process_id=f"{socket.gethostname()}:{os.getpid()}", webhooks_enabled=webhooks is not None,
        webhook_allow_hosts=allow_hosts, on_finished=webhooks.wake if webhooks else lambda: None, images=images,
        shared_queue=shared is not None, observer=observer,
    )
    jobs.presence = presence
    models = ModelHost(
        settings=settings, registry=registry, queue=queue, text=service, jobs=jobs, images=images, embeddings=embeddings,
        runtimes=runtimes, remotes=remotes, image_runtimes=image_runtimes, embedding_runtimes=embedding_runtimes,
        breakers=breakers, runs_here=runs_here, observer=observer, tracing=tracing,
    )

    def shared_window(rollout):
        """Scaled out, every API replica counts a rollout's outcomes in Redis and judges them all."""
        assert async_redis is not None
        return RedisOutcomes(client=async_redis, prefix=settings.redis_prefix, rollout_id=rollout.id,
                             window_s=rollout.plan.gates.window_s)

    rollouts = RolloutService(
        registry=registry, loaded=lambda key: key in models.loaded, warm=hooks.warm,
        windows=shared_window if shared is not None else None, observer=observer,
    )
    shadow = ShadowMirror(text=pipeline, observe=rollouts.observe, record_pair=rollouts.record_pair, embed=hooks.embed)
    pipeline.record.on_rollout_outcome = rollouts.observe
    pipeline.record.on_shadow = shadow.mirror
    responses = ResponseStore(database=database)
    feedback_store = FeedbackStore(database=database)

    async def version_feedback(version: str, since: datetime) -> RolloutFeedback:
        count, mean = await feedback_store.version_score(version, since)
        return RolloutFeedback(count=count, mean_score=mean)

    rollouts.feedback = version_feedback  # the rollout gate min_feedback_score reads users' ratings
    feedback = FeedbackService(
        store=feedback_store, request_log=request_log, jobs=job_store, responses=responses,
        settings=settings.feedback, observer=observer, monitors=monitors,
    )
    datasets = DatasetService(store=DatasetStore(database=database), feedback=feedback.store, request_log=request_log,
                              files=images.files)
    fine_tuning_store = FineTuningStore(database=database)
    deletion = DataDeletion(request_log=request_log, responses=responses, feedback=feedback.store, datasets=datasets,
                            cache=pipeline.cache, fine_tuning=fine_tuning_store)
    fine_tuning = FineTuningService(store=fine_tuning_store, files=images.files, datasets=datasets,
                                    registry=registry, settings=settings.fine_tuning)
    return Components(
        readiness=readiness, database=database, request_log=request_log, job_store=job_store, queue=queue,
        shared=shared, redis=sync_redis, aredis=async_redis, limiter=limiter, authenticator=authenticator, admin=admin,
        registry=registry, service=service, pipeline=pipeline, embeddings=embeddings, images=images,
        templates=TemplateService(store=TemplateStore(database=database), default_max_tokens=settings.api.default_max_tokens,
                                  check_guardrails=policies.check_overrides),
        webhooks=webhooks, jobs=jobs, models=models, rollouts=rollouts, shadow=shadow, breakers=breakers, closing=closing,
        presence=presence, monitors=monitors, guardrails=guardrails, policies=policies, audit=audit,
        responses=responses, feedback=feedback, datasets=datasets, deletion=deletion, fine_tuning=fine_tuning, usage=usage,
        workers=WorkerDirectory(client=async_redis, prefix=settings.redis_prefix, ttl_s=settings.queue.worker_ttl_s)
        if async_redis is not None else None,
    )


def configured_models(settings: Settings) -> list[ModelSettings]:
    """The config file's models and the built-ins (the embedding model among them), as
    registered at start."""
    models = settings.served_models()
    path = builtin_embedding_model_path() if settings.builtin_models else None
    if path is not None and BUILTIN_EMBEDDING_MODEL not in {m.name for m in models}:
        models.append(ModelSettings(name=BUILTIN_EMBEDDING_MODEL, kind=ModelKind.EMBEDDING, path=path))
    return models


def cache_stage(
    settings: Settings, *, embed: Callable[[list[str]], Awaitable[list[list[float]]]], observer: Observer,
    closing: list[Callable[[], Awaitable[None]]],
) -> Cache:
    c = settings.cache
    if not c.enabled:
        return Cache(exact=None, semantic=None, ttl_s=c.ttl_s, observer=observer)
    semantic: SemanticCache
    exact: ResponseCache
    if settings.redis_url:  # shared by every replica
        cache_client = aioredis.Redis.from_url(settings.redis_url, **REDIS_TIMEOUTS)  # bytes: vectors are stored raw
        closing.append(cache_client.aclose)
        semantic = RedisSemanticCache(
            client=cache_client, prefix=settings.redis_prefix, embed=embed, threshold=c.semantic_threshold,
            max_entries_per_tenant=c.semantic_max_entries_per_tenant,
        )
        exact = RedisResponseCache(client=cache_client, prefix=settings.redis_prefix, max_entries=c.max_entries)
    else:
        semantic = InMemorySemanticCache(
            embed=embed, threshold=c.semantic_threshold, max_entries_per_tenant=c.semantic_max_entries_per_tenant
        )
        exact = InMemoryResponseCache(max_entries=c.max_entries)
    return Cache(exact=exact, semantic=semantic, ttl_s=c.ttl_s, observer=observer)


def blob_store(settings: Settings) -> BlobStore:
    store = settings.store
    if store.blobs is BlobBackend.S3:
        assert store.s3_bucket is not None  # the settings require it
        return S3BlobStore(
            bucket=store.s3_bucket, prefix=store.s3_prefix, endpoint_url=store.s3_endpoint_url, region=store.s3_region,
            access_key_id=store.s3_access_key_id,
            secret_access_key=store.s3_secret_access_key.get_secret_value() if store.s3_secret_access_key else None,
        )
    return FileBlobStore(settings.resolved_data_dir() / "blobs")


def url_signing_key(settings: Settings) -> bytes:
    """The configured key, else one made on first start and kept in the data dir (owner-only)."""
    if settings.images.url_signing_key is not None:
        return settings.images.url_signing_key.get_secret_value().encode()
    path = settings.resolved_data_dir() / "url-signing.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".url-signing.key.")  # owner-only
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(32))
        try:
            os.link(tmp, path)  # complete before it has the name; fails when another process made it first
        except FileExistsError:
            pass
        finally:
            Path(tmp).unlink(missing_ok=True)
    key = path.read_bytes()
    if len(key) != 32:
        raise ValueError(f"{path} holds {len(key)} bytes, not a 32-byte key; delete it to make a new one")
    return key


def scheduler_policy(settings: Settings) -> SchedulerPolicy:
    q = settings.queue
    return SchedulerPolicy(
        tiers={Tier(name): TierPolicy(weight=t.weight, max_wait_s=t.max_wait_s) for name, t in q.tiers.items()},
        max_queued={RequestClass.REALTIME: q.max_queued, RequestClass.ASYNC: q.max_queued_async},
        tenant_max_share=q.tenant_max_share,
        retry_after_s=q.retry_after_s,
    )
