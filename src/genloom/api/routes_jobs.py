"""/v1/jobs: async generation in the shape of an OpenAI batch line, translated to the gateway's
JobService; no decisions are made here."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import Field, ValidationError

from genloom.api.callers import caller, principal
from genloom.api.errors import describe_invalid
from genloom.api.routes_images import ImageGenerationBody, image_request
from genloom.api.routes_text import chat_request, completion_request
from genloom.api.schemas import ChatCompletionRequest, CompletionRequest, _Body
from genloom.config import ApiSettings, JobsSettings
from genloom.gateway import InvalidRequest
from genloom.gateway.job_body import job_body, transition_body
from genloom.gateway.image_service import ImageRequest
from genloom.gateway.job_service import JobService, JobSubmission, JobView
from genloom.gateway.text_service import TextRequest
from genloom.jobs.records import JobState

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class JobCreate(_Body):
    url: Literal["/v1/chat/completions", "/v1/completions", "/v1/images/generations"]
    body: dict[str, Any]
    callback_url: str | None = Field(None, min_length=1, max_length=2048)
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = Field(None, max_length=16)
    method: Literal["POST"] | None = None  # an OpenAI batch line carries it
    custom_id: str | None = Field(None, max_length=256)


def tenant_of(request: Request) -> str | None:
    """Whose jobs a key may read and act on: its own tenant's; an admin key every tenant's. With
    auth disabled every caller is an admin, told apart only by the tenant header: each keeps to
    its own tenant's jobs there."""
    who = principal(request)
    return None if who.is_admin and who.key_id is not None else who.tenant_id


def build_jobs_router(
    jobs: JobService, api: ApiSettings, settings: JobsSettings
) -> APIRouter:
    router = APIRouter(prefix="/v1/jobs")

    @router.post("", status_code=202)
    async def create_job(
        payload: JobCreate,
        request: Request,
        idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
    ) -> JSONResponse:
        who = caller(request)
        work: TextRequest | ImageRequest
        if payload.url == "/v1/chat/completions":
            work = chat_request(_parse(ChatCompletionRequest, payload.body), api, who)
        elif payload.url == "/v1/completions":
            work = completion_request(_parse(CompletionRequest, payload.body), api, who)
        else:
            work = image_request(_parse(ImageGenerationBody, payload.body), request)
        if payload.body.get("stream"):
            raise InvalidRequest("a job cannot stream; follow it with GET /v1/jobs/{id}/events", "body.stream")
        metadata = dict(payload.metadata or {})
        if payload.custom_id is not None:
            metadata["custom_id"] = payload.custom_id
        submission = JobSubmission(
            url=payload.url, body=payload.body, request=work, callback_url=payload.callback_url,
            metadata=metadata or None, idempotency_key=idempotency_key,
        )
        view, created = await jobs.submit(submission)
        headers = {} if created else {"Idempotent-Replayed": "true"}
        return JSONResponse(job_body(view), status_code=202, headers=headers)

    @router.get("")
    async def list_jobs(
        request: Request,
        state: Annotated[JobState | None, Query()] = None,
        limit: Annotated[int, Query(ge=1)] = 20,
        after: Annotated[str | None, Query(max_length=64)] = None,
        model: Annotated[str | None, Query(max_length=255)] = None,
        tenant: Annotated[str | None, Query(max_length=128, description="admin keys: one tenant's jobs, or * for every tenant's")] = None,
    ) -> dict[str, Any]:
        """The caller's tenant's jobs, newest first (an admin key: `tenant`'s, or every tenant's with `*`)."""
        who = caller(request)
        if limit > settings.max_page_size:
            raise InvalidRequest(f"limit must be at most {settings.max_page_size}", "limit")
        scope: str | None = who.tenant
        if tenant is not None and tenant_of(request) is None:
            scope = None if tenant == "*" else tenant
        views, has_more = await jobs.list(tenant=scope, state=state, limit=limit, after=after, model=model)
        data = [job_body(v) for v in views]
        return {
            "object": "list", "data": data, "has_more": has_more,
            "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None,
        }

    @router.get("/{job_id}")
    async def get_job(job_id: str, request: Request) -> dict[str, Any]:
        return job_body(await jobs.get(job_id, tenant=tenant_of(request)))

    @router.delete("/{job_id}")
    async def cancel_job(job_id: str, request: Request) -> dict[str, Any]:
        return job_body(await jobs.cancel(job_id, tenant=tenant_of(request)))

    @router.post("/{job_id}/retry", status_code=202)
    async def retry_job(job_id: str, request: Request) -> dict[str, Any]:
        return job_body(await jobs.retry(job_id, tenant=tenant_of(request)))

    @router.get("/{job_id}/events")
    async def job_events(job_id: str, request: Request) -> StreamingResponse:
        changes = jobs.transitions(job_id, tenant=tenant_of(request))
        first = await anext(changes)  # an unknown job is a 404 before the stream starts

        async def body() -> AsyncIterator[str]:
            try:
                yield _event(first)
                async for change in changes:
                    yield _event(change)
                    if await request.is_disconnected():
                        return
            finally:
                await changes.aclose()
            yield "data: [DONE]\n\n"

        return StreamingResponse(body(), media_type="text/event-stream", headers=_SSE_HEADERS)

    return router


def _parse(schema: type[_Body], body: dict[str, Any]) -> Any:
    """Validate the inner request as its endpoint would, naming the bad field as body.<field>."""
    try:
        return schema.model_validate(body)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in ("body", *err.get("loc", ())))
        raise InvalidRequest(describe_invalid(err, loc), loc) from e


def _event(change: Any) -> str:
    if isinstance(change, JobView):
        payload = {"type": "job.progress", "id": change.record.id, "progress": job_body(change)["progress"]}
    else:
        payload = {"type": "job.status"} | transition_body(change)
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"
