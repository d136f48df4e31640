"""One running process: start (migrate, register the config's models, load them, recover jobs),
follow changes made elsewhere (auth, registry), drain on SIGTERM, stop. The components it runs
are built by `wiring.py`; what it runs depends on its role (`roles.py`)."""

from __future__ import annotations

import asyncio
import shutil
import logging
import os
import socket
import sys
import time
from pathlib import Path
from datetime import UTC, datetime, timedelta
from collections.abc import Callable, Mapping
from contextlib import asynccontextmanager, suppress

import redis.asyncio as aioredis
from fastapi import FastAPI

from genloom.api import create_app
from genloom.api.app import create_worker_app
from genloom.config import AuthMode, ModelKind, Settings
from genloom.gateway import ServerState, TextRequest
from genloom.gateway.embedding_service import EmbeddingRequest
from genloom.guardrails.scan import Scanner
from genloom.jobs import Job, JobEvent, JobFailed, SamplingParams, Tier
from genloom.server.heartbeat import ProcessCard, announce, follow_presence, list_workers, statuses
from genloom.server.roles import Process, check_role, runs_here
from genloom.server.wiring import BUILTIN_EMBEDDING_MODEL, Components, build_components, configured_models
from genloom.telemetry import Observer
from genloom.telemetry.metrics import Gauges, PrometheusObserver
from genloom.gateway.batches import BatchService
from genloom.store.batches import BatchStore
from genloom.telemetry.observer import combine
from genloom.telemetry.tracing import setup_tracing
from genloom.gateway.fine_tune_runner import FineTuneRunner, fine_tuned_name, short_id, training_metadata
from genloom.registry.registry import settings_of
from genloom.registry.versions import fine_tuned_alias, model_name
from genloom.runtimes.lora import Result, pack_adapter
from genloom.runtimes.text import TextRuntime, pick_device
from genloom.store.fine_tuning import FineTuningJob
from genloom.gateway.fine_tune_gate import Evaluation
from genloom.registry.rollout import RolloutPlan, RolloutStrategy
from genloom.worker.adapter_worker import AdapterWorker

log = logging.getLogger("genloom.server")
_DRAIN_POLL_S = 0.05


