"""A model reference from a client (`name`, `name@v3`, `name@alias`) to the version that serves
it, for the services that take no part in rollouts (images, embeddings, fallbacks)."""

from __future__ import annotations

from collections.abc import Container

from genloom.config import ModelKind
from genloom.gateway.errors import ModelNotFound, NotReady
from genloom.registry import UnknownModel
from genloom.registry.registry import ModelRegistry


def served_version(registry: ModelRegistry | None, ref: str, loaded: Container[str], kind: ModelKind) -> str:
    """The key (`name@vN`) of the `kind` version `ref` names: 404 when there is none, 503 while
    it is registered but not loaded in this process. Without a registry, names are keys."""
    if registry is None:
        return ref
    try:
        version = registry.catalog.version(ref)
    except UnknownModel as e:
        raise ModelNotFound(ref, _names_of(registry, kind)) from e
    if version.kind is not kind:
        raise ModelNotFound(ref, _names_of(registry, kind))
    if version.key not in loaded:
        raise not_loaded(registry, version.key)
    return version.key


def not_loaded(registry: ModelRegistry, key: str) -> NotReady:
    version = registry.catalog.versions[key]
    why = f" ({version.state_reason})" if version.state_reason else ""
    return NotReady(f"{key} is not loaded here: it is {version.state.value}{why}; retry shortly")


def _names_of(registry: ModelRegistry, kind: ModelKind) -> list[str]:
    return sorted({v.name for v in registry.catalog.versions.values() if v.kind is kind})
