"""POST /v1/moderations in OpenAI's shape, answered by every built-in scanner (model
`genloom-guard`): OpenAI's categories where a scanner scores them, plus prompt_injection, pii
and secrets. A category is flagged at its scanner's calibrated threshold."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict

from genloom.api.schemas import _Body
from genloom.gateway.errors import InvalidRequest, ModelNotFound
from genloom.guardrails.engine import Guardrails

GUARD_MODEL = "genloom-guard"
# OpenAI's model names, so a client that names one works unchanged; the answer says genloom-guard.
_ALIASES = frozenset({GUARD_MODEL, "omni-moderation-latest", "text-moderation-latest", "text-moderation-stable"})

# OpenAI's categories, and the scanner category that scores each (None: not scored, always 0).
OPENAI_CATEGORIES: dict[str, tuple[str, str] | None] = {
    "harassment": None,
    "harassment/threatening": None,
    "hate": ("unsafe", "hate"),
    "hate/threatening": None,
    "illicit": ("unsafe", "illicit"),
    "illicit/violent": None,
    "self-harm": ("unsafe", "self_harm"),
    "self-harm/intent": None,
    "self-harm/instructions": None,
    "sexual": ("unsafe", "sexual"),
    "sexual/minors": None,
    "violence": ("unsafe", "violence"),
    "violence/graphic": None,
}
GENLOOM_CATEGORIES: dict[str, tuple[str, str]] = {
    "prompt_injection": ("prompt_injection", "prompt_injection"),
    "pii": ("pii", "pii"),
    "secrets": ("secrets", "secrets"),
}


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text"]
    text: str


class ImagePart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["image_url"]


class ModerationBody(_Body):
    input: str | list[str] | list[TextPart | ImagePart]
    model: str = GUARD_MODEL


def build_moderations_router(guardrails: Guardrails, *, max_inputs: int) -> APIRouter:
    router = APIRouter(prefix="/v1")

    @router.post("/moderations")
    async def moderations(body: ModerationBody) -> dict[str, Any]:
        if body.model not in _ALIASES:
            raise ModelNotFound(body.model, [GUARD_MODEL])
        texts = _texts(body.input, max_inputs)
        results = await asyncio.to_thread(lambda: [_result(guardrails, text) for text in texts])
        return {"id": f"modr-{uuid.uuid4().hex}", "model": GUARD_MODEL, "results": results}

    return router


def _texts(given: str | list[Any], max_inputs: int) -> list[str]:
    if isinstance(given, str):
        return [given]
    if not given:
        raise InvalidRequest("input must hold at least one text", "input")
    if len(given) > max_inputs:
        raise InvalidRequest(f"input holds {len(given)} items; at most {max_inputs} per request", "input")
    texts = []
    for i, item in enumerate(given):
        if isinstance(item, ImagePart):
            raise InvalidRequest("genloom-guard reads text only; images are not moderated", f"input[{i}]")
        texts.append(item.text if isinstance(item, TextPart) else item)
    return texts


def _result(guardrails: Guardrails, text: str) -> dict[str, Any]:
    found = {(f.scanner, f.category): f.score for f in guardrails.moderate(text)}
    categories: dict[str, bool] = {}
    scores: dict[str, float] = {}
    for name, source in [*OPENAI_CATEGORIES.items(), *GENLOOM_CATEGORIES.items()]:
        score = found.get(source, 0.0) if source is not None else 0.0
        scores[name] = round(float(score), 6)
        categories[name] = source is not None and score > 0 and score >= guardrails.threshold(*source)
    applied = {name: (["text"] if source is not None else []) for name, source in
               [*OPENAI_CATEGORIES.items(), *GENLOOM_CATEGORIES.items()]}
    return {"flagged": any(categories.values()), "categories": categories, "category_scores": scores,
            "category_applied_input_types": applied}

