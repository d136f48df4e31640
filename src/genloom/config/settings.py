from __future__ import annotations

import contextlib
import contextvars
import difflib
import os
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict, YamlConfigSettingsSource

BUILTIN_MODELS_DIR = Path(__file__).resolve().parent.parent / "builtin" / "models"
_yaml_file: contextvars.ContextVar[Path | None] = contextvars.ContextVar("genloom_yaml_file", default=None)


class ConfigError(ValueError):
    """The configuration is invalid; the message names every bad key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Role(str, Enum):
    """What `genloom serve` runs: everything in one process, or only the API (workers are
    `genloom worker` processes that take from the shared queue; needs redis_url)."""

    ALL = "all"
    API = "api"


class ServerSettings(_Section):
    role: Role = Field(Role.ALL, description="all: API and workers in one process; api: the API only (scale-out)")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    drain_timeout_s: float = Field(30.0, ge=0, description="SIGTERM: how long in-flight requests may finish")
    log_level: str = "info"
    max_header_bytes: int = Field(65_536, ge=1024, description="a request line and headers larger than this get 431")
    header_timeout_s: float = Field(10.0, gt=0, description="a request's headers must arrive within this, else 408 (slow clients)")
    body_timeout_s: float = Field(30.0, gt=0, description="a request body that stops arriving this long ends the connection")


class ApiSettings(_Section):
    max_body_bytes: int = Field(1_048_576, gt=0, description="larger request bodies get 413")
    default_max_tokens: int = Field(256, gt=0, description="used when a request gives no max_tokens")
    max_n: int = Field(8, gt=0, description="most choices one request may ask for")
    max_file_bytes: int = Field(104_857_600, gt=0, description="POST /v1/files: larger uploads get 413")
    max_json_depth: int = Field(64, gt=0, description="JSON bodies (and batch lines) nested deeper than this get 400")


class TierSettings(_Section):
    weight: float = Field(gt=0, description="share of a class's service while tiers compete")
    max_wait_s: float = Field(gt=0, description="aging: a job waiting this long goes before non-aged ones")
    timeout_s: float | None = Field(
        None, gt=0,
        description="a realtime request that hears nothing from its job this long ends with 503 (never started) or 504; "
        "default 2 x max_wait_s, so an aged request still has time to run",
    )

    @property
    def realtime_timeout_s(self) -> float:
        return self.timeout_s if self.timeout_s is not None else 2 * self.max_wait_s


def _default_tiers() -> dict[str, TierSettings]:
    return {
        "premium": TierSettings(weight=6, max_wait_s=10),
        "standard": TierSettings(weight=3, max_wait_s=30),
        "free": TierSettings(weight=1, max_wait_s=120),
    }


class QueueSettings(_Section):
    """Scheduling: realtime (the chat/completions endpoints) strictly before async (the jobs API);
    within a class, tiers share by weight, tenants within a tier share equally, FIFO per tenant."""

    max_queued: int = Field(256, gt=0, description="realtime requests waiting per model beyond this get 503")
    max_queued_async: int = Field(10_000, gt=0, description="async jobs waiting per model beyond this get 503")
    tenant_max_share: float = Field(0.5, gt=0, le=1, description="one tenant may hold at most this share of a class's queue (429 beyond)")
    retry_after_s: int = Field(1, ge=0)
    tiers: dict[str, TierSettings] = Field(default_factory=_default_tiers)
    lease_s: float = Field(30.0, gt=0, description="shared queue: a worker that stops renewing its lease this long loses its jobs")
    heartbeat_s: float = Field(1.0, gt=0, description="shared queue: how often a worker process announces itself in Redis")
    generation_timeout_s: float = Field(
        600.0, gt=0, description="a realtime picture or embedding request started by a worker that has not answered this long ends with 504",
    )
    worker_ttl_s: float = Field(5.0, gt=0, description="shared queue: a worker not heard from this long is taken for gone")
    max_deliveries: int = Field(5, ge=1, description="shared queue: a job handed out this often without finishing becomes a dead letter")

    @field_validator("tiers")
    @classmethod
    def _every_tier(cls, tiers: dict[str, TierSettings]) -> dict[str, TierSettings]:
        expected = set(_default_tiers())
        if set(tiers) != expected:
            raise ValueError(f"give exactly the tiers {sorted(expected)}, got {sorted(tiers)}")
        return tiers


class ClassificationSettings(_Section):
    """How a request gets its tier, tenant and cost until tenants and API keys exist."""

    default_tier: str = Field("free", pattern="^(premium|standard|free)$")
    default_tenant: str = "default"
    trust_tier_header: bool = Field(
        True, description="take the tier from the X-Genloom-Tier header and the tenant from X-Genloom-Tenant"
    )
    prompt_token_cost: float = Field(1.0, ge=0, description="cost = prompt tokens x this + max_tokens x completion_token_cost")
    completion_token_cost: float = Field(1.0, ge=0)


class JobsSettings(_Section):
    max_attempts: int = Field(3, ge=1, description="tries before a job fails for good")
    retry_base_s: float = Field(1.0, gt=0, description="first retry after up to this long (exponential, full jitter)")
    retry_max_s: float = Field(60.0, gt=0)
    lease_s: float = Field(30.0, gt=0, description="a running job whose worker misses heartbeats this long is requeued")
    heartbeat_s: float = Field(10.0, gt=0)
    idempotency_window_s: float = Field(86_400, gt=0, description="an Idempotency-Key returns the same job within this")
    sweep_s: float = Field(60.0, gt=0, description="how often stored waiting jobs the queue does not hold (lost by Redis, or taken while the store could not record their start) are queued again")
    max_page_size: int = Field(100, gt=0)
    webhook_max_attempts: int = Field(8, ge=1)
    webhook_retry_base_s: float = Field(1.0, gt=0)
    webhook_retry_max_s: float = Field(300.0, gt=0)
    webhook_timeout_s: float = Field(10.0, gt=0)


class Device(str, Enum):
    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


class DType(str, Enum):
    """auto: float32 on CPU, the checkpoint's half precision on CUDA."""

    AUTO = "auto"
    FLOAT32 = "float32"
    FLOAT16 = "float16"
    BFLOAT16 = "bfloat16"


