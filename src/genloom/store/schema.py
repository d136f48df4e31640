"""The SQL tables, dialect-neutral so the same models run on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, Index, JSON, false, true, DateTime, Dialect, Float, ForeignKey, Integer, String, Text, TypeDecorator, UniqueConstraint
from sqlalchemy import ForeignKeyConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware datetime stored in UTC. SQLite keeps no offset (it would silently drop it),
    so values are converted to UTC on the way in and marked UTC on the way out."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"refusing a naive datetime {value!r}: pass a timezone-aware one")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class RequestRow(Base):
    __tablename__ = "requests"
    __table_args__ = (Index("ix_requests_tenant_user", "tenant", "user"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    endpoint: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(255), index=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    prompt: Mapped[Any | None] = mapped_column(JSON(none_as_null=True))  # None once its content is dropped
    # none_as_null: a missing output is SQL NULL, not the JSON text 'null'.
    output: Mapped[list[str] | None] = mapped_column(JSON(none_as_null=True))
    prompt_tokens: Mapped[int | None]
    completion_tokens: Mapped[int | None]
    # Explicit Float: SQLAlchemy 2.1 maps a bare `float` annotation to Double.
    latency_ms: Mapped[float | None] = mapped_column(Float)
    ttft_ms: Mapped[float | None] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16), index=True)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    tenant: Mapped[str | None] = mapped_column(String(128))  # None: written before migration 0011
    user: Mapped[str | None] = mapped_column(String(256))  # OpenAI's `user`: whose data it is
    version: Mapped[str | None] = mapped_column(String(255))  # the version that answered (name@vN)


class JobRow(Base):
    """An accepted async job. The row is written before the client hears 202, so nothing accepted
    is lost; `lease_owner`/`lease_until` say which worker runs it and until when it must heartbeat."""

    __tablename__ = "jobs"
    __table_args__ = (UniqueConstraint("tenant", "idempotency_key", name="uq_jobs_tenant_idempotency_key"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(128), index=True)
    tier: Mapped[str] = mapped_column(String(16))
    url: Mapped[str] = mapped_column(String(64))
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    model: Mapped[str] = mapped_column(String(255), index=True)
    cost: Mapped[float] = mapped_column(Float)
    state: Mapped[str] = mapped_column(String(16), index=True)
    attempts: Mapped[int]
    max_attempts: Mapped[int]
    not_before: Mapped[datetime | None] = mapped_column(UtcDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime, index=True)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    callback_url: Mapped[str | None] = mapped_column(Text)
    job_metadata: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON(none_as_null=True))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64))
    webhook_state: Mapped[str | None] = mapped_column(String(16), index=True)
    webhook_attempts: Mapped[int] = mapped_column(default=0)
    webhook_next_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class JobEventRow(Base):
    """Every state change of a job, timestamped, in order."""

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(64), ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    state: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    attempt: Mapped[int]
    message: Mapped[str | None] = mapped_column(Text)


class WebhookDeliveryRow(Base):
    """One attempt to POST a job's record to its callback URL."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(64), ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    webhook_id: Mapped[str] = mapped_column(String(64))
    attempt: Mapped[int]
    url: Mapped[str] = mapped_column(Text)
    status_code: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[float] = mapped_column(Float)
    delivered: Mapped[bool]
    at: Mapped[datetime] = mapped_column(UtcDateTime)


class TenantRow(Base):
    """A team that shares the service: its tier feeds the scheduler, its limits the rate limiter."""

    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    tier: Mapped[str] = mapped_column(String(16))
    limits: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    guardrails: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, server_default="{}")  # policy overrides
    # False: requests are logged without their prompt and answer, and feedback keeps only what its caller sends
    keep_content: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())


