"""Feedback on answers: a rating of a chat completion, completion, response or async job of the
caller's own tenant, linked to what was asked and answered.

The rated answer is found where it was recorded: the request log (chat completions, completions,
and responses, whose log entry carries the response's id), the response store (a stored response
whose log entry has lost its content), or the job store. Another tenant's id is not found, like
one that never was (404). A tenant that keeps no content gets no prompt or answer stored: only
what it sent (rating, correction, tags, comment) and the rated request's model, version,
parameters and end user.

A second rating of the same answer by the same tenant replaces the first (people change their
minds; a dataset wants one label per answer)."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from genloom.config import FeedbackSettings
from genloom.gateway.errors import InvalidRequest
from genloom.jobs.records import JobNotFound
from genloom.registry import model_name
from genloom.store.feedback import Feedback, FeedbackStore
from genloom.store.jobs import JobStore
from genloom.store.records import RequestEntry
from genloom.store.request_log import RequestLog
from genloom.store.responses import ResponseNotFound, ResponseStore
from genloom.telemetry import NO_OBSERVER, Observer
from genloom.telemetry.monitors import Monitors

THUMBS, STARS = "thumbs", "stars"


class AnswerNotFound(LookupError):
    """No answer with this id for this tenant (404)."""

    def __init__(self, response_id: str) -> None:
        super().__init__(f"no chat completion, completion, response or job with id '{response_id}' for this tenant")
        self.response_id = response_id


@dataclass(frozen=True)
class Rated:
    """What a rating is about: where it was found and what it holds."""

    source: str  # request, response or job
    model: str
    version: str | None
    user: str | None
    prompt: list[dict[str, Any]] | str | None
    output: str | None
    params: dict[str, Any] | None


def score_of(rating: int, scale: str | None) -> tuple[str, float]:
    """The scale a rating is on and its score on 0..1. Thumbs are -1 and 1, stars 1 to 5; a bare 1
    is a thumbs-up unless `scale` says stars (then it is the lowest star)."""
    if isinstance(rating, bool) or not isinstance(rating, int):
        raise InvalidRequest("rating must be an integer: -1 or 1 (thumbs), or 1 to 5 (stars)", "rating")
    if scale is None:
        scale = THUMBS if rating in (-1, 1) else STARS
    if scale == THUMBS:
        if rating not in (-1, 1):
            raise InvalidRequest(f"a thumbs rating is -1 or 1, not {rating}", "rating")
        return THUMBS, (rating + 1) / 2
    if scale == STARS:
        if not 1 <= rating <= 5:
            raise InvalidRequest(f"a star rating is 1 to 5, not {rating}", "rating")
        return STARS, (rating - 1) / 4
    raise InvalidRequest(f"scale must be '{THUMBS}' or '{STARS}', not {scale!r}", "scale")


class FeedbackService:
    def __init__(self, *, store: FeedbackStore, request_log: RequestLog, jobs: JobStore, settings: FeedbackSettings,
                 responses: ResponseStore | None = None, observer: Observer = NO_OBSERVER,
                 monitors: Monitors | None = None) -> None:
        self.store = store
        self._log = request_log
        self._jobs = jobs
        self._responses = responses
        self._settings = settings
        self._observer = observer
        self._monitors = monitors

    async def to_review(self, *, tenant: str, model: str | None = None, limit: int = 20) -> list[RequestEntry]:
        """The tenant's newest answers nobody has rated yet (with their content), newest first:
        the console's review queue, whose ratings and corrections feed the datasets."""
        found: list[RequestEntry] = []
        recent = await self._log.newest(tenant=tenant, model=model, limit=limit * 5)
        rated = await self.store.rated(tenant=tenant, response_ids=[e.id for e in recent])
        for entry in recent:
            if entry.id not in rated:
                found.append(entry)
            if len(found) == limit:
                break
        return found

    async def submit(self, *, tenant: str, keep_content: bool, response_id: str, rating: int, scale: str | None = None,
                     correction: str | None = None, tags: list[str] | None = None, comment: str | None = None,
                     user: str | None = None) -> tuple[Feedback, list[str]]:
        """Store a rating; it and the ids of the tenant's earlier ratings of the same answer it replaced."""
        scale, score = score_of(rating, scale)
        tags = self._checked(correction, tags, comment)
        rated = await self._find(response_id, tenant)
        feedback = Feedback(
            id=f"fb_{uuid.uuid4().hex}", tenant=tenant, response_id=response_id, source=rated.source, model=rated.model,
            version=rated.version, user=user if user is not None else rated.user, rating=rating, scale=scale,
            score=score, correction=correction, tags=tags, comment=comment,
            prompt=rated.prompt if keep_content else None, output=rated.output if keep_content else None,
            params=rated.params, created_at=datetime.now(UTC),
        )
        replaced = await self.store.add(feedback)
        version = rated.version or rated.model
        self._observer.feedback(model=rated.model, version=version, score=score)
        if self._monitors is not None:
            self._monitors.observe_feedback(model=rated.model, version=version, score=score)
        return feedback, replaced

    def _checked(self, correction: str | None, tags: list[str] | None, comment: str | None) -> list[str]:
        s = self._settings
        if correction is not None and not correction.strip():
            raise InvalidRequest("correction is empty; leave it out when there is none", "correction")
        if correction is not None and len(correction) > s.max_correction_chars:
            raise InvalidRequest(f"correction is {len(correction)} characters; at most {s.max_correction_chars}", "correction")
        if comment is not None and len(comment) > s.max_comment_chars:
            raise InvalidRequest(f"comment is {len(comment)} characters; at most {s.max_comment_chars}", "comment")
        tags = list(tags or [])
        if len(tags) > s.max_tags:
            raise InvalidRequest(f"{len(tags)} tags; at most {s.max_tags}", "tags")
        for i, tag in enumerate(tags):
            if not tag.strip() or len(tag) > 64:
                raise InvalidRequest(f"tag {i} must be 1 to 64 characters", "tags")
        return tags

    async def _find(self, response_id: str, tenant: str) -> Rated:
        if response_id.startswith("job_"):
            return await self._job(response_id, tenant)
        entry = await self._log.owned(response_id, tenant=tenant)
        if entry is None:
            # The log writes in batches a few tens of milliseconds after an answer: a rating sent
            # right away waits for this process's writes, then (scaled out) briefly for another's.
            await self._log.flush()
            entry = await self._log.owned(response_id, tenant=tenant)
            if entry is None and response_id.startswith(("chatcmpl-", "cmpl-", "resp_")):
                await asyncio.sleep(0.25)
                entry = await self._log.owned(response_id, tenant=tenant)
        stored = None
        if response_id.startswith("resp_") and self._responses is not None and (entry is None or entry.prompt is None):
            try:
                stored = await self._responses.get(response_id, tenant=tenant)
            except ResponseNotFound:
                stored = None
        if entry is None and stored is None:
            raise AnswerNotFound(response_id)
        source = "response" if response_id.startswith("resp_") else "request"
        prompt = entry.prompt if entry is not None else None
        output = entry.output[0] if entry is not None and entry.output else None
        if stored is not None and prompt is None:
            *asked, answer = stored.conversation or [{}]
            prompt, output = asked, answer.get("content") if isinstance(answer.get("content"), str) else output
        model = entry.model if entry is not None else str(stored.body.get("model", "")) if stored else ""
        return Rated(source=source, model=model_name(model), version=entry.version if entry is not None else None,
                     user=entry.user if entry is not None else None, prompt=prompt, output=output,
                     params=entry.params if entry is not None else None)

    async def _job(self, job_id: str, tenant: str) -> Rated:
        try:
            record = await self._jobs.get(job_id, tenant=tenant, history=False)
        except JobNotFound:
            raise AnswerNotFound(job_id) from None
        request = record.request or {}
        body = record.body.get("body") if isinstance(record.body.get("body"), dict) else record.body
        result = record.result or {}
        choices = result.get("choices") or [{}]
        first = choices[0] if isinstance(choices[0], dict) else {}
        output = (first.get("message") or {}).get("content") if "message" in first else first.get("text")
        return Rated(source="job", model=model_name(record.model), version=record.model, user=body.get("user"),
                     prompt=request.get("messages") if request.get("messages") is not None else request.get("prompt"),
                     output=output if isinstance(output, str) else None, params=request.get("params"))