class MetricsSettings(_Section):
    enabled: bool = Field(True, description="GET /metrics in Prometheus' text format, on API replicas and workers")
    token: SecretStr | None = Field(None, description="when set, /metrics needs `Authorization: Bearer <token>`")
    per_tenant: bool = Field(False, description="add a tenant label to genloom_requests_total (for a bounded number of tenants)")
    jobs_refresh_s: float = Field(10.0, gt=0, description="how often the jobs-per-state gauge is counted in the store")


class MonitorSettings(_Section):
    """Quality per version and drift of prompts per model (GET /v1/admin/monitors/{model})."""

    enabled: bool = True
    sample_rate: float = Field(0.2, ge=0, le=1, description="share of prompts embedded for drift (off the request path)")
    reference_n: int = Field(200, ge=2, description="prompts in the reference window: the first ones seen, or a pinned window")
    window_n: int = Field(200, ge=2, description="the most recent prompts compared against the reference")
    min_n: int = Field(50, ge=2, description="prompts each window needs before a test")
    p_threshold: float = Field(0.01, gt=0, lt=1, description="drift alert when the permutation p-value is below this")
    permutations: int = Field(200, ge=10, description="permutations of the MMD test")
    interval_s: float = Field(10.0, gt=0, description="how often sampled prompts are embedded and tested")
    quality_window: int = Field(500, ge=1, description="recent answers per version that quality figures cover")


class FeedbackSettings(_Section):
    """Ratings of answers (POST /v1/feedback) and how long the request log keeps what was asked and answered."""

    enabled: bool = True
    keep_content_days: float = Field(
        30.0, ge=0, description="the request log drops prompts and answers older than this (0: never writes them)")
    purge_interval_s: float = Field(3600.0, gt=0, description="how often expired request content is dropped")
    max_correction_chars: int = Field(32_768, ge=1, description="longest correction a rating may carry")
    max_comment_chars: int = Field(4_096, ge=1, description="longest comment a rating may carry")
    max_tags: int = Field(16, ge=0, description="most tags on one rating")


