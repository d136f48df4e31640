"""The composition root: builds every component from the settings tree and runs them in one
process (the embedded mode). The only module that knows all the others."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from enum import Enum
from pathlib import Path

import redis
import redis.asyncio as aioredis
import uvicorn
from fastapi import FastAPI

from genloom.api import create_app
from genloom.api.app import create_worker_app
from genloom.config import AuthMode, ModelKind, ModelSettings, Settings
from genloom.config.settings import BlobBackend
from genloom.gateway import Readiness, ServerState, TextRequest, TextService
from genloom.gateway.text_service import RemoteModel
from genloom.gateway.auth import Authenticator, TenantAdmin
from genloom.gateway.breaker import CircuitBreaker
from genloom.gateway.cache import InMemoryResponseCache, InMemorySemanticCache, ResponseCache, SemanticCache
from genloom.gateway.redis_cache import RedisResponseCache, RedisSemanticCache
from genloom.gateway.pipeline import TextPipeline
from genloom.gateway.pipeline.admit import Admit
from genloom.gateway.pipeline.caching import Cache
from genloom.gateway.pipeline.guard import GuardStage
from genloom.gateway.pipeline.record import Record
from genloom.gateway.pipeline.resolve import Resolve
from genloom.gateway.pipeline.submit import Submit
from genloom.gateway.embedding_service import EmbeddingRequest, EmbeddingService
from genloom.gateway.image_service import ImageService, UrlSigner
from genloom.gateway.rate_limit import InMemoryRateLimiter, RateLimiter
from genloom.gateway.redis_rate_limit import RedisRateLimiter
from genloom.gateway.job_service import JobService
from genloom.gateway.job_webhooks import WebhookDispatcher
from genloom.gateway.routing import Router
from genloom.gateway.shadow import ShadowMirror
from genloom.model_host import ModelHost
from genloom.registry.registry import ModelRegistry
from genloom.registry.redis_outcomes import RedisOutcomes
from genloom.registry.rollout import RolloutRecord
from genloom.registry.rollouts import RolloutService
from genloom.runtimes.sampling import SamplingParams
from genloom.store.model_registry import RegistryStore
from genloom.gateway.templates import TemplateService
from genloom.queue import InMemoryQueue, Job, JobEvent, JobFailed, RequestClass, SchedulerPolicy, Tier, TierPolicy
from genloom.queue.protocol import JobQueue
from genloom.queue.redis_queue import RedisQueue
from genloom.queue.store import SqlJobStore
from genloom.runtimes.embeddings import EmbeddingRuntime, builtin_embedding_model_path
from genloom.runtimes.image import ImageRuntime
from genloom.runtimes.text import TextRuntime
from genloom.store import Database, RequestLog
from genloom.store.files import BlobStore, FileBlobStore, FileStore, S3BlobStore
from genloom.store.templates import TemplateStore
from genloom.store.tenants import TenantStore
from genloom.telemetry import NO_OBSERVER, Observer

log = logging.getLogger("genloom.server")
BUILTIN_EMBEDDING_MODEL = "all-minilm-l6-v2"
_DRAIN_POLL_S = 0.05


class Process(str, Enum):
    """What this process runs: the API and workers (embedded, or sharing a Redis queue), the API
    only (`genloom serve --role api`), or workers only (`genloom worker`)."""

    ALL = "all"
    API = "api"
    WORKER = "worker"


class GenloomServer:
    def __init__(
        self, settings: Settings, *, process: Process | None = None, worker_models: list[str] | None = None,
        observer: Observer | None = None,
    ) -> None:
        """`worker_models`: the models a worker process runs (default: all it serves); `observer`
        hears from every pipeline stage and worker (none by default)."""
        self.settings = settings
        self.process = process or Process(settings.server.role.value)
        if self.process is not Process.ALL and not settings.redis_url:
            raise ValueError(f"a{'n' if self.process is Process.API else ''} {self.process.value} process needs redis_url")
        self._worker_models = set(worker_models) if worker_models else None
        self.readiness = Readiness()
        self.database = Database(url=settings.resolved_database_url(), echo=settings.store.echo_sql)
        self.request_log = RequestLog(database=self.database)
        self.job_store = SqlJobStore(database=self.database)
        self.shared: RedisQueue | None = None
        self._closing: list[Callable[[], Awaitable[None]]] = []  # Redis clients to close at the end
        self.queue: JobQueue
        if settings.redis_url:
            self.redis = redis.Redis.from_url(settings.redis_url, decode_responses=True)
            self.aredis = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
            self.queue = self.shared = RedisQueue(
                client=self.redis, policy=scheduler_policy(settings), prefix=settings.redis_prefix,
                lease_s=settings.queue.lease_s, max_deliveries=settings.queue.max_deliveries,
                adopt=None if self.process is Process.API else self._adopt,
            )
            self.limiter: RateLimiter = RedisRateLimiter(client=self.aredis, prefix=settings.redis_prefix)
        else:
            self.queue = InMemoryQueue(policy=scheduler_policy(settings))
            self.limiter = InMemoryRateLimiter()
        tenants = TenantStore(database=self.database)
        self.authenticator = Authenticator(tenants=tenants)
        self.admin = TenantAdmin(
            tenants=tenants, authenticator=self.authenticator, default_tier=Tier(settings.classification.default_tier),
            on_change=self._announce_auth_change if settings.redis_url else None,
        )
        self._auth_listener: asyncio.Task | None = None
        self.registry = ModelRegistry(store=RegistryStore(database=self.database), on_change=self._registry_changed)
        self.runtimes: dict[str, TextRuntime] = {}
        self.remotes: dict[str, RemoteModel] = {}
        self.breakers: dict[str, CircuitBreaker] = {}
        self.embedding_runtimes: dict[str, EmbeddingRuntime] = {}
        self.embeddings = EmbeddingService(
            runtimes=self.embedding_runtimes, queue=self.queue, readiness=self.readiness, registry=self.registry
        )
        self.image_runtimes: dict[str, ImageRuntime] = {}
        self.images = ImageService(
            runtimes=self.image_runtimes,
            queue=self.queue,
            readiness=self.readiness,
            settings=settings.images,
            files=FileStore(database=self.database, blobs=_blob_store(settings)),
            signer=UrlSigner(_url_signing_key(settings), settings.images.url_ttl_s),
            limiter=self.limiter,
            registry=self.registry,
        )
        self.observer: Observer = observer or NO_OBSERVER
        self.service = TextService(
            runtimes=self.runtimes,
            queue=self.queue,
            readiness=self.readiness,
            settings=settings.api,
            classification=settings.classification,
            max_batch_size=settings.runtime.max_batch_size,
            remotes=self.remotes,
            registry=self.registry,
            router=Router(settings=settings.routing),
        )
        admit = Admit(limiter=self.limiter)
        # The request path, stage by stage, in the order every text request takes.
        self.pipeline = TextPipeline(
            resolve=Resolve(text=self.service, observer=self.observer),
            guard_input=GuardStage(stage="input", guards=[], observer=self.observer),
            cache=self._cache_stage(settings),
            admit=admit,
            submit=Submit(
                text=self.service, queue=self.queue, breakers=self.breakers,
                attempts_per_model=settings.routing.max_attempts_per_model,
                retry_delay_s=(settings.routing.retry_base_s, settings.routing.retry_max_s), observer=self.observer,
            ),
            guard_output=GuardStage(stage="output", guards=[], observer=self.observer),
            record=Record(request_log=self.request_log, observer=self.observer),
            observer=self.observer,
        )
        self.templates = TemplateService(
            store=TemplateStore(database=self.database), default_max_tokens=settings.api.default_max_tokens
        )
        secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
        allow_hosts = frozenset(settings.webhook_allow_hosts)
        self.webhooks: WebhookDispatcher | None = None
        if secret:
            self.webhooks = WebhookDispatcher(
                store=self.job_store, secret=secret, allow_hosts=allow_hosts, settings=settings.jobs
            )
        self.jobs = JobService(
            store=self.job_store,
            queue=self.queue,
            text=self.service,
            admit=admit,
            settings=settings.jobs,
            process_id=f"{socket.gethostname()}:{os.getpid()}",
            webhooks_enabled=self.webhooks is not None,
            webhook_allow_hosts=allow_hosts,
            on_finished=self.webhooks.wake if self.webhooks else lambda: None,
            images=self.images,
            shared_queue=self.shared is not None,
        )
        self.models = ModelHost(
            settings=settings, registry=self.registry, queue=self.queue, text=self.service, jobs=self.jobs,
            images=self.images, embeddings=self.embeddings, runtimes=self.runtimes, remotes=self.remotes,
            image_runtimes=self.image_runtimes, embedding_runtimes=self.embedding_runtimes, breakers=self.breakers,
            runs_here=self._runs_here, observer=self.observer,
        )
        self._reconciling: set[asyncio.Task] = set()
        self._demand: asyncio.Task | None = None
        self.rollouts = RolloutService(
            registry=self.registry, loaded=lambda key: key in self.models.loaded, warm=self._warm,
            windows=self._shared_window if self.shared is not None else None,
        )
        self.pipeline.record.on_rollout_outcome = self.rollouts.observe
        self.shadow = ShadowMirror(
            text=self.pipeline, observe=self.rollouts.observe, record_pair=self.rollouts.record_pair, embed=self._embed
        )
        self.pipeline.record.on_shadow = self.shadow.mirror
        self.app: FastAPI
        if self.process is Process.WORKER:  # probes and nothing else
            self.app = create_worker_app(
                readiness=self.readiness, service=self.service, loaded_models=self.models.runtimes, lifespan=self._lifespan
            )
        else:
            self.app = self._api_app(settings)
        self.on_fatal: Callable[[str], None] = lambda reason: None
        self._loader: asyncio.Task | None = None
        self._drainer: asyncio.Task | None = None
        self._stopped = False

    def _api_app(self, settings: Settings) -> FastAPI:
        return create_app(
            service=self.service,
            pipeline=self.pipeline,
            jobs=self.jobs,
            embeddings=self.embeddings,
            images=self.images,
            templates=self.templates,
            authenticator=self.authenticator,
            admin=self.admin,
            breakers=self.breakers,
            readiness=self.readiness,
            settings=settings,
            registry=self.registry,
            rollouts=self.rollouts,
            loaded_models=self.models.runtimes,
            running_models=self.models.running,
            lifespan=self._lifespan,
        )

    @property
    def workers(self) -> list:
        return self.models.workers

    def _configured_models(self) -> list[ModelSettings]:
        """The config file's models and the built-ins, as registered at start."""
        models = self.settings.served_models()
        path = builtin_embedding_model_path() if self.settings.builtin_models else None
        if path is not None and BUILTIN_EMBEDDING_MODEL not in {m.name for m in models}:
            models.append(ModelSettings(name=BUILTIN_EMBEDDING_MODEL, kind=ModelKind.EMBEDDING, path=path))
        return models

    def _runs_here(self, model: str) -> bool:
        """Whether this process runs `model` (else it only describes it, to check requests)."""
        if self.process is Process.API:
            return False
        return self._worker_models is None or model in self._worker_models

    def _adopt(self, job: Job) -> Callable[[JobEvent], None]:
        return self.jobs.adopt(job)

    async def _announce_auth_change(self) -> None:
        await self.aredis.publish(f"{self.settings.redis_prefix}auth", "changed")

    async def _listen_changes(self) -> None:
        """Changes made on another replica: a key revoked or a tenant changed (forget cached
        lookups now), a model version or alias changed (read the registry, load or unload)."""
        prefix = self.settings.redis_prefix
        while True:
            try:
                async with self.aredis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(f"{prefix}auth", f"{prefix}registry")
                    self.authenticator.forget()  # whatever changed while not listening
                    await self._follow_registry()
                    async for message in pubsub.listen():
                        if message["type"] != "message":
                            continue
                        if message["channel"] == f"{prefix}auth":
                            self.authenticator.forget()
                        else:
                            await self._follow_registry()
            except aioredis.RedisError as e:  # meanwhile the cache's TTL still bounds staleness
                log.warning("lost the change channels (%s); listening again", e)
                await asyncio.sleep(1)

    async def _follow_registry(self) -> None:
        try:
            await self.registry.refresh()
        except Exception as e:
            log.warning("could not read the model registry: %s", e)
            return
        self._reconcile_soon()

    @asynccontextmanager
    async def _lifespan(self, app: FastAPI):
        self.jobs.attach(asyncio.get_running_loop())  # workers may take shared jobs before it starts
        if self.shared is not None:
            self._auth_listener = asyncio.create_task(self._listen_changes(), name="genloom-changes")
        await self.database.migrate()
        await self.registry.sync_config(self._configured_models())
        await self._bootstrap_auth()
        await self.request_log.start()
        if self.webhooks is not None:
            await self.webhooks.start()
        # Models load in the background so /healthz answers at once and /readyz tells the state.
        self._loader = asyncio.create_task(self._load_models())
        try:
            yield
        finally:
            await self.stop()

    async def _bootstrap_auth(self) -> None:
        if self.settings.auth is AuthMode.DISABLED:
            log.warning("AUTH IS DISABLED (auth: disabled): anyone who can reach this server may use and manage it")
            return
        given = self.settings.admin_key.get_secret_value() if self.settings.admin_key else None
        created = await self.admin.bootstrap(given)
        if created is not None:
            # The only time this key is shown: it is stored as a hash.
            print(
                f"\nGenloom admin API key (shown once, store it now):\n\n    {created}\n\n"
                "Use it as the OpenAI client's api_key, or set GENLOOM_ADMIN_KEY to choose the key yourself.\n",
                file=sys.stderr, flush=True,
            )

    async def _load_models(self) -> None:
        try:
            await self.models.reconcile(strict=True)
        except Exception as e:
            log.exception("could not load the models")
            self._fail(f"loading models failed: {type(e).__name__}: {e}")
            return
        if not self.models.loaded:
            self._fail("no models to serve: set builtin_models: true or list models in the config")
            return
        # Jobs accepted before a restart are checked against the loaded models and queued again.
        self.readiness.set(ServerState.READY)
        try:
            await self.jobs.start()
        except Exception as e:
            log.exception("could not recover the job queue")
            self._fail(f"recovering jobs failed: {type(e).__name__}: {e}")
            return
        self.rollouts.resume()
        if self.process is not Process.API:
            self._demand = asyncio.create_task(self.models.follow_demand(), name="genloom-model-demand")
        log.info("ready: serving %s", ", ".join(self.models.loaded))

    def _shared_window(self, rollout: RolloutRecord) -> RedisOutcomes:
        """Scaled out, every API replica counts a rollout's outcomes in Redis and judges them all."""
        return RedisOutcomes(client=self.aredis, prefix=self.settings.redis_prefix, rollout_id=rollout.id,
                             window_s=rollout.plan.gates.window_s)

    async def _warm(self, key: str, requests: int) -> None:
        """Blue-green warm-up: a few short generations on the candidate before it takes traffic."""
        if self.registry.catalog.versions[key].kind not in (ModelKind.TEXT, ModelKind.REMOTE):
            return
        for i in range(requests):
            request = TextRequest(
                endpoint="/v1/chat/completions", model=key, params=SamplingParams(max_tokens=4, temperature=0.0),
                messages=[{"role": "user", "content": "warm-up"}], tier=Tier.PREMIUM, tenant="genloom-warmup",
                id=f"warmup-{key}-{i}",
            )
            await self.pipeline.complete(request, _never_disconnected)

    async def _registry_changed(self) -> None:
        """A version or alias changed here: load or unload what it means, and tell the other processes."""
        if self.shared is not None:
            await self.aredis.publish(f"{self.settings.redis_prefix}registry", "changed")
        self._reconcile_soon()

    def _reconcile_soon(self) -> None:
        if self.readiness.state in (ServerState.READY,):
            task = asyncio.get_running_loop().create_task(self.models.reconcile(), name="genloom-reconcile")
            self._reconciling.add(task)
            task.add_done_callback(self._reconciling.discard)

    async def _embed(self, texts: list[str]) -> list[list[float]]:
        """Vectors from the built-in embedding model (semantic cache, shadow similarity)."""
        request = EmbeddingRequest(model=BUILTIN_EMBEDDING_MODEL, input=texts, tier=Tier.PREMIUM, tenant="genloom-internal")
        result = await self.embeddings.embed(request, _never_disconnected)
        assert result is not None
        return result.vectors

    def _cache_stage(self, settings: Settings) -> Cache:
        c = settings.cache
        if not c.enabled:
            return Cache(exact=None, semantic=None, ttl_s=c.ttl_s, observer=self.observer)

        embed = self._embed
        semantic: SemanticCache
        exact: ResponseCache
        if settings.redis_url:  # shared by every replica
            cache_client = aioredis.Redis.from_url(settings.redis_url)  # bytes: vectors are stored raw
            self._closing.append(cache_client.aclose)
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
        return Cache(exact=exact, semantic=semantic, ttl_s=c.ttl_s, observer=self.observer)

    def _fail(self, reason: str) -> None:
        log.error("%s", reason)
        self.readiness.set(ServerState.FAILED, reason)
        self.on_fatal(reason)

    def begin_drain(self) -> None:
        """SIGTERM: refuse new work now; let accepted work finish within the drain timeout."""
        if self._drainer is None:
            self.readiness.set(ServerState.DRAINING, "shutting down")
            if self.process is Process.WORKER and self.shared is not None:
                self.shared.close()  # take nothing more; what is running finishes, the rest waits for others
            self._drainer = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        deadline = time.monotonic() + self.settings.server.drain_timeout_s
        while self._busy() and time.monotonic() < deadline:
            await asyncio.sleep(_DRAIN_POLL_S)
        if self._busy():
            log.warning(
                "drain timeout: ending %d unfinished requests with an error and releasing %d running jobs to the queue",
                self.pipeline.in_flight + self.embeddings.in_flight, self.jobs.running,
            )
        await self._stop_workers()

    def _busy(self) -> bool:
        return bool(
            self.pipeline.in_flight or self.embeddings.in_flight or self.images.in_flight or self.jobs.running
            or any(w.busy for w in self.models.workers)
        )

    async def _stop_workers(self) -> None:
        for job in self.queue.close():
            job.emit(JobFailed("the server shut down before this request started", retryable=True, shutdown=True))
        await asyncio.gather(*(asyncio.to_thread(w.stop, 30) for w in self.models.workers))

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._drainer is not None:  # SIGTERM: let the drain finish (it is bounded by drain_timeout_s)
            await asyncio.shield(self._drainer)
        if self._loader is not None and not self._loader.done():
            self._loader.cancel()
        await self.rollouts.stop()
        if self._demand is not None:
            self._demand.cancel()
        await self.shadow.stop()
        await self._stop_workers()
        await self.jobs.stop()
        if self.webhooks is not None:
            await self.webhooks.stop()
        await self.request_log.close()
        await self.database.dispose()
        if self._auth_listener is not None:
            self._auth_listener.cancel()
            with suppress(asyncio.CancelledError):
                await self._auth_listener
        if self.shared is not None:
            await asyncio.to_thread(self.shared.stop)
            self.redis.close()
            await self.aredis.aclose()
        for close in self._closing:
            await close()


