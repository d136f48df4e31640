"""What the request log records, as plain Python values."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any


class RequestStatus(str, Enum):
    """How a request ended. Every request ends in exactly one of these."""

    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"  # the client went away
    REJECTED = "rejected"  # refused before running, e.g. the queue was full
    ABORTED = "aborted"  # the server shut down before it finished


@dataclass(frozen=True, kw_only=True)
class RequestEntry:
    """One generation request as sent and as answered. Datetimes are timezone-aware (read back in UTC)."""

    id: str
    endpoint: str
    model: str
    params: dict[str, Any]
    prompt: list[dict[str, Any]] | str | None  # None: not kept (the tenant keeps no content, or it expired)
    output: list[str] | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_ms: float | None = None
    ttft_ms: float | None = None
    status: RequestStatus
    error: str | None = None
    created_at: datetime
    finished_at: datetime | None = None
    tenant: str | None = None
    user: str | None = None  # OpenAI's `user`: the end user the tenant says it is for
    version: str | None = None  # the version that answered (name@vN)

    def __post_init__(self) -> None:
        for name in ("created_at", "finished_at"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise ValueError(f"{name} must be timezone-aware, e.g. datetime.now(UTC); got {value!r}")