class ConsoleSettings(_Section):
    """The web console at /console (static pages; everything they show comes from the API with the
    signed-in key)."""

    enabled: bool = True


class FineTuningSettings(_Section):
    """LoRA fine-tuning jobs (POST /v1/fine_tuning/jobs), run by the processes that hold the base model."""

    enabled: bool = Field(True, description="the fine-tuning API, and a trainer in every process that runs local text models")
    default_epochs: int = Field(3, ge=1, le=50, description="n_epochs when a job says auto")
    default_batch_size: int = Field(4, ge=1, le=256, description="batch_size when a job says auto")
    base_learning_rate: float = Field(1e-3, gt=0, description="the rate learning_rate_multiplier scales")
    max_tokens: int = Field(512, ge=8, description="a longer conversation is cut from its start")
    checkpoint_every: int = Field(20, ge=1, description="steps between checkpoints (a restarted job resumes from the last)")
    lease_s: float = Field(60.0, gt=0, description="a running job whose trainer stops renewing for this long is taken up again")
    poll_s: float = Field(1.0, gt=0, description="how often an idle trainer looks for a queued job")
    max_rows: int = Field(100_000, ge=1, description="most training examples in one job")
    max_jobs_per_tenant: int = Field(4, ge=1, description="a tenant's jobs waiting or running at once (429 beyond)")
    pause_while_serving: bool = Field(True, description="a training step waits while requests are queued or running here")
    auto_canary: bool = Field(True, description="a tuned version that passes the evaluation gate starts a canary rollout by itself")
    canary_percent: float = Field(10.0, gt=0, le=100, description="the share of the base's traffic that canary sends to it")
    canary_step_requests: int = Field(200, ge=1, description="candidate requests within the gates before the canary promotes it")
    gate_max_tokens: int = Field(48, ge=1, description="tokens per answer when the gate compares the tuned model with its base")


class TelemetrySettings(_Section):
    """Traces are configured by the standard OTEL_* environment variables (off when none names
    an exporter); these say what goes into them."""

    capture_content: bool = Field(False, description="put prompts and outputs into trace spans (gen_ai.input/output.messages)")


class LogFormat(str, Enum):
    TEXT = "text"
    JSON = "json"


class LoggingSettings(_Section):
    format: LogFormat = Field(LogFormat.TEXT, description="json: one object per line (time, level, logger, message, request_id, trace_id, tenant, model, version)")
    access_log: bool = Field(True, description="one line per HTTP request: method, path, status, duration")


class RuntimeSettings(_Section):
    device: Device = Device.AUTO
    dtype: DType = DType.AUTO
    max_batch_size: int = Field(32, gt=0, description="sequences decoded together in one forward pass")
    realtime_reserved_rows: int | None = Field(
        None, ge=0, description="batch rows async jobs may not take, so realtime requests start at once; default a quarter"
    )
    async_rows_with_realtime: int | None = Field(
        None, ge=0, description="rows async jobs may hold while realtime work runs (or ran within realtime_grace_s); default an eighth"
    )
    realtime_grace_s: float = Field(2.0, ge=0, description="how long after the last realtime request the async cap still holds")
    torch_threads: int = Field(0, ge=0, description="0 leaves torch's default")
    max_loaded_models: int | None = Field(
        None, gt=0, description="local versions holding weights at once in a process; the least recently used idle one is evicted"
    )
    memory_budget_mb: float | None = Field(
        None, gt=0, description="the weights' memory a process may hold (estimated from parameters and dtype); LRU eviction beyond it"
    )
    batch_adapters: bool = Field(
        True, description="serve a fine-tuned (LoRA adapter) version in its base's batch when this process runs the base; "
        "false: each such version loads a merged copy of the weights and batches alone",
    )
    max_loaded_adapters: int | None = Field(
        None, gt=0, description="adapters attached to one base's batch at once; the least recently used idle one is "
        "detached (it attaches again when work for it comes)",
    )


class ModelKind(str, Enum):
    """text: a local HF causal LM at `path`. image: a local diffusers pipeline at `path`.
    embedding: a local sentence-transformers model at `path`. remote: an OpenAI-compatible
    endpoint at `base_url`."""

    TEXT = "text"
    IMAGE = "image"
    EMBEDDING = "embedding"
    REMOTE = "remote"


