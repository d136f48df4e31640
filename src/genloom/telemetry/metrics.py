"""Prometheus metrics: an Observer that counts what the pipeline and the workers report, plus
gauges read when Prometheus scrapes (queue depth, rows running, workers, breakers, jobs by
state). Each process keeps its own registry and exports it at `GET /metrics`.

Names follow Prometheus' conventions (`_total` counters, `_seconds` histograms, base units);
where vLLM or the OpenTelemetry GenAI conventions name the same thing, the docs say which
(docs/observability.md). Labels are bounded: models are versions the registry holds, routes and
tiers are fixed sets; a tenant label only with `metrics.per_tenant`."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, Summary, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.gc_collector import GCCollector

log = logging.getLogger("genloom.telemetry")

# Latency buckets from 5 ms to 2 minutes: a cache hit and a long CPU generation both land inside.
_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
_PER_TOKEN = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5)
_BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass(frozen=True)
class GpuUsage:
    device: str
    used_bytes: int  # the whole device's, every process's
    total_bytes: int
    allocated_bytes: int  # this process's tensors
    utilization: float | None  # 0..1 over the driver's last sample period; None without NVML (pynvml)


def gpu_usage() -> list[GpuUsage]:
    """Each CUDA device this process already uses (never the first CUDA call: that would make a
    context, and take GPU memory, on an API replica that runs no model)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return []
    found = []
    for i in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(i)
        try:
            utilization: float | None = torch.cuda.utilization(i) / 100
        except Exception:  # pynvml is not installed, or NVML cannot be read
            utilization = None
        found.append(GpuUsage(str(i), total - free, total, torch.cuda.memory_allocated(i), utilization))
    return found


@dataclass
class Gauges:
    """What the process knows now, read at each scrape (each callable must be cheap and safe
    from any thread): waiting work per model and class, rows running per model, workers per
    model, open breakers, jobs per state (as last counted)."""

    queue_depth: Callable[[], Mapping[str, Mapping[str, int]]] = dict
    running: Callable[[], Mapping[str, int]] = dict
    workers: Callable[[], Mapping[str, int]] = dict
    breakers_open: Callable[[], Mapping[str, bool]] = dict
    jobs: Callable[[], Mapping[str, int]] = dict
    drift: Callable[[], Mapping[str, tuple[float, bool]]] = dict  # per model: (MMD², alert)
    data_dir: Callable[[], tuple[int, int] | None] = lambda: None  # (free, total) bytes
    gpus: Callable[[], list[GpuUsage]] = lambda: gpu_usage()


class _GaugeCollector:
    def __init__(self, gauges: Gauges) -> None:
        self._gauges = gauges

    def collect(self) -> Iterable[GaugeMetricFamily]:
        g = self._gauges
        families = [
            ("genloom_queue_depth", "Requests and jobs waiting, per model and request class.", ["model", "class"],
             lambda: [((m, c), n) for m, by_class in g.queue_depth().items() for c, n in by_class.items()]),
            ("genloom_running", "Batch rows (sequences, images, texts) running on this process's workers, per model.",
             ["model"], lambda: [((m,), n) for m, n in g.running().items()]),
            ("genloom_workers", "Worker threads taking jobs for a model (on an API replica: live worker processes).",
             ["model"], lambda: [((m,), n) for m, n in g.workers().items()]),
            ("genloom_breaker_open", "1 while a remote model's circuit breaker is open.", ["model"],
             lambda: [((m,), int(is_open)) for m, is_open in g.breakers_open().items()]),
            ("genloom_jobs", "Async jobs per state, as last counted in the store.", ["state"],
             lambda: [((s,), n) for s, n in g.jobs().items()]),
            ("genloom_drift_score", "Drift of prompts from the reference window: MMD² of their embeddings (0: alike).",
             ["model"], lambda: [((m,), score) for m, (score, _) in g.drift().items()]),
            ("genloom_drift_alert", "1 while a model's prompt drift test is below its p-value threshold.",
             ["model"], lambda: [((m,), int(alert)) for m, (_, alert) in g.drift().items()]),
            ("genloom_gpu_memory_used_bytes", "GPU memory in use on the device (every process's).", ["device"],
             lambda: [((u.device,), u.used_bytes) for u in g.gpus()]),
            ("genloom_gpu_memory_total_bytes", "GPU memory on the device.", ["device"],
             lambda: [((u.device,), u.total_bytes) for u in g.gpus()]),
            ("genloom_gpu_memory_allocated_bytes", "GPU memory held by this process's tensors.", ["device"],
             lambda: [((u.device,), u.allocated_bytes) for u in g.gpus()]),
            ("genloom_gpu_utilization_ratio", "Share of time the GPU was busy over the driver's last sample period (needs pynvml).",
             ["device"], lambda: [((u.device,), u.utilization) for u in g.gpus() if u.utilization is not None]),
            ("genloom_data_dir_free_bytes", "Free bytes on the data dir's filesystem.", [],
             lambda: [((), usage[0])] if (usage := g.data_dir()) else []),
            ("genloom_data_dir_size_bytes", "Size in bytes of the data dir's filesystem.", [],
             lambda: [((), usage[1])] if (usage := g.data_dir()) else []),
        ]
        for name, doc, labels, read in families:
            family = GaugeMetricFamily(name, doc, labels=labels)
            try:
                for values, value in read():
                    family.add_metric(list(values), float(value))
            except Exception as e:  # a scrape must not fail because one source is away (Redis down)
                log.warning("metrics: could not read %s: %s", name, e)
            yield family