class GenloomServer:
    def __init__(
        self, settings: Settings, *, process: Process | None = None, worker_models: list[str] | None = None,
        observer: Observer | None = None, scanners: Mapping[str, Scanner] | None = None,
    ) -> None:
        """`worker_models`: the models a worker process runs (default: all it serves); `observer`
        hears from every pipeline stage and worker (none by default); `scanners` are guards of a
        deployment's own beside the built-in ones (policies turn them on by name)."""
        self.settings = settings
        self.process = process or Process(settings.server.role.value)
        check_role(self.process, settings)
        chosen = set(worker_models) if worker_models else None
        # Prometheus metrics (on by default) hear everything the given observer hears.
        self.metrics = PrometheusObserver(per_tenant=settings.metrics.per_tenant) if settings.metrics.enabled else None
        self.observer = combine(observer, self.metrics)
        # Traces when the OTEL_* environment asks for them (off otherwise).
        self.tracing = setup_tracing(
            service=f"genloom-{self.process.value}", capture_content=settings.telemetry.capture_content
        )
        self.c: Components = build_components(
            settings, process=self.process, runs_here=lambda model: runs_here(self.process, chosen, model),
            observer=self.observer, hooks=self, scanners=scanners, tracing=self.tracing,
        )
        self.on_fatal: Callable[[str], None] = lambda reason: None
        self._listener: asyncio.Task | None = None
        self._loader: asyncio.Task | None = None
        self._drainer: asyncio.Task | None = None
        self._demand: asyncio.Task | None = None
        self._reconciling: set[asyncio.Task] = set()
        self._heartbeat: asyncio.Task | None = None
        self._presence: asyncio.Task | None = None
        self._stopped = False
        c = self.c
        self._job_counts: dict[str, int] = {}
        self._job_counter: asyncio.Task | None = None
        self._monitor: asyncio.Task | None = None
        self._content_purge: asyncio.Task | None = None
        self._usage: asyncio.Task | None = None
        self.fine_tune_runner: FineTuneRunner | None = None
        if self.metrics is not None:
            self.metrics.watch(self._gauges())
        exposition = self.metrics.exposition if self.metrics is not None else None
        # This process as the cluster's worker list shows it (its id is its queue owner's, so a
        # card names the holder of the leases).
        self.card = ProcessCard(
            worker_id=c.shared.owner if c.shared is not None else f"{socket.gethostname()}:{os.getpid()}",
            readiness=c.readiness, workers=lambda: c.models.workers, on_demand=c.models.on_demand,
        )
        self.app: FastAPI
        if self.process is Process.WORKER:  # probes and nothing else
            self.app = create_worker_app(
                readiness=c.readiness, service=c.service, loaded_models=c.models.runtimes,
                local_workers=lambda: statuses(c.models.workers), settings=settings, metrics=exposition, lifespan=self._lifespan,
            )
        else:
            self.app = create_app(
                service=c.service, pipeline=c.pipeline, jobs=c.jobs, embeddings=c.embeddings, images=c.images,
                templates=c.templates, authenticator=c.authenticator, admin=c.admin, breakers=c.breakers,
                readiness=c.readiness, settings=settings, registry=c.registry, rollouts=c.rollouts,
                loaded_models=c.models.runtimes, running_models=c.models.running, model_work=c.models.work,
                local_workers=lambda: statuses(c.models.workers),
                presence=c.presence if self.process is Process.API else None,
                list_workers=lambda: list_workers(c.workers, self.card), metrics=exposition, lifespan=self._lifespan,
                tracing=self.tracing, monitors=c.monitors, responses=c.responses,
                batches=BatchService(store=BatchStore(database=c.database), jobs=c.jobs, job_store=c.job_store,
                                     files=c.images.files),
                guardrails=c.guardrails, policies=c.policies, audit=c.audit, feedback=c.feedback if settings.feedback.enabled else None,
                datasets=c.datasets, deletion=c.deletion,
                fine_tuning=c.fine_tuning if settings.fine_tuning.enabled else None, usage=c.usage,
            )

    def _gauges(self) -> Gauges:
        c = self.c

        def depths() -> dict[str, dict[str, int]]:
            return {m: {k.value: n for k, n in by.items()} for m, by in c.queue.depths().items()}

        def workers() -> dict[str, int]:
            """Per version served: live workers, 0 included (the "no workers" alert needs the zero)."""
            if self.process is Process.API:
                live = c.presence.counts()
                return {key: live.get(key, 0) for key in c.models.loaded} | live
            counts: dict[str, int] = {}
            for w in c.models.workers:
                counts[w.model] = counts.get(w.model, 0) + int(w.health().ok)
            return counts

        return Gauges(
            queue_depth=depths,
            running=lambda: {w.model: w.occupancy for w in c.models.workers},
            workers=workers,
            breakers_open=lambda: {m: b.snapshot().state.value == "open" for m, b in list(c.breakers.items())},
            jobs=lambda: dict(self._job_counts),
            drift=c.monitors.drift_scores if c.monitors is not None else dict,
            data_dir=lambda: data_dir_usage(self.settings),
        )

    async def _count_jobs(self) -> None:
        """Jobs per state for the metrics, counted every `metrics.jobs_refresh_s` (not per scrape)."""
        while True:
            try:
                self._job_counts = await self.c.job_store.count_by_state()
            except Exception as e:  # the database away: the gauge keeps its last counts
                log.warning("could not count jobs for the metrics: %s", e)
            await asyncio.sleep(self.settings.metrics.jobs_refresh_s)

    # What tests and tools read of a running server.
    @property
    def queue(self):
        return self.c.queue

    @property
    def pipeline(self):
        return self.c.pipeline

    @property
    def request_log(self):
        return self.c.request_log

    @property
    def workers(self) -> list:
        return self.c.models.workers

    # Hooks the components call back into (wiring.Hooks).
    def adopt(self, job: Job) -> Callable[[JobEvent], None]:
        return self.c.jobs.adopt(job)

    async def auth_changed(self) -> None:
        assert self.c.aredis is not None
        await self.c.aredis.publish(f"{self.settings.redis_prefix}auth", "changed")

    async def registry_changed(self) -> None:
        """A version or alias changed here: load or unload what it means, and tell the other processes."""
        if self.c.aredis is not None:
            await self.c.aredis.publish(f"{self.settings.redis_prefix}registry", "changed")
        self._reconcile_soon()

    async def warm(self, key: str, requests: int) -> None:
        """Blue-green warm-up: a few short generations on the candidate before it takes traffic."""
        if self.c.registry.catalog.versions[key].kind not in (ModelKind.TEXT, ModelKind.REMOTE):
            return
        for i in range(requests):
            request = TextRequest(
                endpoint="/v1/chat/completions", model=key, params=SamplingParams(max_tokens=4, temperature=0.0),
                messages=[{"role": "user", "content": "warm-up"}], tier=Tier.PREMIUM, tenant="genloom-warmup",
                id=f"warmup-{key}-{i}",
            )
            await self.c.pipeline.complete(request, _never_disconnected)

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """Vectors from the built-in embedding model (semantic cache, shadow similarity)."""
        request = EmbeddingRequest(model=BUILTIN_EMBEDDING_MODEL, input=texts, tier=Tier.PREMIUM, tenant="genloom-internal")
        result = await self.c.embeddings.embed(request, _never_disconnected)
        assert result is not None
        return result.vectors

    @asynccontextmanager
    async def _lifespan(self, app: FastAPI):
        c = self.c
        c.jobs.attach(asyncio.get_running_loop())  # workers may take shared jobs before it starts
        if c.aredis is not None:
            self._listener = asyncio.create_task(self._listen_changes(), name="genloom-changes")
        if c.workers is not None and self.process is Process.API:
            every_s = self.settings.queue.heartbeat_s
            self._presence = asyncio.create_task(follow_presence(c.workers, c.presence, every_s), name="genloom-presence")
        await c.database.migrate()
        await c.registry.sync_config(configured_models(self.settings))
        await self._bootstrap_auth()
        await c.request_log.start()
        if c.webhooks is not None:
            await c.webhooks.start()
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
        created = await self.c.admin.bootstrap(given)
        if created is not None:
            # The only time this key is shown: it is stored as a hash.
            print(
                f"\nGenloom admin API key (shown once, store it now):\n\n    {created}\n\n"
                "Use it as the OpenAI client's api_key, or set GENLOOM_ADMIN_KEY to choose the key yourself.\n",
                file=sys.stderr, flush=True,
            )

    async def _load_models(self) -> None:
        c = self.c
        try:
            await c.models.reconcile(strict=True)
        except Exception as e:
            log.exception("could not load the models")
            self._fail(f"loading models failed: {type(e).__name__}: {e}")
            return
        if not c.models.loaded:
            self._fail("no models to serve: set builtin_models: true or list models in the config")
            return
        if self.process is not Process.WORKER:  # the guards' classifiers load now, not on a first request
            try:
                await asyncio.to_thread(c.guardrails.warm)
            except Exception as e:
                log.exception("could not load the guard scanners")
                self._fail(f"loading the guard scanners failed: {type(e).__name__}: {e}")
                return
        # Jobs accepted before a restart are checked against the loaded models and queued again.
        c.readiness.set(ServerState.READY)
        try:
            await c.jobs.start()
        except Exception as e:
            log.exception("could not recover the job queue")
            self._fail(f"recovering jobs failed: {type(e).__name__}: {e}")
            return
        c.rollouts.resume()
        if self.process is not Process.API and self.settings.fine_tuning.enabled:
            self.fine_tune_runner = FineTuneRunner(
                store=c.fine_tuning.store, blobs=c.images.files.blobs, settings=self.settings.fine_tuning,
                data_dir=self.settings.resolved_data_dir(), bases=self._trainable_bases, register=self._register_fine_tuned,
                busy=self._serving_busy, device=str(pick_device(self.settings.runtime.device)),
                flagged=self._guard_flags,
            )
            self.fine_tune_runner.start()
        if self.metrics is not None and self.process is not Process.WORKER:
            self._job_counter = asyncio.create_task(self._count_jobs(), name="genloom-job-counts")
        if c.monitors is not None:
            self._monitor = asyncio.create_task(c.monitors.run_forever(), name="genloom-monitors")
        if self.process is not Process.WORKER:
            self._content_purge = asyncio.create_task(self._drop_old_content(), name="genloom-content-purge")
            self._usage = asyncio.create_task(self._keep_usage(), name="genloom-usage")
        every_s = self.settings.queue.heartbeat_s
        if c.workers is not None and self.process is not Process.API:
            self._heartbeat = asyncio.create_task(announce(c.workers, self.card, every_s), name="genloom-heartbeat")
        if self.process is not Process.API and c.models.limited:
            self._demand = asyncio.create_task(c.models.follow_demand(), name="genloom-model-demand")
        log.info("ready: serving %s", ", ".join(c.models.loaded))

    def _trainable_bases(self) -> dict[str, Path]:
        """The text versions whose weights this process holds and that are not adapters themselves."""
        return {key: rt.path for key, rt in self.c.models.runtimes().items()
                if isinstance(rt, TextRuntime) and rt.model is not None and rt.adapter is None}

    def _guard_flags(self, texts: list[str]) -> int:
        """How many of these answers the unsafe-content or secrets scanner scores over its threshold."""
        g = self.c.guardrails
        return sum(1 for text in texts if any(
            f.score >= g.threshold(name, f.category) for name in ("unsafe", "secrets") for f in g.scanner(name).scan(text)))

    def _serving_busy(self) -> bool:
        """Requests are queued or running here: a training step waits."""
        c = self.c
        return any(w.busy for w in c.models.workers) or any(n for by in c.queue.depths().values() for n in by.values())

    async def _register_fine_tuned(self, job: FineTuningJob, adapter: Path, result: Result,
                                   evaluation: Evaluation) -> tuple[str, str, str | None]:
        """The adapter as a new version of its base model, under the alias its `ft:` name resolves
        to; a canary rollout of it when it passed the evaluation gate (and `auto_canary` is on)."""
        base = settings_of(self.c.registry.catalog.version(job.base_version))
        # The adapter goes to the blob store, so every process that serves the version can fetch it.
        blob = await asyncio.to_thread(lambda: self.c.images.files.blobs.put(pack_adapter(adapter)))
        added = await self.c.registry.register(
            base.model_copy(update={"adapter_blob": blob}), metadata=training_metadata(job, result, evaluation),
            actor=f"fine-tuning:{job.id}", aliases=(fine_tuned_alias(job.suffix or "custom", short_id(job.id)),),
        )
        rollout = None
        # A canary sends some of everyone's traffic to the version: only for jobs an admin started.
        if evaluation.passed and self.settings.fine_tuning.auto_canary and job.created_by_admin:
            try:
                record = await self.c.rollouts.start(
                    added.name, strategy=RolloutStrategy.CANARY, candidate=added.version,
                    plan=RolloutPlan(percent=self.settings.fine_tuning.canary_percent,
                                     step_after_requests=self.settings.fine_tuning.canary_step_requests),
                    actor=f"fine-tuning:{job.id}")
                rollout = record.id
            except Exception as e:  # another rollout of the model is active, say: the version waits
                log.warning("no canary for %s: %s", added.key, e)
        return added.key, fine_tuned_name(job), rollout

    async def _keep_usage(self, every_s: float = 5.0) -> None:
        """The console's usage series: each model's queue depth sampled, the figures written,
        every `every_s`; rows older than two days pruned every hour."""
        c, pruned_at = self.c, 0.0
        while True:
            await asyncio.sleep(every_s)
            try:
                for model, by_class in (await asyncio.to_thread(c.queue.depths)).items():
                    c.usage.queue_depth(model=model_name(model), depth=sum(by_class.values()))
                await c.usage.flush()
                if time.time() - pruned_at > 3600:
                    await c.usage.prune()
                    pruned_at = time.time()
            except Exception as e:  # the store or the queue away: the next round tries again
                log.warning("usage series: %s", e)

    async def _drop_old_content(self) -> None:
        """Prompts and answers older than feedback.keep_content_days leave the request log (every
        API process does this; the update is idempotent)."""
        keep_s = self.settings.feedback.keep_content_days * 86400
        while True:
            try:
                dropped = await self.c.request_log.drop_content(before=datetime.now(UTC) - timedelta(seconds=keep_s))
                if dropped:
                    log.info("dropped the content of %d requests older than %g days", dropped,
                             self.settings.feedback.keep_content_days)
            except Exception as e:  # the store is down: the next round tries again
                log.warning("could not drop old request content: %s", e)
            await asyncio.sleep(self.settings.feedback.purge_interval_s)

    async def _listen_changes(self) -> None:
        """Changes made on another replica: a key revoked or a tenant changed (forget cached
        lookups now), a model version or alias changed (read the registry, load or unload)."""
        prefix, aredis = self.settings.redis_prefix, self.c.aredis
        assert aredis is not None
        while True:
            try:
                async with aredis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(f"{prefix}auth", f"{prefix}registry")
                    self.c.authenticator.forget()  # whatever changed while not listening
                    await self._follow_registry()
                    while True:
                        # Polled with a timeout shorter than the client's socket timeout: an idle
                        # channel is not an error, a Redis that stopped answering is.
                        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                        if message is None or message["type"] != "message":
                            continue
                        if message["channel"] == f"{prefix}auth":
                            self.c.authenticator.forget()
                        else:
                            await self._follow_registry()
            except aioredis.RedisError as e:  # meanwhile the cache's TTL still bounds staleness
                log.warning("lost the change channels (%s); listening again", e)
                await asyncio.sleep(1)

    async def _follow_registry(self) -> None:
        try:
            await self.c.registry.refresh()
        except Exception as e:
            log.warning("could not read the model registry: %s", e)
            return
        self._reconcile_soon()

    def _reconcile_soon(self) -> None:
        if self.c.readiness.state is ServerState.READY:
            task = asyncio.get_running_loop().create_task(self.c.models.reconcile(), name="genloom-reconcile")
            self._reconciling.add(task)
            task.add_done_callback(self._reconciling.discard)

    def _fail(self, reason: str) -> None:
        log.error("%s", reason)
        self.c.readiness.set(ServerState.FAILED, reason)
        self.on_fatal(reason)

    def begin_drain(self) -> None:
        """SIGTERM: refuse new work now; let accepted work finish within the drain timeout."""
        if self._drainer is None:
            self.c.readiness.set(ServerState.DRAINING, "shutting down")
            if self.process is Process.WORKER and self.c.shared is not None:
                self.c.shared.close()  # take nothing more; what is running finishes, the rest waits for others
            self._drainer = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        deadline = time.monotonic() + self.settings.server.drain_timeout_s
        while self._busy() and time.monotonic() < deadline:
            await asyncio.sleep(_DRAIN_POLL_S)
        if self._busy():
            c = self.c
            log.warning(
                "drain timeout: ending %d unfinished requests with an error and releasing %d running jobs to the queue",
                c.pipeline.in_flight + c.embeddings.in_flight, c.jobs.running,
            )
        await self._stop_workers()

    def _busy(self) -> bool:
        c = self.c
        return bool(
            c.pipeline.in_flight or c.embeddings.in_flight or c.images.in_flight or c.jobs.running
            or any(w.busy for w in c.models.workers)
        )

    async def _stop_workers(self) -> None:
        for job in self.c.queue.close():
            job.emit(JobFailed("the server shut down before this request started", retryable=True, shutdown=True))
        # Workers with threads first: a base fails what its batch holds, adapters' rows included, as a
        # shutdown; then the versions attached to them detach, with nothing left to fail.
        workers = self.c.models.workers
        await asyncio.gather(*(asyncio.to_thread(w.stop, 30) for w in workers if not isinstance(w, AdapterWorker)))
        await asyncio.gather(*(asyncio.to_thread(_quietly, w.stop, 30) for w in workers if isinstance(w, AdapterWorker)))

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        c = self.c
        if self._drainer is not None:  # SIGTERM: let the drain finish (it is bounded by drain_timeout_s)
            await asyncio.shield(self._drainer)
        for task in (self._loader, self._demand, self._presence, self._job_counter, self._monitor, self._content_purge,
                     self._usage):
            if task is not None and not task.done():
                task.cancel()
        if self._heartbeat is not None:  # its card is withdrawn: the API replicas stop sending work here
            self._heartbeat.cancel()
            with suppress(asyncio.CancelledError):
                await self._heartbeat
        if self.fine_tune_runner is not None:  # a job in training goes back to the queue, resumed by the next start
            await self.fine_tune_runner.stop()
        await c.rollouts.stop()
        await c.shadow.stop()
        await self._stop_workers()
        await c.jobs.stop()
        if c.webhooks is not None:
            await c.webhooks.stop()
        await c.request_log.close()
        await c.audit.close()
        try:
            await c.usage.flush()  # the last seconds' figures
        except Exception as e:
            log.warning("usage series: the last figures were not written: %s", e)
        await c.database.dispose()
        if self._listener is not None:
            self._listener.cancel()
            with suppress(asyncio.CancelledError):
                await self._listener
        if c.shared is not None:
            await asyncio.to_thread(c.shared.stop)
        if c.redis is not None:
            c.redis.close()
        if c.aredis is not None:
            await c.aredis.aclose()
        for close in c.closing:
            await close()
        await asyncio.to_thread(self.tracing.shutdown)  # the last spans go out


def data_dir_usage(settings: Settings) -> tuple[int, int] | None:
    """(free, total) bytes of the data dir's filesystem; None when it does not exist here."""
    try:
        usage = shutil.disk_usage(settings.resolved_data_dir())
    except OSError:
        return None
    return usage.free, usage.total


async def _never_disconnected() -> bool:
    return False


def _quietly(stop: Callable[[float], None], timeout: float) -> None:
    try:
        stop(timeout)
    except TimeoutError as e:  # shutting down anyway
        log.warning("%s", e)