class ImageSettings(_Section):
    """Image generation (/v1/images/generations and image jobs)."""

    max_batch_images: int = Field(16, gt=0, description="images denoised together in one pipeline call")
    batch_wait_s: float = Field(0.005, ge=0, description="how long a forming batch waits for company")
    max_images_per_request: int = Field(10, gt=0, description="most images (n) one request may ask for")
    max_steps: int = Field(100, gt=0, description="most denoising steps a request may ask for")
    max_side: int = Field(1024, gt=0, description="largest width or height a request may ask for")
    default_steps: int = Field(20, gt=0, description="steps when a request gives none (a model may set its own)")
    default_guidance_scale: float = Field(4.0, ge=0, description="guidance when a request gives none (a model may set its own)")
    url_ttl_s: int = Field(3600, gt=0, description="how long a response_format=url link works")
    url_signing_key: SecretStr | None = Field(
        None, description="signs image URLs (GENLOOM_IMAGES__URL_SIGNING_KEY); default: a key kept in data_dir"
    )

    @model_validator(mode="after")
    def _request_fits_a_batch(self) -> ImageSettings:
        if self.max_images_per_request > self.max_batch_images:
            raise ValueError(
                f"max_images_per_request ({self.max_images_per_request}) must not exceed max_batch_images "
                f"({self.max_batch_images}): a request's images run in one batch"
            )
        if self.default_steps > self.max_steps:
            raise ValueError(f"default_steps ({self.default_steps}) must not exceed max_steps ({self.max_steps})")
        return self


def diffusers_lora_file(adapter: Path) -> Path | None:
    """The weights file of a diffusers LoRA given as a file or a directory (None: it is not one)."""
    if adapter.is_file():
        return adapter if adapter.suffix == ".safetensors" else None
    weights = adapter / "pytorch_lora_weights.safetensors"
    return weights if weights.is_file() else None