class PrometheusObserver:
    """The Observer as Prometheus metrics. Thread-safe (prometheus-client's metrics are)."""

    def __init__(self, *, per_tenant: bool = False, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.per_tenant = per_tenant
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        request_labels = ["route", "model", "version", "tier", "status"] + (["tenant"] if per_tenant else [])
        self._requests = Counter("genloom_requests", "Requests finished, by route, model, version answering, tier and outcome.",
                                request_labels, registry=r)
        self._request_duration = Histogram("genloom_request_duration_seconds", "Time from a request's arrival to its end.",
                                          ["route", "model"], buckets=_SECONDS, registry=r)
        self._ttft = Histogram("genloom_time_to_first_token_seconds", "Time from a text request's arrival to its first token.",
                              ["model"], buckets=_SECONDS, registry=r)
        self._tpot = Histogram("genloom_time_per_output_token_seconds", "Mean time between output tokens of a text request after its first.",
                              ["model"], buckets=_PER_TOKEN, registry=r)
        self._queue_wait = Histogram("genloom_queue_wait_seconds", "Time a request or job waited in line before a worker started it.",
                                    ["model", "class", "tier"], buckets=_SECONDS, registry=r)
        self._batch_size = Histogram("genloom_batch_size", "Rows in a batch when jobs joined it.", ["model"], buckets=_BATCH, registry=r)
        self._tokens = Counter("genloom_tokens", "Tokens processed, prompt and completion.", ["model", "kind"], registry=r)
        self._images = Counter("genloom_images", "Pictures generated.", ["model"], registry=r)
        self._cache = Counter("genloom_cache_lookups", "Response cache lookups.", ["kind", "result"], registry=r)
        self._rate_limited = Counter("genloom_rate_limited", "Requests refused by a rate limit or quota.", ["limit"], registry=r)
        self._fallbacks = Counter("genloom_fallbacks", "Requests that moved from one model to the next of its fallback chain.",
                                 ["from_model", "to_model"], registry=r)
        self._job_retries = Counter("genloom_job_retries", "Async job attempts that failed and were retried.", ["model"], registry=r)
        self._webhooks = Counter("genloom_webhook_deliveries", "Webhook delivery attempts.", ["result"], registry=r)
        self._rollout = Counter("genloom_rollout_requests", "Requests routed by a rollout, per arm.", ["model", "version", "arm"],
                               registry=r)
        self._rollouts_ended = Counter("genloom_rollouts_ended", "Rollouts that ended, by outcome (promoted, rolled_back).",
                                       ["model", "outcome"], registry=r)
        self._guard = Counter("genloom_guard_decisions", "Guard scanner decisions.", ["scanner", "stage", "action"], registry=r)
        self._feedback = Counter("genloom_feedback", "Ratings of answers (POST /v1/feedback), positive when scored 0.5 or more.",
                                 ["model", "version", "sentiment"], registry=r)
        self._feedback_score = Summary("genloom_feedback_score", "Ratings' scores on 0..1 (mean: _sum / _count).",
                                       ["model", "version"], registry=r)

    def watch(self, gauges: Gauges) -> None:
        """Add the gauges read at each scrape."""
        self.registry.register(_GaugeCollector(gauges))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    # -- the Observer's events ---------------------------------------------------------------

    def request_started(self, *, route: str, model: str, tier: str) -> None:
        pass  # in-flight requests are not a label set worth its cardinality; the end counts

    def request_finished(
        self, *, route: str, model: str, version: str, tier: str, status: str, duration_s: float, tenant: str = "",
    ) -> None:
        labels = [route, model, version, tier, status] + ([tenant] if self.per_tenant else [])
        self._requests.labels(*labels).inc()
        self._request_duration.labels(route, model).observe(duration_s)

    def queue_wait(self, *, model: str, request_class: str, tier: str, seconds: float) -> None:
        self._queue_wait.labels(model, request_class, tier).observe(seconds)

    def first_token(self, *, model: str, seconds: float) -> None:
        self._ttft.labels(model).observe(seconds)

    def time_per_output_token(self, *, model: str, seconds: float) -> None:
        self._tpot.labels(model).observe(seconds)

    def tokens(self, *, model: str, prompt: int, completion: int) -> None:
        if prompt:
            self._tokens.labels(model, "prompt").inc(prompt)
        if completion:
            self._tokens.labels(model, "completion").inc(completion)

    def images_generated(self, *, model: str, count: int) -> None:
        self._images.labels(model).inc(count)

    def batch_formed(self, *, model: str, size: int) -> None:
        self._batch_size.labels(model).observe(size)

    def cache_lookup(self, *, kind: str, hit: bool) -> None:
        self._cache.labels(kind, "hit" if hit else "miss").inc()

    def rate_limited(self, *, limit: str) -> None:
        self._rate_limited.labels(limit).inc()

    def fallback(self, *, from_model: str, to_model: str) -> None:
        self._fallbacks.labels(from_model, to_model).inc()

    def job_retried(self, *, model: str) -> None:
        self._job_retries.labels(model).inc()

    def webhook_delivery(self, *, result: str) -> None:
        self._webhooks.labels(result).inc()

    def rollout_arm(self, *, model: str, version: str, arm: str) -> None:
        self._rollout.labels(model, version, arm).inc()

    def rollout_ended(self, *, model: str, outcome: str) -> None:
        self._rollouts_ended.labels(model, outcome).inc()

    def guard_decision(self, *, scanner: str, stage: str, action: str) -> None:
        self._guard.labels(scanner, stage, action).inc()

    def feedback(self, *, model: str, version: str, score: float) -> None:
        self._feedback.labels(model, version, "positive" if score >= 0.5 else "negative").inc()
        self._feedback_score.labels(model, version).observe(score)
