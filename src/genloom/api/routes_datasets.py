"""/v1/admin/datasets: build versioned datasets from feedback, logged requests or an uploaded
JSONL file, read their manifests, export a split as JSONL; and
DELETE /v1/admin/tenants/{id}/data?user=…: a tenant's end user's data forgotten."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse, Response
from pydantic import Field

from genloom.api.callers import require_admin
from genloom.api.schemas import _Body
from genloom.datasets.build import BuildSettings
from genloom.gateway.datasets import DatasetService, Source, parse_ref
from genloom.gateway.errors import InvalidRequest
from genloom.gateway.privacy import DataDeletion
from genloom.store.datasets import DatasetVersion

NAME = r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,127}$"


class SourceBody(_Body):
    type: Literal["feedback", "requests", "file"]
    tenant: str | None = None  # one tenant's data (default: every tenant's)
    model: str | None = None
    since: int | None = Field(None, ge=0, le=32_503_680_000)  # unix seconds (before the year 3000)
    min_score: float = Field(0.75, ge=0, le=1)  # feedback: ratings at or above this teach their answer
    file_id: str | None = None
    limit: int = Field(100_000, ge=1, le=1_000_000)


class SettingsBody(_Body):
    eval_fraction: float = Field(0.1, ge=0, lt=1)
    seed: int = 0
    near_duplicate_threshold: float = Field(0.85, gt=0, le=1)
    scrub_pii: bool = True
    min_target_chars: int = Field(1, ge=1)
    max_chars: int = Field(32_000, ge=1)


class MetricBody(_Body):
    """How the evaluation gate scores a tuned model's answers on the eval split."""

    type: Literal["exact_match", "pattern"]
    pattern: str | None = None  # for "pattern": a regular expression every good answer matches


class DatasetCreate(_Body):
    name: str = Field(pattern=NAME)
    source: SourceBody
    settings: SettingsBody = Field(default_factory=SettingsBody)
    metric: MetricBody | None = None


def dataset_body(v: DatasetVersion) -> dict[str, Any]:
    return {
        "id": v.ref, "object": "dataset", "name": v.name, "version": v.version, "tenant": v.tenant, "sha256": v.sha256,
        "status": v.state, "rows": v.rows, "created_at": int(v.created_at.timestamp()), "manifest": v.manifest,
        "superseded_at": int(v.superseded_at.timestamp()) if v.superseded_at else None,
        "superseded_by": f"{v.name}@v{v.superseded_by}" if v.superseded_by else None, "superseded_why": v.superseded_why,
    }


def build_datasets_router(datasets: DatasetService, deletion: DataDeletion) -> APIRouter:
    router = APIRouter(prefix="/v1/admin", dependencies=[Depends(require_admin)])

    @router.post("/datasets")
    async def create(body: DatasetCreate) -> JSONResponse:
        """201 with a new version, 200 with the newest one when the build holds the same rows."""
        if body.metric is not None and body.metric.type == "pattern":
            if not body.metric.pattern:
                raise InvalidRequest("a pattern metric needs its pattern", "metric.pattern")
            try:
                re.compile(body.metric.pattern)
            except re.error as e:
                raise InvalidRequest(f"metric.pattern is not a regular expression: {e}", "metric.pattern") from None
        s = body.source
        if s.type == "file" and not s.file_id:
            raise InvalidRequest("a file source needs file_id (upload it with purpose fine-tune)", "source.file_id")
        source = Source(kind=s.type, tenant=s.tenant, model=s.model, min_score=s.min_score, file_id=s.file_id,
                        limit=s.limit, since=datetime.fromtimestamp(s.since, UTC) if s.since is not None else None)
        try:
            settings = BuildSettings(**body.settings.model_dump())
        except ValueError as e:
            raise InvalidRequest(str(e), "settings") from None
        version, new = await datasets.build(body.name, source, settings,
                                            metric=body.metric.model_dump(exclude_none=True) if body.metric else None)
        return JSONResponse(dataset_body(version) | {"created": new}, status_code=201 if new else 200)

    @router.get("/datasets")
    async def list_datasets(name: str | None = None, status: Literal["active", "superseded"] | None = None) -> dict[str, Any]:
        versions = await datasets.store.list(name=name, active_only=status == "active")
        return {"object": "list", "data": [dataset_body(v) for v in versions if status is None or v.state == status]}

    @router.get("/datasets/{ref}")
    async def get(ref: str) -> dict[str, Any]:
        name, version = parse_ref(ref)
        return dataset_body(await datasets.store.get(name, version))

    @router.get("/datasets/{ref}/rows")
    async def rows(ref: str, offset: int = Query(0, ge=0, le=10_000_000), limit: int = Query(50, ge=1, le=500)) -> dict[str, Any]:
        """A page of rows: each conversation, its split, its content hash and its lineage (the
        request and rating it came from, or the file and line)."""
        name, version = parse_ref(ref)
        found = await datasets.store.get(name, version)
        every = await datasets.rows(found)
        page, total = every[offset:offset + limit], len(every)
        return {"object": "list", "total": total, "offset": offset, "data": [
            {"object": "dataset.row", "index": offset + i, "split": r.split, "row_hash": r.row_hash,
             "messages": list(r.example.messages), "lineage": r.example.lineage} for i, r in enumerate(page)]}

    @router.get("/datasets/{ref}/content")
    async def content(ref: str, split: Literal["train", "eval"] = Query("train")) -> Response:
        """A split as JSON Lines in OpenAI's chat fine-tuning format."""
        name, version = parse_ref(ref)
        found = await datasets.store.get(name, version)
        return Response(await datasets.export(found, split), media_type="application/jsonl",
                        headers={"Content-Disposition": f'attachment; filename="{found.name}-v{found.version}-{split}.jsonl"'})

    @router.delete("/tenants/{tenant_id}/data")
    async def forget(tenant_id: str, user: str = Query(min_length=1, max_length=256)) -> dict[str, Any]:
        return await deletion.forget_user(tenant=tenant_id, user=user)

    @router.get("/tenants/{tenant_id}/deletions")
    async def deletions(tenant_id: str) -> dict[str, Any]:
        rows = await datasets.store.deletions(tenant=tenant_id)
        return {"object": "list", "data": [r | {"object": "data_deletion", "created_at": int(r["created_at"].timestamp())}
                                           for r in rows]}

    return router