class ModelSettings(_Section):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}$")
    kind: ModelKind = ModelKind.TEXT
    path: Path | None = None
    adapter: Path | None = Field(
        None, description="a LoRA adapter on the model at `path`: text, a PEFT adapter directory; image, a diffusers "
        "LoRA (a .safetensors file, or a directory holding pytorch_lora_weights.safetensors)")
    adapter_blob: str | None = Field(
        None, pattern=r"^[0-9a-f]{64}$",
        description="text: the same, as a tar archive on the blob store (a fine-tuned version: every process fetches it)")
    max_batch_size: int | None = Field(None, gt=0)
    base_url: str | None = Field(None, description="remote: up to the API version, e.g. http://vllm:8000/v1")
    api_key: SecretStr | None = None
    upstream_model: str | None = Field(None, description="remote: the upstream's name for it (default: name)")
    max_concurrency: int = Field(64, gt=0, description="remote: calls in flight at once")
    connect_timeout_s: float = Field(5, gt=0)
    read_timeout_s: float = Field(60, gt=0)
    first_token_timeout_s: float = Field(30, gt=0)
    max_context: int | None = Field(
        None, gt=0,
        description="prompt + max_tokens allowed. Local text: what the model really handles (e.g. the window it was "
        "trained on), at most its config's max_position_embeddings, which is the default; remote: as the upstream "
        "serves it (default 8192)",
    )
    fallbacks: list[str] = Field(default_factory=list, description="models that answer, in order, when this one fails")
    tool_parser: Literal["hermes", "llama3_json"] = Field(
        "hermes", description="text: how tool calls are read from the model's answer (tool_choice auto)"
    )
    default_steps: int | None = Field(None, gt=0, description="image: steps when a request gives none (default: images.default_steps)")
    default_guidance_scale: float | None = Field(None, ge=0, description="image: guidance when a request gives none")

    @field_validator("path")
    @classmethod
    def _path_is_a_directory(cls, path: Path | None) -> Path | None:
        if path is None:
            return None
        path = path.expanduser()
        if not (path / "config.json").is_file() and not (path / "model_index.json").is_file():
            raise ValueError(f"{path} is not a model directory (no config.json or diffusers model_index.json there)")
        return path

    @field_validator("adapter")
    @classmethod
    def _adapter_exists(cls, adapter: Path | None) -> Path | None:
        if adapter is None:
            return None
        adapter = adapter.expanduser()
        if not adapter.exists():
            raise ValueError(f"{adapter} does not exist")
        return adapter

    @model_validator(mode="after")
    def _kind_has_what_it_needs(self) -> ModelSettings:
        if self.kind in (ModelKind.TEXT, ModelKind.IMAGE, ModelKind.EMBEDDING) and self.path is None:
            raise ValueError(f"model {self.name}: a {self.kind.value} model needs a path")
        if self.kind is ModelKind.IMAGE and not (self.path / "model_index.json").is_file():  # type: ignore[operator]
            raise ValueError(f"model {self.name}: {self.path} is not a diffusers pipeline (no model_index.json)")
        if self.kind is ModelKind.TEXT and not (self.path / "config.json").is_file():  # type: ignore[operator]
            raise ValueError(f"model {self.name}: {self.path} is not a transformers model (no config.json)")
        if self.adapter_blob is not None and self.kind is not ModelKind.TEXT:
            raise ValueError(f"model {self.name}: adapter_blob applies to a local text model only")
        if self.adapter is not None and self.kind is ModelKind.TEXT and not (self.adapter / "adapter_config.json").is_file():
            raise ValueError(f"model {self.name}: {self.adapter} is not a PEFT adapter directory (no adapter_config.json there)")
        if self.adapter is not None and self.kind is ModelKind.IMAGE and diffusers_lora_file(self.adapter) is None:
            raise ValueError(f"model {self.name}: {self.adapter} is not a diffusers LoRA (a .safetensors file, or a "
                             "directory holding pytorch_lora_weights.safetensors)")
        if self.adapter is not None and self.kind not in (ModelKind.TEXT, ModelKind.IMAGE):
            raise ValueError(f"model {self.name}: an adapter applies to a local text or image model only")
        if self.adapter is not None and self.adapter_blob is not None:
            raise ValueError(f"model {self.name}: give adapter or adapter_blob, not both")
        if self.kind is ModelKind.REMOTE and not self.base_url:
            raise ValueError(f"model {self.name}: a remote model needs a base_url")
        return self


class BreakerSettings(_Section):
    """Per remote model: open after `failure_threshold` failures within `window_s`; probe after `open_s`."""

    failure_threshold: int = Field(5, gt=0)
    window_s: float = Field(30, gt=0)
    open_s: float = Field(15, gt=0)


class CacheSettings(_Section):
    """Response caches for non-streaming text requests; the semantic one only when a request opts in
    with the header X-Genloom-Semantic-Cache: true."""

    enabled: bool = True
    ttl_s: float = Field(600, gt=0)
    max_entries: int = Field(10_000, gt=0)
    semantic_threshold: float = Field(0.92, gt=0, le=1, description="cosine similarity needed for a semantic hit")
    semantic_max_entries_per_tenant: int = Field(1_000, gt=0)


class GuardMode(str, Enum):
    """What a scanner's finding above its threshold does: nothing, a record and a header, the
    found text replaced by placeholders (PII and secrets only), or a refusal."""

    OFF = "off"
    FLAG = "flag"
    REDACT = "redact"
    BLOCK = "block"


class ScannerPolicy(_Section):
    action: GuardMode = GuardMode.OFF
    threshold: float | None = Field(None, ge=0, le=1, description="score at or above which it acts; default the scanner's calibrated one")
    restore: bool = Field(False, description="input redaction: put the original values back into the answer for the same caller")


