"""/v1/models: every model this server serves, whatever its kind: one card per model name (its
production version), and any `name@vN` or `name@alias` on request."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fastapi import APIRouter

from genloom.gateway import ModelNotFound
from genloom.gateway.text_service import RemoteModel
from genloom.registry import UnknownModel
from genloom.registry.registry import ModelRegistry

Loaded = Callable[[], Mapping[str, Any]]  # key → runtime with an `info` (created, parameters, max_context)


def build_models_router(registry: ModelRegistry, loaded: Loaded) -> APIRouter:
    router = APIRouter(prefix="/v1")

    @router.get("/models")
    async def list_models() -> dict[str, Any]:
        runtimes, catalog = loaded(), registry.catalog
        cards = []
        for name in catalog.names():
            try:
                version = catalog.version(name)
            except UnknownModel:  # no production alias: reachable only as name@vN
                continue
            if version.key in runtimes:
                cards.append(_model_card(name, version.key, runtimes[version.key]))
        return {"object": "list", "data": cards}

    @router.get("/models/{model_id:path}")
    async def get_model(model_id: str) -> dict[str, Any]:
        runtimes = loaded()
        try:
            version = registry.catalog.version(model_id)
        except UnknownModel as e:
            raise ModelNotFound(model_id, registry.catalog.names()) from e
        if version.key not in runtimes:
            raise ModelNotFound(model_id, registry.catalog.names())
        return _model_card(model_id, version.key, runtimes[version.key])

    return router


def _model_card(model_id: str, key: str, runtime: Any) -> dict[str, Any]:
    info = runtime.info
    kind = "image" if hasattr(info, "default_size") else "embedding" if hasattr(info, "dimensions") else "text"
    return {
        "id": model_id,
        "object": "model",
        "created": info.created,
        "owned_by": "genloom",
        "kind": kind,
        "version": key,
        "max_context": getattr(info, "max_context", None),
        "parameters": info.parameters,
        "capabilities": capabilities(kind, info, remote=isinstance(runtime, RemoteModel)),
    }


def capabilities(kind: str, info: Any, *, remote: bool) -> dict[str, Any]:
    """What a model takes (an extension field of its card): which endpoints, and which request
    features beyond plain text."""
    text = kind == "text"
    return {
        "chat": text, "completions": text, "embeddings": kind == "embedding", "images": kind == "image",
        "logprobs": text and not remote, "tools": text and not remote, "json_schema": text, "vision": False,
        "context": getattr(info, "max_context", None),
    }
