"""/v1/models: every model this server serves, whatever its kind: one card per model name (its
production version), one per fine-tuned version under its OpenAI name (`ft:BASE:SUFFIX:ID`, with
`parent` the base version it was trained on; a tenant's own fine-tunes for that tenant only), and any `name@vN` or
`name@alias` on request."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fastapi import APIRouter, Request

from genloom.api.callers import principal
from genloom.gateway import ModelNotFound
from genloom.gateway.text_service import RemoteModel
from genloom.registry import ModelVersion, UnknownModel
from genloom.registry.registry import ModelRegistry

Loaded = Callable[[], Mapping[str, Any]]  # key → runtime with an `info` (created, parameters, max_context)


def build_models_router(registry: ModelRegistry, loaded: Loaded) -> APIRouter:
    router = APIRouter(prefix="/v1")

    @router.get("/models")
    async def list_models(request: Request) -> dict[str, Any]:
        runtimes, catalog = loaded(), registry.catalog
        who = principal(request)
        cards = []
        for name in catalog.names():
            try:
                version = catalog.version(name)
            except UnknownModel:  # no production alias: reachable only as name@vN
                version = None
            if version is not None and version.key in runtimes:
                cards.append(_model_card(name, version.key, runtimes[version.key]))
            for alias, number in sorted(catalog.aliases.get(name, {}).items()):
                tuned = catalog.versions.get(f"{name}@v{number}")
                if alias.startswith("ft-") and tuned is not None and tuned.key in runtimes and _visible(tuned, who):
                    suffix, _, short_id = alias.removeprefix("ft-").rpartition("-")
                    card = _model_card(f"ft:{name}:{suffix}:{short_id}", tuned.key, runtimes[tuned.key])
                    owner = _owner(tuned)
                    parent = tuned.metadata.get("base_version") if isinstance(tuned.metadata, dict) else None
                    card |= {"owned_by": owner or "genloom", "parent": parent}
                    cards.append(card)
        return {"object": "list", "data": cards}

    @router.get("/models/{model_id:path}")
    async def get_model(model_id: str, request: Request) -> dict[str, Any]:
        runtimes = loaded()
        try:
            version = registry.catalog.version(model_id)
        except UnknownModel as e:
            raise ModelNotFound(model_id, registry.catalog.names()) from e
        if version.key not in runtimes or (not _visible(version, principal(request)) and model_id != version.name):
            raise ModelNotFound(model_id, registry.catalog.names())
        return _model_card(model_id, version.key, runtimes[version.key])

    return router


def _owner(version: ModelVersion) -> str | None:
    return version.metadata.get("owner_tenant") if isinstance(version.metadata, dict) else None


def _visible(version: ModelVersion, who) -> bool:
    """A tenant's own fine-tuned version is listed and described for that tenant only: the one
    that may name it (`Catalog.resolve`); an admin manages it through /v1/admin/models."""
    owner = _owner(version)
    return owner is None or owner == who.tenant_id


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
