"""/v1/fine_tuning/jobs: OpenAI's fine-tuning API (create, list, retrieve, cancel, events,
checkpoints), plus Genloom's `lora` settings and `training_file` naming a dataset version.
`GET …/events?stream=true` follows a job's events as server-sent events until it ends."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import Field

from genloom.api.callers import caller, principal
from genloom.api.schemas import _Body
from genloom.gateway.fine_tune_runner import fine_tuned_name
from genloom.gateway.fine_tuning import FineTuningService
from genloom.store.fine_tuning import TERMINAL, Checkpoint, Event, FineTuningJob

_POLL_S = 0.5


class FineTuningCreate(_Body):
    model: str = Field(min_length=1, max_length=255)
    training_file: str = Field(min_length=1, max_length=255)
    validation_file: str | None = Field(None, max_length=255)
    suffix: str | None = None
    method: dict[str, Any] | None = None
    hyperparameters: dict[str, Any] | None = None  # the older, top-level form of method.supervised.hyperparameters
    lora: dict[str, Any] | None = None  # Genloom: {r, alpha, dropout, target_modules}
    seed: int | None = None
    metadata: dict[str, str] | None = None
    integrations: list[dict[str, Any]] | None = None


def _unix(at: datetime | None) -> int | None:
    return None if at is None else int(at.timestamp())


def job_body(job: FineTuningJob) -> dict[str, Any]:
    hyper = job.hyperparameters
    return {
        "id": job.id, "object": "fine_tuning.job", "created_at": _unix(job.created_at), "finished_at": _unix(job.finished_at),
        "model": job.model, "fine_tuned_model": job.fine_tuned_model, "organization_id": job.tenant, "status": job.status,
        "hyperparameters": hyper, "training_file": job.training_file, "validation_file": job.validation_file,
        "result_files": [], "trained_tokens": job.trained_tokens, "error": job.error, "seed": job.seed,
        "estimated_finish": _unix(job.estimated_finish), "integrations": [], "user_provided_suffix": job.suffix,
        "metadata": job.metadata,
        "method": {"type": "supervised", "supervised": {"hyperparameters": hyper}},
        "lora": job.lora, "base_version": job.base_version, "result": job.result, "lineage": job.lineage,
    }


def event_body(e: Event) -> dict[str, Any]:
    return {"id": f"ftevent-{e.id}", "object": "fine_tuning.job.event", "created_at": _unix(e.created_at), "level": e.level,
            "message": e.message, "data": e.data, "type": e.type}


def checkpoint_body(job: FineTuningJob, c: Checkpoint) -> dict[str, Any]:
    return {"id": c.id, "object": "fine_tuning.job.checkpoint", "created_at": _unix(c.created_at),
            "fine_tuned_model_checkpoint": f"{fine_tuned_name(job)}:ckpt-step-{c.step}", "fine_tuning_job_id": job.id,
            "metrics": c.metrics, "step_number": c.step}


def build_fine_tuning_router(service: FineTuningService) -> APIRouter:
    router = APIRouter(prefix="/v1/fine_tuning")
    store = service.store

    def tenant_of(request: Request) -> str | None:
        """A tenant key sees its own jobs; an admin key every tenant's."""
        who = principal(request)
        return None if who.is_admin else who.tenant_id

    @router.post("/jobs")
    async def create(body: FineTuningCreate, request: Request) -> dict[str, Any]:
        who = caller(request)
        job = await service.create(
            tenant=who.tenant, admin=principal(request).is_admin, model=body.model, training_file=body.training_file,
            validation_file=body.validation_file, suffix=body.suffix, method=body.method,
            hyperparameters=body.hyperparameters, lora=body.lora, seed=body.seed, metadata=body.metadata,
        )
        return job_body(job)

    @router.get("/jobs")
    async def list_jobs(request: Request, limit: int = Query(20, ge=1, le=100), after: str | None = None) -> dict[str, Any]:
        jobs = await store.list(tenant=tenant_of(request), limit=limit + 1, after=after)
        return {"object": "list", "data": [job_body(j) for j in jobs[:limit]], "has_more": len(jobs) > limit}

    @router.get("/jobs/{job_id}")
    async def get(job_id: str, request: Request) -> dict[str, Any]:
        return job_body(await store.get(job_id, tenant=tenant_of(request)))

    @router.post("/jobs/{job_id}/cancel")
    async def cancel(job_id: str, request: Request) -> dict[str, Any]:
        return job_body(await store.cancel(job_id, tenant=tenant_of(request), now=datetime.now(UTC)))

    @router.get("/jobs/{job_id}/checkpoints")
    async def checkpoints(job_id: str, request: Request, limit: int = Query(10, ge=1, le=100)) -> dict[str, Any]:
        job = await store.get(job_id, tenant=tenant_of(request))
        data = [checkpoint_body(job, c) for c in await store.checkpoints(job_id, limit=limit + 1)]
        page = data[:limit]
        return {"object": "list", "data": page, "has_more": len(data) > limit,
                "first_id": page[0]["id"] if page else None, "last_id": page[-1]["id"] if page else None}

    @router.get("/jobs/{job_id}/events")
    async def events(job_id: str, request: Request, limit: int = Query(20, ge=1, le=1000), after: str | None = None,
                     stream: bool = False):
        """Newest first, as OpenAI lists them; `stream=true`: every event from the first, oldest
        first, as server-sent events, until the job has ended (then `data: [DONE]`)."""
        await store.get(job_id, tenant=tenant_of(request))
        digits = (after or "").removeprefix("ftevent-")
        marker = int(digits) if digits.isdigit() and len(digits) <= 9 else None  # an id out of range marks nothing
        if not stream:
            found = await store.events(job_id, after=marker, limit=limit + 1)
            return {"object": "list", "data": [event_body(e) for e in found[:limit]], "has_more": len(found) > limit}

        async def follow() -> AsyncIterator[str]:
            last = 0
            while True:
                job = await store.get(job_id, tenant=None)
                for e in await store.events(job_id, after=last, limit=1000, newest_first=False):
                    last = e.id
                    yield f"data: {json.dumps(event_body(e))}\n\n"
                if job.status in TERMINAL:
                    yield "data: [DONE]\n\n"
                    return
                if await request.is_disconnected():
                    return
                await asyncio.sleep(_POLL_S)

        return StreamingResponse(follow(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    return router