class GuardrailSettings(_Section):
    """Scanners per stage, by name (prompt_injection, pii, secrets, unsafe): input guards run
    before admission, output guards on the answer (streams in windows). A tenant's
    `guardrails` (PATCH /v1/admin/tenants/{id}) and a scenario's `policy.guardrails` override
    these field by field, in that order."""

    input: dict[str, ScannerPolicy] = Field(default_factory=dict)
    output: dict[str, ScannerPolicy] = Field(default_factory=dict)
    audit_content: bool = Field(False, description="the audit log keeps the scanned text too (else only scanner, score, action, spans)")
    blocks_per_hour: int | None = Field(
        None, gt=0, description="blocked requests a tenant may make in an hour before all its requests get 429 (a tenant's limits.guard_blocks_per_hour overrides)"
    )
    stream_window_chars: int = Field(64, gt=0, description="a streamed answer is scanned every this many new characters")
    stream_holdback_chars: int = Field(48, ge=0, description="the newest characters of a streamed answer are sent only once the text after them is scanned too")
    max_moderation_inputs: int = Field(256, gt=0, description="POST /v1/moderations: most inputs one request may hold")


class TieredRoute(_Section):
    """A model name clients call that picks `simple` or `complex` by the request's complexity score."""

    simple: str
    complex: str
    threshold: float = Field(0.5, ge=0, le=1)
    long_prompt_chars: int = Field(2_000, gt=0, description="a prompt this long scores 1")
    long_max_tokens: int = Field(1_024, gt=0, description="asking for this many tokens scores 1")
    complex_keywords: list[str] = Field(
        default_factory=lambda: ["step by step", "prove", "analyze", "analyse", "refactor", "derive"]
    )


class RoutingSettings(_Section):
    aliases: dict[str, str] = Field(default_factory=dict, description="e.g. {default: genloom-text-mini, fast: ...}")
    tiered: dict[str, TieredRoute] = Field(default_factory=dict)
    max_attempts_per_model: int = Field(2, ge=1, description="tries on one model before its fallback, for failures that may pass")
    retry_base_s: float = Field(0.05, gt=0)
    retry_max_s: float = Field(1.0, gt=0)


class AuthMode(str, Enum):
    """enabled: every /v1 route needs an API key. disabled: anyone may call (announced at start)."""

    ENABLED = "enabled"
    DISABLED = "disabled"


class BlobBackend(str, Enum):
    FILESYSTEM = "filesystem"
    S3 = "s3"


class StoreSettings(_Section):
    echo_sql: bool = False
    blobs: BlobBackend = Field(
        BlobBackend.FILESYSTEM, description="where generated files live: data_dir/blobs, or an S3-compatible bucket"
    )
    s3_bucket: str | None = Field(None, description="blobs: s3 — the bucket (GENLOOM_STORE__S3_BUCKET)")
    s3_prefix: str = Field("blobs/", description="blobs: s3 — key prefix inside the bucket")
    s3_endpoint_url: str | None = Field(None, description="blobs: s3 — e.g. http://minio:9000; default: AWS")
    s3_region: str | None = None
    s3_access_key_id: str | None = Field(None, description="default: the AWS credential chain (env, profile, role)")
    s3_secret_access_key: SecretStr | None = None

    @model_validator(mode="after")
    def _s3_needs_a_bucket(self) -> StoreSettings:
        if self.blobs is BlobBackend.S3 and not self.s3_bucket:
            raise ValueError("store.blobs s3 needs store.s3_bucket (GENLOOM_STORE__S3_BUCKET)")
        return self


_DRIVERS = {
    "postgres": "postgresql+asyncpg", "postgresql": "postgresql+asyncpg", "postgresql+asyncpg": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite", "sqlite+aiosqlite": "sqlite+aiosqlite",
}
# GENLOOM_* variables that are not settings: read by the CLI clients, the tests, the benches and
# the compose file, so a server that sees them does not refuse them.
_NOT_SETTINGS = {"api_key", "upstream_key", "variant", "url_signing_key"}
_NOT_SETTINGS_PREFIXES = ("test_", "bench_")