class ApiKeyRow(Base):
    """An API key, stored only as its SHA-256 (the key itself is shown once, at creation)."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scope: Mapped[str] = mapped_column(String(16))
    limits: Mapped[dict[str, Any]] = mapped_column(JSON, server_default="{}")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class PromptTemplateRow(Base):
    """One immutable version of a prompt template; a new version is the next number for its name."""

    __tablename__ = "prompt_templates"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    description: Mapped[str | None] = mapped_column(Text)
    messages: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    variables: Mapped[dict[str, Any]] = mapped_column(JSON)
    model: Mapped[str | None] = mapped_column(String(255))
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ScenarioRow(Base):
    """One immutable version of a scenario: a template version, a model and a parameter policy."""

    __tablename__ = "scenarios"
    __table_args__ = (
        ForeignKeyConstraint(
            ["template", "template_version"], ["prompt_templates.name", "prompt_templates.version"],
            name="fk_scenarios_template_version",
        ),
    )

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    description: Mapped[str | None] = mapped_column(Text)
    template: Mapped[str] = mapped_column(String(128))
    template_version: Mapped[int]
    model: Mapped[str | None] = mapped_column(String(255))
    policy: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ScenarioHeadRow(Base):
    """Which version of a scenario answers when it is called by name."""

    __tablename__ = "scenario_heads"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    active_version: Mapped[int]
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class FileRow(Base):
    """A stored file (a generated image): its bytes live in the blob store under their sha256,
    this row records who owns it and where it came from (an image's provenance)."""

    __tablename__ = "files"

    id: Mapped[str] = mapped_column(String(80), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(128), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    bytes: Mapped[int]
    content_type: Mapped[str] = mapped_column(String(128))
    purpose: Mapped[str] = mapped_column(String(32))
    job_id: Mapped[str | None] = mapped_column(String(64), index=True)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ModelVersionRow(Base):
    """One immutable version of a served model; only `state` changes after it is written."""

    __tablename__ = "model_versions"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(16))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    api_key: Mapped[str | None] = mapped_column(Text)
    revision: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(String(64))
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON)
    state: Mapped[str] = mapped_column(String(16))
    state_reason: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ModelAliasRow(Base):
    """An alias of a model (`production`, `staging`, ...) and the version it points at."""

    __tablename__ = "model_aliases"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    alias: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int]
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ModelEventRow(Base):
    """Every change to a model's versions, aliases and rollouts: who, when, before and after."""

    __tablename__ = "model_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), index=True)
    action: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(128))
    at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))


class ModelRolloutRow(Base):
    """A rollout of a candidate version. `active_name` is the model's name while the rollout is
    active and NULL after, so the unique index allows one active rollout per model."""

    __tablename__ = "model_rollouts"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), index=True)
    active_name: Mapped[str | None] = mapped_column(String(128), unique=True)
    strategy: Mapped[str] = mapped_column(String(16))
    stable: Mapped[int]
    candidate: Mapped[int]
    plan: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16))
    step: Mapped[int]
    reason: Mapped[str | None] = mapped_column(Text)
    figures: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    decisions: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class ResponseRow(Base):
    """A stored response of the Responses API: its body as returned, and the conversation up to
    and including it (chat messages), which a later request continues (`previous_response_id`)."""

    __tablename__ = "responses"

    id: Mapped[str] = mapped_column(String(80), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(128), index=True)
    previous_id: Mapped[str | None] = mapped_column(String(80))
    conversation: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class BatchRow(Base):
    """A batch of the Batch API: its input file's lines (each a job, or an error found at
    submission) in `lines`, and the files written when it ended."""

    __tablename__ = "batches"
    __table_args__ = (Index("ix_batches_tenant_created", "tenant", "created_at"),)

    id: Mapped[str] = mapped_column(String(80), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(128))
    endpoint: Mapped[str] = mapped_column(String(64))
    input_file_id: Mapped[str] = mapped_column(String(80))
    completion_window: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    lines: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    output_file_id: Mapped[str | None] = mapped_column(String(80))
    error_file_id: Mapped[str | None] = mapped_column(String(80))
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    cancelling_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class GuardAuditRow(Base):
    """One flag, block or redaction by a guard: who, which scanner, its score and what was done;
    the scanned text only when the configuration says so (guardrails.audit_content)."""

    __tablename__ = "guard_audit"
    __table_args__ = (Index("ix_guard_audit_tenant_id", "tenant", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    request_id: Mapped[str] = mapped_column(String(80))
    tenant: Mapped[str] = mapped_column(String(128))
    stage: Mapped[str] = mapped_column(String(16))
    scanner: Mapped[str] = mapped_column(String(64))
    category: Mapped[str] = mapped_column(String(64))
    score: Mapped[float] = mapped_column(Float)
    action: Mapped[str] = mapped_column(String(16))
    spans: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    content: Mapped[str | None] = mapped_column(Text)


class FeedbackRow(Base):
    """A rating of one answer (a chat completion, completion, response or async job of the same
    tenant), with a snapshot of what was asked and answered unless the tenant keeps no content."""

    __tablename__ = "feedback"
    __table_args__ = (Index("ix_feedback_tenant_created", "tenant", "created_at"),
                      Index("ix_feedback_model_created", "model", "created_at"),
                      Index("ix_feedback_response_id", "response_id"),
                      Index("uq_feedback_tenant_response", "tenant", "response_id", unique=True))

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(128))
    response_id: Mapped[str] = mapped_column(String(80))
    source: Mapped[str] = mapped_column(String(16))  # request, response or job
    model: Mapped[str] = mapped_column(String(255))  # the name the caller asked for
    version: Mapped[str | None] = mapped_column(String(255))  # the version that answered
    user: Mapped[str | None] = mapped_column(String(256))
    rating: Mapped[int] = mapped_column(Integer)
    scale: Mapped[str] = mapped_column(String(8))  # thumbs (-1, 1) or stars (1..5)
    score: Mapped[float] = mapped_column(Float)  # the rating on 0..1
    correction: Mapped[str | None] = mapped_column(Text)
    tags: Mapped[list[str]] = mapped_column(JSON)
    comment: Mapped[str | None] = mapped_column(Text)
    prompt: Mapped[Any | None] = mapped_column(JSON(none_as_null=True))  # chat messages or a completion prompt
    output: Mapped[str | None] = mapped_column(Text)  # the rated answer (its first choice)
    params: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class DatasetRow(Base):
    """One immutable version of a dataset: its files on the blob store (Parquet, and JSON Lines per
    split), its manifest (counts after each step, the build's settings and sources, lineage), and
    whether a later version replaced it (then its blobs are gone)."""

    __tablename__ = "datasets"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    tenant: Mapped[str | None] = mapped_column(String(128), index=True)  # None: built from every tenant's data
    sha256: Mapped[str] = mapped_column(String(64))  # the content hash: rows and splits
    state: Mapped[str] = mapped_column(String(16))  # active or superseded
    rows: Mapped[int] = mapped_column(Integer)
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON)
    blob: Mapped[str | None] = mapped_column(String(64))  # the Parquet file's sha256 (None once deleted)
    train_blob: Mapped[str | None] = mapped_column(String(64))
    eval_blob: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    superseded_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    superseded_by: Mapped[int | None] = mapped_column(Integer)
    superseded_why: Mapped[str | None] = mapped_column(Text)


