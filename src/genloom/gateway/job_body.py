"""A job as clients see it (the API's answers, SSE events and webhook payloads): one shape."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from genloom.gateway.job_service import JobView
from genloom.jobs.records import JobState, JobTransition


def unix(at: datetime | None) -> float | None:
    return None if at is None else round(at.timestamp(), 3)


def transition_body(t: JobTransition) -> dict[str, Any]:
    return {"status": t.state.value, "at": unix(t.at), "attempt": t.attempt, "message": t.message}


def job_body(view: JobView) -> dict[str, Any]:
    r = view.record
    body: dict[str, Any] = {
        "id": r.id,
        "object": "job",
        "url": r.url,
        "model": r.model,
        "status": r.state.value,
        "tier": r.tier,
        "attempts": r.attempts,
        "max_attempts": r.max_attempts,
        "created_at": unix(r.created_at),
        "started_at": unix(r.started_at),
        "finished_at": unix(r.finished_at),
        "next_attempt_at": unix(r.not_before) if r.state is JobState.RETRYING else None,
        "position": view.position,
        "waiting_reason": view.waiting_reason,
        "progress": None if view.completion_tokens is None else {"completion_tokens": view.completion_tokens},
        "result": r.result,
        "error": r.error,
        "metadata": r.metadata,
        "callback_url": r.callback_url,
        "transitions": [transition_body(t) for t in r.transitions],
    }
    if r.callback_url:
        body["webhook"] = {
            "status": r.webhook_state.value if r.webhook_state else None,
            "deliveries": [
                {"attempt": d.attempt, "at": unix(d.at), "status_code": d.status_code, "error": d.error,
                 "duration_ms": d.duration_ms, "delivered": d.delivered}
                for d in r.deliveries
            ],
        }
    return body
