"""/v1/feedback: rate an answer (a chat completion, completion, response or async job of the
caller's tenant) and read the ratings back. Not an OpenAI API; shaped like one (objects with an
`object` field, lists with `has_more`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import Field

from genloom.api.callers import caller, principal
from genloom.api.schemas import _Body
from genloom.gateway.feedback import FeedbackService
from genloom.store.feedback import Feedback


class FeedbackCreate(_Body):
    response_id: str = Field(min_length=1, max_length=80)
    rating: int = Field(strict=True, description="-1 or 1 (thumbs), or 1 to 5 (stars); a bare 1 is a thumbs-up unless scale is 'stars'")
    scale: Literal["thumbs", "stars"] | None = None
    correction: str | None = None  # what the answer should have been: a dataset's target
    tags: list[str] | None = None
    comment: str | None = None
    user: str | None = Field(None, max_length=256)  # the end user; by default the rated request's `user`


def feedback_body(f: Feedback, *, replaced: list[str] | None = None) -> dict[str, Any]:
    body = {
        "id": f.id, "object": "feedback", "response_id": f.response_id, "source": f.source, "model": f.model,
        "version": f.version, "user": f.user, "rating": f.rating, "scale": f.scale, "score": f.score,
        "correction": f.correction, "tags": f.tags, "comment": f.comment, "prompt": f.prompt, "output": f.output,
        "created_at": int(f.created_at.timestamp()),
    }
    if replaced is not None:
        body["replaced"] = replaced
    return body


def build_feedback_router(service: FeedbackService) -> APIRouter:
    router = APIRouter(prefix="/v1")

    @router.post("/feedback")
    async def create(body: FeedbackCreate, request: Request) -> dict[str, Any]:
        who = caller(request)
        feedback, replaced = await service.submit(
            tenant=who.tenant, keep_content=who.keep_content, response_id=body.response_id, rating=body.rating,
            scale=body.scale, correction=body.correction, tags=body.tags, comment=body.comment, user=body.user,
        )
        return feedback_body(feedback, replaced=replaced)

    @router.get("/feedback")
    async def list_feedback(
        request: Request, model: str | None = None, version: str | None = None,
        since: int | None = Query(None, ge=0, le=32_503_680_000, description="unix seconds: ratings made at or after"),
        limit: int = Query(100, ge=1, le=1000), after: str | None = None,
        tenant: str | None = Query(None, description="admin keys only: one tenant's (default: every tenant's)"),
    ) -> dict[str, Any]:
        """The caller's tenant's ratings, newest first (an admin key: every tenant's, or `tenant`'s)."""
        who = principal(request)
        scope = tenant if who.is_admin else who.tenant_id  # a tenant key sees its own, whatever it asks for
        rows = await service.store.list(
            tenant=scope, model=model, version=version,
            since=datetime.fromtimestamp(since, UTC) if since is not None else None, limit=limit + 1, after=after,
        )
        page = rows[:limit]
        return {"object": "list", "data": [feedback_body(f) for f in page], "has_more": len(rows) > limit,
                "first_id": page[0].id if page else None, "last_id": page[-1].id if page else None}

    @router.get("/feedback/{feedback_id}")
    async def get(feedback_id: str, request: Request) -> dict[str, Any]:
        who = principal(request)
        return feedback_body(await service.store.get(feedback_id, tenant=None if who.is_admin else who.tenant_id))

    return router
