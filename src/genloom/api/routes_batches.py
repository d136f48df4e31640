"""/v1/batches: OpenAI's Batch API (gateway/batches.py runs it on the jobs machinery)."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import Field, ValidationError

from genloom.api.callers import caller
from genloom.api.errors import api_error, describe_invalid
from genloom.api.routes_text import chat_request, completion_request
from genloom.api.schemas import ChatCompletionRequest, CompletionRequest, _Body
from genloom.config import ApiSettings
from genloom.gateway.batches import BatchService
from genloom.store.batches import BatchRecord


class BatchCreate(_Body):
    input_file_id: str = Field(min_length=1)
    endpoint: str
    completion_window: str = "24h"
    metadata: dict[str, str] | None = None


def _ts(value) -> int | None:
    return int(value.timestamp()) if value is not None else None


async def batch_body(batch: BatchRecord, batches: BatchService) -> dict[str, Any]:
    """A Batch object as OpenAI's API returns it."""
    created = _ts(batch.created_at)
    finished = _ts(batch.finished_at)
    return {
        "id": batch.id, "object": "batch", "endpoint": batch.endpoint, "errors": None,
        "input_file_id": batch.input_file_id, "completion_window": batch.completion_window, "status": batch.status,
        "output_file_id": batch.output_file_id, "error_file_id": batch.error_file_id, "created_at": created,
        "in_progress_at": created, "expires_at": created + 24 * 3600 if created else None,
        "finalizing_at": finished, "completed_at": finished if batch.status == "completed" else None,
        "failed_at": None, "expired_at": None, "cancelling_at": _ts(batch.cancelling_at),
        "cancelled_at": finished if batch.status == "cancelled" else None,
        "request_counts": await batches.request_counts(batch), "metadata": batch.metadata,
    }


def build_batches_router(batches: BatchService, api: ApiSettings) -> APIRouter:
    router = APIRouter(prefix="/v1/batches")

    @router.post("")
    async def create(body: BatchCreate, request: Request) -> dict[str, Any]:
        who = caller(request)

        def request_for(endpoint: str, line: dict[str, Any]):
            if endpoint == "/v1/chat/completions":
                return chat_request(ChatCompletionRequest.model_validate(line), api, who)
            return completion_request(CompletionRequest.model_validate(line), api, who)

        def describe(e: Exception) -> tuple[str, str]:
            if isinstance(e, json.JSONDecodeError):
                return "invalid_json", f"the line is not JSON: {e}"
            if isinstance(e, ValidationError):
                error = e.errors()[0]
                param = ".".join(str(p) for p in error.get("loc", ()))
                return "invalid_request", describe_invalid(error, param)
            known = api_error(e)
            if known is None or known.status >= 500:
                return "server_error", str(e)
            return known.code or "invalid_request", known.message

        batch = await batches.create(
            tenant=who.tenant, input_file_id=body.input_file_id, endpoint=body.endpoint,
            completion_window=body.completion_window, metadata=body.metadata, request_for=request_for, describe=describe,
            max_json_depth=api.max_json_depth,
        )
        return await batch_body(batch, batches)

    @router.get("")
    async def list_batches(
        request: Request, limit: Annotated[int, Query(ge=1, le=100)] = 20, after: str | None = None,
    ) -> dict[str, Any]:
        found = await batches.list(tenant=caller(request).tenant, limit=limit + 1, after=after)
        data = [await batch_body(b, batches) for b in found[:limit]]
        return {"object": "list", "data": data, "has_more": len(found) > limit,
                "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None}

    @router.get("/{batch_id}")
    async def get(batch_id: str, request: Request) -> dict[str, Any]:
        return await batch_body(await batches.get(batch_id, tenant=caller(request).tenant), batches)

    @router.post("/{batch_id}/cancel")
    async def cancel(batch_id: str, request: Request) -> dict[str, Any]:
        return await batch_body(await batches.cancel(batch_id, tenant=caller(request).tenant), batches)

    return router