class DataDeletionRow(Base):
    """A right-to-be-forgotten request carried out: whose (the user id's hash, not the id), when,
    and what went."""

    __tablename__ = "data_deletions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(128), index=True)
    user_sha256: Mapped[str] = mapped_column(String(64))
    removed: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class FineTuningJobRow(Base):
    """A fine-tuning job: what to train (its data as blobs, read when it was created), how, its
    state under a lease while a trainer runs it, and what came of it."""

    __tablename__ = "fine_tuning_jobs"
    __table_args__ = (Index("ix_fine_tuning_jobs_tenant_created", "tenant", "created_at"),
                      Index("ix_fine_tuning_jobs_status", "status"))

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(128))
    model: Mapped[str] = mapped_column(String(255))  # the base model's name
    base_version: Mapped[str] = mapped_column(String(255))  # name@vN, fixed when the job was created
    training_file: Mapped[str] = mapped_column(String(255))  # a file id or a dataset version (name@vN)
    validation_file: Mapped[str | None] = mapped_column(String(255))
    training_blob: Mapped[str] = mapped_column(String(64))  # JSONL in OpenAI's chat format
    validation_blob: Mapped[str | None] = mapped_column(String(64))
    suffix: Mapped[str | None] = mapped_column(String(64))
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(JSON)
    lora: Mapped[dict[str, Any]] = mapped_column(JSON)
    seed: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))  # queued, running, succeeded, failed, cancelled
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_by_admin: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    fine_tuned_model: Mapped[str | None] = mapped_column(String(255))
    trained_tokens: Mapped[int | None] = mapped_column(Integer)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON(none_as_null=True))
    lineage: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    lease_owner: Mapped[str | None] = mapped_column(String(255))
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    estimated_finish: Mapped[datetime | None] = mapped_column(UtcDateTime)


class FineTuningEventRow(Base):
    __tablename__ = "fine_tuning_events"
    __table_args__ = (Index("ix_fine_tuning_events_job_id", "job_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    level: Mapped[str] = mapped_column(String(8))  # info, warn, error
    type: Mapped[str] = mapped_column(String(16))  # message or metrics
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))


class FineTuningCheckpointRow(Base):
    __tablename__ = "fine_tuning_checkpoints"
    __table_args__ = (Index("ix_fine_tuning_checkpoints_job_id", "job_id", "step"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(64))
    step: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class UsageMinuteRow(Base):
    """One process's figures for one minute, model and tenant (store/usage.py); the console's
    charts sum them. Queue depth rows have tenant ''."""

    __tablename__ = "usage_minutes"  # the primary key leads with minute: reads by window use it

    minute: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)  # unix seconds, a multiple of 60
    model: Mapped[str] = mapped_column(String(255), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(128), primary_key=True)
    source: Mapped[str] = mapped_column(String(128), primary_key=True)  # the process that counted
    requests: Mapped[int] = mapped_column(Integer)
    errors: Mapped[int] = mapped_column(Integer)
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    cache_hits: Mapped[int] = mapped_column(Integer)
    latency: Mapped[list[int]] = mapped_column(JSON)  # counts per store.usage.BUCKETS_MS bucket
    ttft: Mapped[list[int]] = mapped_column(JSON)
    queue_depth: Mapped[int] = mapped_column(Integer)
