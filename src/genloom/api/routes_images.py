"""/v1/images/generations: translate between OpenAI's shapes and the gateway's ImageService."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import Field

from genloom.api.callers import caller
from genloom.api.schemas import VERSION_HEADER, _Body
from genloom.gateway.image_service import MAX_SEED, ImageRequest, ImageService

_CLIENT_CLOSED = 499


class ImageGenerationBody(_Body):
    """OpenAI's image request plus Genloom's own fields (negative_prompt, steps, guidance_scale,
    seed, scheduler, lora_scale), which the openai client sends through `extra_body`. OpenAI's style and
    quality knobs are accepted and change nothing: they name features of OpenAI's own models."""

    model: str = Field(min_length=1)
    prompt: str
    n: int | None = Field(None, ge=1)
    size: str | None = None
    response_format: Literal["b64_json", "url"] | None = None
    output_format: Literal["png"] | None = None
    quality: Literal["auto", "standard", "hd", "low", "medium", "high"] | None = None
    style: Literal["vivid", "natural"] | None = None
    user: str | None = None
    negative_prompt: str | None = None
    steps: int | None = Field(None, ge=1)
    guidance_scale: float | None = Field(None, ge=0)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    scheduler: str | None = None
    lora_scale: float | None = Field(None, ge=0, le=2, description="a LoRA version only: how strongly its adapter applies (default 1)")


def image_request(body: ImageGenerationBody, request: Request) -> ImageRequest:
    who = caller(request)
    return ImageRequest(
        model=body.model, prompt=body.prompt, n=body.n or 1, size=body.size,
        response_format=body.response_format or "b64_json", negative_prompt=body.negative_prompt, steps=body.steps,
        guidance_scale=body.guidance_scale, seed=body.seed, scheduler=body.scheduler, lora_scale=body.lora_scale,
        tier=who.tier, tenant=who.tenant,
        key_id=who.key_id, limits=who.limits, key_limits=who.key_limits, guardrails=who.guardrails,
    )


def build_images_router(service: ImageService) -> APIRouter:
    router = APIRouter(prefix="/v1")

    @router.post("/images/generations")
    async def generate(body: ImageGenerationBody, request: Request) -> Response:
        result = await service.generate(
            image_request(body, request), request.is_disconnected, base_url=str(request.base_url).rstrip("/")
        )
        if result is None:
            return Response(status_code=_CLIENT_CLOSED)
        return JSONResponse(result, headers={VERSION_HEADER: result["system_fingerprint"]})

    return router
