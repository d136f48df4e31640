"""Model versions, aliases and rollouts: what serves a model name, and how that changes."""

from genloom.registry.versions import (
    PRODUCTION,
    ModelRef,
    ModelVersion,
    RegistryConflict,
    RegistryEvent,
    UnknownModel,
    VersionState,
    model_name,
    version_key,
)

__all__ = [
    "PRODUCTION", "ModelRef", "ModelVersion", "RegistryConflict", "RegistryEvent", "UnknownModel", "VersionState", "model_name", "version_key",
]
