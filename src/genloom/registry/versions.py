"""What the registry holds, as plain data: a model's immutable versions, the aliases that point
at them, and the audit events every change leaves behind.

A served version is named `name@vN` everywhere inside Genloom (queue lines, worker threads,
the request log); clients may also say `name` (its `production` alias) or `name@alias`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

from genloom.config import ModelKind

PRODUCTION = "production"
VERSION_RE = re.compile(r"^v([1-9][0-9]{0,8})$")
ALIAS_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$")


class VersionState(str, Enum):
    """registered → loading → ready | failed; any → retired (final: a retired version never serves again)."""

    REGISTERED = "registered"
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"
    RETIRED = "retired"


class UnknownModel(LookupError):
    """No such model, version or alias; `known` lists what the client could have asked for."""

    def __init__(self, ref: str, known: list[str]) -> None:
        super().__init__(ref)
        self.ref, self.known = ref, known


class RegistryConflict(Exception):
    """A change the registry's current state forbids (a 409): retiring a version an alias or a
    rollout uses, a second active rollout."""


def version_key(name: str, version: int) -> str:
    """The name one version is served under inside Genloom."""
    return f"{name}@v{version}"


def model_name(key: str) -> str:
    """`name@v3` → `name`; a fine-tuned model's `ft:name:suffix:id` → `name`; a plain name stays as it is."""
    fine_tuned = _fine_tuned(key)
    return fine_tuned[0] if fine_tuned else key.split("@", 1)[0]


def fine_tuned_alias(suffix: str, short_id: str) -> str:
    """The alias a fine-tuned version gets on its base model: `ft:base:suffix:id` resolves to it."""
    return f"ft-{suffix}-{short_id}"


def _fine_tuned(ref: str) -> tuple[str, str] | None:
    """(base name, alias) for OpenAI's fine-tuned model name `ft:BASE:SUFFIX:ID`, else None."""
    if not ref.startswith("ft:"):
        return None
    parts = ref.split(":")
    if len(parts) != 4 or not all(parts[1:]):
        return None
    return parts[1], fine_tuned_alias(parts[2], parts[3])


@dataclass(frozen=True)
class ModelRef:
    """What a client asked for: `name`, `name@v3` or `name@alias`."""

    name: str
    version: int | None = None
    alias: str | None = None

    @classmethod
    def parse(cls, ref: str) -> ModelRef:
        fine_tuned = _fine_tuned(ref)
        if fine_tuned is not None:
            return cls(fine_tuned[0], alias=fine_tuned[1])
        name, at, rest = ref.partition("@")
        if not at:
            return cls(name, alias=PRODUCTION)
        match = VERSION_RE.match(rest)
        if match:
            return cls(name, version=int(match.group(1)))
        return cls(name, alias=rest)

    @property
    def explicit(self) -> bool:
        """Whether the client named a version or alias itself (rollouts only split plain names)."""
        return self.version is not None or self.alias != PRODUCTION


@dataclass(frozen=True, kw_only=True)
class ModelVersion:
    """One immutable version. `spec` is the model's settings (a `ModelSettings` without name),
    the API key of a remote one kept apart in `api_key` so it is never shown."""

    name: str
    version: int
    kind: ModelKind
    spec: dict[str, Any]
    revision: str
    signature: str  # names, sizes and times of its files (what a start compares before hashing)
    metadata: dict[str, Any]
    state: VersionState
    created_by: str
    created_at: datetime
    state_reason: str | None = None
    api_key: str | None = field(default=None, repr=False)

    @property
    def key(self) -> str:
        return version_key(self.name, self.version)

    def public(self, *, aliases: list[str] | None = None) -> dict[str, Any]:
        """The version as the admin API shows it (no secrets)."""
        source = {k: v for k, v in self.spec.items() if k in ("path", "adapter", "adapter_blob", "base_url", "upstream_model")}
        return {
            "object": "model.version", "id": self.key, "model": self.name, "version": f"v{self.version}",
            "kind": self.kind.value, "source": source, "revision": self.revision, "metadata": self.metadata,
            "state": self.state.value, "state_reason": self.state_reason, "created_by": self.created_by,
            "created_at": int(self.created_at.timestamp()), "aliases": aliases or [],
            "has_api_key": self.api_key is not None,
        }


@dataclass(frozen=True, kw_only=True)
class RegistryEvent:
    """One change: who did what when, and the state before and after."""

    name: str
    action: str  # "register", "alias", "retire", "state", "rollout.start", "rollout.promote", ...
    actor: str
    at: datetime
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None

    def public(self) -> dict[str, Any]:
        return {
            "model": self.name, "action": self.action, "actor": self.actor, "at": self.at.isoformat(),
            "before": self.before, "after": self.after,
        }