async def _never_disconnected() -> bool:
    return False


def _blob_store(settings: Settings) -> BlobStore:
    store = settings.store
    if store.blobs is BlobBackend.S3:
        assert store.s3_bucket is not None  # the settings require it
        return S3BlobStore(
            bucket=store.s3_bucket, prefix=store.s3_prefix, endpoint_url=store.s3_endpoint_url, region=store.s3_region,
            access_key_id=store.s3_access_key_id,
            secret_access_key=store.s3_secret_access_key.get_secret_value() if store.s3_secret_access_key else None,
        )
    return FileBlobStore(settings.resolved_data_dir() / "blobs")


def _url_signing_key(settings: Settings) -> bytes:
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


class _DrainingUvicorn(uvicorn.Server):
    """Uvicorn that tells Genloom to drain before it stops accepting connections."""

    def __init__(self, config: uvicorn.Config, genloom: GenloomServer) -> None:
        super().__init__(config)
        self._genloom = genloom

    def handle_exit(self, sig: int, frame) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None:
            loop.call_soon_threadsafe(self._genloom.begin_drain)
        super().handle_exit(sig, frame)
        if sig == signal.SIGTERM:
            # Uvicorn re-raises captured signals after shutdown; a completed drain is a clean exit (0).
            self._captured_signals.remove(sig)


def run(settings: Settings, *, process: Process | None = None, worker_models: list[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT; the exit code is 1 when the models could not be loaded."""
    server = GenloomServer(settings, process=process, worker_models=worker_models)
    config = uvicorn.Config(
        server.app,
        host=settings.server.host,
        port=settings.server.port,
        log_level=settings.server.log_level,
        # Genloom's own drain decides when streams end; uvicorn's timeout is only a backstop.
        timeout_graceful_shutdown=int(settings.server.drain_timeout_s) + 5,
        access_log=False,
    )
    uv = _DrainingUvicorn(config, server)
    failed: list[str] = []

    def stop_on_fatal(reason: str) -> None:
        failed.append(reason)
        uv.should_exit = True

    server.on_fatal = stop_on_fatal
    uv.run()
    return 1 if failed else 0
