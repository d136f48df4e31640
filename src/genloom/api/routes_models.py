"""/v1/models: every model this server serves, whatever its kind."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from fastapi import APIRouter

from genloom.gateway import ModelNotFound

ModelSource = Callable[[], Sequence[Any]]  # runtimes with an `info` (name, created, parameters, max_context)


def build_models_router(sources: Sequence[ModelSource]) -> APIRouter:
    router = APIRouter(prefix="/v1")

    def served() -> list[Any]:
        return [runtime for source in sources for runtime in source()]

    @router.get("/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [_model_card(r) for r in served()]}

    @router.get("/models/{model_id:path}")
    async def get_model(model_id: str) -> dict[str, Any]:
        for runtime in served():
            if runtime.info.name == model_id:
                return _model_card(runtime)
        raise ModelNotFound(model_id, [r.info.name for r in served()])

    return router


def _model_card(runtime: Any) -> dict[str, Any]:
    info = runtime.info
    return {
        "id": info.name,
        "object": "model",
        "created": info.created,
        "owned_by": "genloom",
        "kind": "image" if hasattr(info, "default_size") else "text",
        "max_context": getattr(info, "max_context", None),
        "parameters": info.parameters,
    }
