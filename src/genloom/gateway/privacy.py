"""The right to be forgotten: everything Genloom keeps of one tenant's end user (the `user` its
requests named) removed, and the removal recorded.

What goes: the user's logged requests (prompts, answers, figures), their stored responses, their
ratings, the rows built from any of these in every dataset (new dataset versions without them;
the old versions superseded and their files deleted), and the tenant's cached answers: cache
entries are shared within a tenant and do not record whose request made them, so all of the
tenant's go. The record keeps the user id's SHA-256, not the id, with what was removed."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from genloom.gateway.datasets import DatasetService
from genloom.gateway.errors import InvalidRequest
from genloom.gateway.pipeline.caching import Cache
from genloom.store.feedback import FeedbackStore
from genloom.store.fine_tuning import FineTuningStore
from genloom.store.request_log import RequestLog
from genloom.store.responses import ResponseStore


class DataDeletion:
    def __init__(self, *, request_log: RequestLog, responses: ResponseStore, feedback: FeedbackStore,
                 datasets: DatasetService, cache: Cache, fine_tuning: FineTuningStore | None = None) -> None:
        self._fine_tuning = fine_tuning
        self._log = request_log
        self._responses = responses
        self._feedback = feedback
        self._datasets = datasets
        self._cache = cache

    async def forget_user(self, *, tenant: str, user: str) -> dict[str, Any]:
        if not user.strip():
            raise InvalidRequest("user is empty: name the end user whose data should be deleted", "user")
        await self._log.flush()  # requests answered a moment ago are written first, then deleted
        user_sha256 = hashlib.sha256(user.encode()).hexdigest()
        request_ids = await self._log.delete_user(tenant=tenant, user=user)
        removed: dict[str, Any] = {
            "requests": len(request_ids),
            "responses": await self._responses.delete_many([i for i in request_ids if i.startswith("resp_")], tenant=tenant),
            # Their ratings, and any rating of their requests (a rating may name another user: an agent's).
            "feedback": await self._feedback.delete_user(tenant=tenant, user=user, response_ids=request_ids),
            "cached_answers": await self._cache.forget_tenant(tenant),
        }
        removed |= await self._datasets.forget_user(tenant=tenant, user=user, request_ids=set(request_ids),
                                                    why=f"a user's data was deleted ({user_sha256[:12]})")
        # Jobs that would train on a dataset version that is gone: cancelled (they read it when they start).
        gone = {d["superseded"] for d in removed["datasets"]}
        removed["fine_tuning_jobs_cancelled"] = await self._cancel_jobs_on(gone) if gone and self._fine_tuning else []
        deletion_id = await self._datasets.store.record_deletion(tenant=tenant, user_sha256=user_sha256, removed=removed,
                                                                 at=datetime.now(UTC))
        return {"id": deletion_id, "object": "data_deletion", "tenant": tenant, "user_sha256": user_sha256, "removed": removed}

    async def _cancel_jobs_on(self, datasets: set[str]) -> list[str]:
        assert self._fine_tuning is not None
        cancelled = []
        for job in await self._fine_tuning.waiting_or_running():
            if (job.lineage or {}).get("dataset") in datasets:
                await self._fine_tuning.cancel(job.id, tenant=None, now=datetime.now(UTC))
                await self._fine_tuning.add_event(job.id, now=datetime.now(UTC), level="warn", message=(
                    f"cancelled: its dataset {job.lineage['dataset']} was superseded when a user's data was deleted"))
                cancelled.append(job.id)
        return cancelled