class Settings(BaseSettings):
    """The whole configuration. Environment variables are GENLOOM_<SECTION>__<KEY>, e.g.
    GENLOOM_SERVER__PORT=9000; top-level keys are GENLOOM_<KEY>, e.g. GENLOOM_DATA_DIR."""

    model_config = SettingsConfigDict(env_prefix="GENLOOM_", env_nested_delimiter="__", extra="forbid")

    data_dir: Path = Field(Path("~/.genloom"), description="SQLite database and blobs live here")
    database_url: str | None = Field(
        None, description="postgresql://… (or any SQLAlchemy URL of a driver Genloom ships); default: SQLite under data_dir"
    )
    redis_url: str | None = Field(
        None, description="scale-out: the queue, rate limits, caches and token streams live in this Redis (GENLOOM_REDIS_URL)"
    )
    redis_prefix: str = Field("genloom:", min_length=1, description="prefix of every Redis key, so deployments can share a Redis")
    builtin_models: bool = Field(True, description="serve the models that ship with Genloom")
    models: list[ModelSettings] = Field(default_factory=list)
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    queue: QueueSettings = Field(default_factory=QueueSettings)
    classification: ClassificationSettings = Field(default_factory=ClassificationSettings)
    jobs: JobsSettings = Field(default_factory=JobsSettings)
    images: ImageSettings = Field(default_factory=ImageSettings)
    auth: AuthMode = Field(AuthMode.ENABLED, description="API keys on every /v1 route; 'disabled' only on purpose")
    admin_key: SecretStr | None = Field(None, description="bootstrap admin key (GENLOOM_ADMIN_KEY); else one is made and printed once")
    webhook_secret: SecretStr | None = Field(None, description="signs job webhooks (GENLOOM_WEBHOOK_SECRET); whsec_<base64> or any string")
    webhook_allow_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="webhook hosts allowed although private or loopback (GENLOOM_WEBHOOK_ALLOW_HOSTS=a,b)"
    )
    upstream_allow_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="hosts a remote model registered through the API may use although private or loopback (GENLOOM_UPSTREAM_ALLOW_HOSTS=a,b)",
    )
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    monitors: MonitorSettings = Field(default_factory=MonitorSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    guardrails: GuardrailSettings = Field(default_factory=GuardrailSettings)
    feedback: FeedbackSettings = Field(default_factory=FeedbackSettings)
    fine_tuning: FineTuningSettings = Field(default_factory=FineTuningSettings)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        yaml_file = _yaml_file.get()
        if yaml_file is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file))
        return tuple(sources)

    @field_validator("database_url")
    @classmethod
    def _with_a_shipped_driver(cls, url: str | None) -> str | None:
        """postgres:// and postgresql:// (what hosts, containers and PaaS hand out) use asyncpg,
        sqlite:// uses aiosqlite: the drivers Genloom ships. Any other database is refused here."""
        if url is None:
            return None
        scheme, sep, rest = url.partition("://")
        if not sep:
            raise ValueError(f"'{url}' is not a database URL; give postgresql://user:password@host:5432/dbname")
        driver = _DRIVERS.get(scheme.lower())
        if driver is None:
            raise ValueError(
                f"database scheme '{scheme}' is not supported; use postgresql://… (asyncpg) or sqlite:///path (aiosqlite)"
            )
        return f"{driver}://{rest}"

    @field_validator("webhook_allow_hosts", "upstream_allow_hosts", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        """"a, B" or a YAML list, as lower-case hosts; "[::1]" and "::1" alike."""
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list):
            return value  # pydantic names the bad type
        hosts = (str(item).strip().lower().removeprefix("[").removesuffix("]") for item in items)
        return [host for host in hosts if host]

    @model_validator(mode="after")
    def _api_role_needs_redis(self) -> Settings:
        if self.server.role is Role.API and not self.redis_url:
            raise ValueError("server.role api needs redis_url (GENLOOM_REDIS_URL): API replicas queue work for workers there")
        return self

    @model_validator(mode="after")
    def _fallbacks_name_served_models(self) -> Settings:
        names = [m.name for m in self.served_models()]
        duplicated = {n for n in names if names.count(n) > 1}
        if duplicated:
            raise ValueError(f"model names must be unique; repeated: {', '.join(sorted(duplicated))}")
        for model in self.models:
            for fallback in model.fallbacks:
                if fallback == model.name or fallback not in names:
                    raise ValueError(f"model {model.name}: fallback '{fallback}' is not another served model ({', '.join(names)})")
        routed = set(self.routing.aliases) | set(self.routing.tiered)
        if routed & set(names):
            raise ValueError(f"routing: {', '.join(sorted(routed & set(names)))} is both a model and an alias")
        targets = [*self.routing.aliases.values(), *(t for r in self.routing.tiered.values() for t in (r.simple, r.complex))]
        for target in targets:
            if target not in names and target not in self.routing.aliases:
                raise ValueError(f"routing: '{target}' is not a served model or an alias ({', '.join(names)})")
        return self

    def served_models(self) -> list[ModelSettings]:
        """Built-in models first, then configured ones; a configured name replaces a built-in."""
        configured = {m.name for m in self.models}
        builtins = []
        if self.builtin_models and BUILTIN_MODELS_DIR.is_dir():
            for path in sorted(BUILTIN_MODELS_DIR.iterdir()):
                if path.name in configured:
                    continue
                if (path / "config.json").is_file():
                    builtins.append(ModelSettings(name=path.name, path=path))
                elif (path / "model_index.json").is_file():
                    builtins.append(ModelSettings(name=path.name, path=path, kind=ModelKind.IMAGE))
        return builtins + list(self.models)

    def resolved_data_dir(self) -> Path:
        return self.data_dir.expanduser().resolve()

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.resolved_data_dir() / 'genloom.db'}"


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings tree: overrides (CLI flags) > environment > config file > defaults.

    Without config_file, ./genloom.yaml is read when it exists."""
    if config_file is None and Path("genloom.yaml").is_file():
        config_file = Path("genloom.yaml")
    if config_file is not None and not config_file.is_file():
        raise ConfigError(f"config file {config_file} does not exist")
    _check_environment(os.environ)
    token = _yaml_file.set(config_file)
    try:
        return Settings(**_nest(overrides))
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
        where = f" (from {config_file}, GENLOOM_* environment or flags)" if config_file else ""
        raise ConfigError(f"invalid configuration{where}: {problems}") from e
    finally:
        _yaml_file.reset(token)


def _nest(overrides: dict[str, Any]) -> dict[str, Any]:
    """{'server.port': 1} -> {'server': {'port': 1}}; None values mean 'not given'."""
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        if value is None:
            continue
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def _check_environment(environ: Mapping[str, str]) -> None:
    """Refuse a GENLOOM_* variable that names no setting (a misspelling would otherwise pass
    silently), naming the nearest valid key."""
    known = {name: field for name, field in Settings.model_fields.items()}
    paths = [*known, *(f"{name}__{sub}" for name, field in known.items() for sub in _section_fields(field.annotation) or ())]
    for variable in environ:
        if not variable.upper().startswith("GENLOOM_"):
            continue
        name = variable[len("GENLOOM_"):].lower()
        if name in _NOT_SETTINGS or name.startswith(_NOT_SETTINGS_PREFIXES):
            continue
        top, _, sub = name.partition("__")
        fields = _section_fields(known[top].annotation) if top in known else None
        if top in known and (not sub or fields is None or sub.partition("__")[0] in fields):
            continue
        # A misplaced key (GENLOOM_LOG_LEVEL for GENLOOM_SERVER__LOG_LEVEL) matches by its last part.
        leaves = {path.rpartition("__")[2]: path for path in paths}
        near = difflib.get_close_matches(name, paths, n=1, cutoff=0.6)
        near = near or [leaves[m] for m in difflib.get_close_matches(name.rpartition("__")[2], list(leaves), n=1, cutoff=0.5)]
        hint = f"; did you mean GENLOOM_{near[0].upper()}?" if near else "; see `genloom config show` for every key"
        raise ConfigError(f"{variable} in the environment is not a setting{hint}")


def _section_fields(annotation: Any) -> set[str] | None:
    """The keys of a settings section (None for a plain value or a mapping)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return set(annotation.model_fields)
    return None


def secret_values(settings: BaseModel) -> list[str]:
    """Every secret in the settings (keys, tokens, passwords, URL credentials), so the logs can
    scrub them."""
    from urllib.parse import urlsplit

    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, SecretStr):
            found.append(value.get_secret_value())
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name))
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, str) and "://" in value and "@" in value:
            with contextlib.suppress(ValueError):
                password = urlsplit(value).password
                if password:
                    found.append(password)

    walk(settings)
    if isinstance(settings, Settings):
        walk(settings.served_models())
    return [s for s in found if s]
