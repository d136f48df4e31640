"""/v1/embeddings: translate between OpenAI's shapes and the gateway's EmbeddingService."""

from __future__ import annotations

import base64
import struct
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import Field, WithJsonSchema

from genloom.api.callers import caller
from genloom.api.schemas import VERSION_HEADER, _Body
from genloom.gateway.embedding_service import EmbeddingRequest, EmbeddingResult, EmbeddingService

_CLIENT_CLOSED = 499  # nginx's "client closed request": nobody reads it, but the access log tells the truth

# The service checks the input and names what is wrong in words; a union type here would only
# give a client pydantic's error for every member of the union.
_Input = Annotated[
    Any,
    WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}),
]


class EmbeddingsBody(_Body):
    """OpenAI's embeddings request. Token-id input is refused: this server tokenizes for its own model."""

    model: str = Field(min_length=1)
    input: _Input
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None


def build_embeddings_router(service: EmbeddingService) -> APIRouter:
    router = APIRouter(prefix="/v1")

    @router.post("/embeddings")
    async def embeddings(body: EmbeddingsBody, request: Request) -> Response:
        who = caller(request)
        embedding_request = EmbeddingRequest(
            model=body.model, input=body.input, dimensions=body.dimensions, tier=who.tier, tenant=who.tenant,
            limits=who.limits, guardrails=who.guardrails,
        )
        result = await service.embed(embedding_request, request.is_disconnected)
        if result is None:
            return Response(status_code=_CLIENT_CLOSED)
        return JSONResponse(openai_body(result, body.encoding_format), headers={VERSION_HEADER: result.version})

    return router


def openai_body(result: EmbeddingResult, encoding_format: str) -> dict[str, Any]:
    data = [
        {"object": "embedding", "index": i, "embedding": _encode(vector, encoding_format)}
        for i, vector in enumerate(result.vectors)
    ]
    tokens = result.prompt_tokens
    return {
        "object": "list",
        "data": data,
        "model": result.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _encode(vector: list[float], encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        # As OpenAI does: the float32 values, little-endian, one after another, base64-encoded.
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return vector
