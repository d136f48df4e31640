"""Async jobs as stored: their states, the transitions allowed between them, and the record a
client reads back. States and transitions are data, written down here and nowhere else."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any


class JobState(str, Enum):
    """queued -> processing -> completed | failed | retrying; retrying -> processing again;
    any waiting or running state -> cancelled. completed, failed and cancelled are terminal."""

    QUEUED = "queued"
    PROCESSING = "processing"
    RETRYING = "retrying"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED})
WAITING_STATES = frozenset({JobState.QUEUED, JobState.RETRYING})

# processing -> queued is a release: the server stopped under the job, which is not the job's fault.
# failed -> queued and cancelled -> queued are a retry asked for by hand.
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.PROCESSING, JobState.CANCELLED}),
    JobState.RETRYING: frozenset({JobState.PROCESSING, JobState.CANCELLED}),
    JobState.PROCESSING: frozenset(
        {JobState.COMPLETED, JobState.FAILED, JobState.RETRYING, JobState.QUEUED, JobState.CANCELLED}
    ),
    JobState.FAILED: frozenset({JobState.QUEUED}),
    JobState.CANCELLED: frozenset({JobState.QUEUED}),
    JobState.COMPLETED: frozenset(),
}


class WebhookState(str, Enum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"  # every attempt failed; the attempts stay recorded


@dataclass(frozen=True)
class JobTransition:
    state: JobState
    at: datetime
    attempt: int
    message: str | None = None


@dataclass(frozen=True)
class WebhookAttempt:
    webhook_id: str
    attempt: int
    url: str
    status_code: int | None
    error: str | None
    duration_ms: float
    delivered: bool
    at: datetime


@dataclass(frozen=True, kw_only=True)
class JobRecord:
    """One async job. `body` is what the client sent; `request` is the validated request the
    worker runs (so a restart does not depend on the API layer to parse it again)."""

    id: str
    tenant: str
    tier: str
    url: str
    body: dict[str, Any]
    request: dict[str, Any]
    model: str
    cost: float
    state: JobState
    attempts: int = 0
    max_attempts: int
    request_hash: str
    not_before: datetime | None = None
    lease_owner: str | None = None
    lease_until: datetime | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    callback_url: str | None = None
    metadata: dict[str, Any] | None = None
    idempotency_key: str | None = None
    webhook_state: WebhookState | None = None
    webhook_attempts: int = 0
    webhook_next_at: datetime | None = None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    transitions: list[JobTransition] = field(default_factory=list)
    deliveries: list[WebhookAttempt] = field(default_factory=list)


class JobNotFound(LookupError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job with id '{job_id}'")
        self.job_id = job_id


class JobStateConflict(RuntimeError):
    """The job is not in a state that allows what was asked (cancel a completed job, say)."""

    def __init__(self, job_id: str, state: JobState, action: str) -> None:
        super().__init__(f"job '{job_id}' is {state.value}; it cannot be {action}")
        self.job_id, self.state = job_id, state


class IdempotencyConflict(RuntimeError):
    def __init__(self, key: str, job_id: str) -> None:
        super().__init__(
            f"Idempotency-Key '{key}' was already used for job '{job_id}' with a different request; "
            "use a new key for a new request"
        )
        self.key, self.job_id = key, job_id
