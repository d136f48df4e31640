"""The registry's decisions: numbering versions, what a config change means, which aliases
move, what may be retired. The store keeps the records; the catalog answers requests; a
process's loader reads the catalog to know what to hold."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from genloom.config import ModelKind, ModelSettings
from genloom.registry.catalog import Catalog, serving
from genloom.registry.versions import (
    PRODUCTION,
    ModelVersion,
    RegistryConflict,
    RegistryEvent,
    UnknownModel,
    VersionState,
)
from genloom.store.model_registry import RegistryStore

log = logging.getLogger("genloom.registry")
CONFIG_ACTOR = "config"
_SECRET_FIELDS = {"name", "api_key"}


def utc_now() -> datetime:
    return datetime.now(UTC)


def spec_of(settings: ModelSettings) -> dict[str, Any]:
    """A model's settings as stored with its version (name and key apart)."""
    return settings.model_dump(mode="json", exclude=_SECRET_FIELDS)


def settings_of(version: ModelVersion) -> ModelSettings:
    """The settings a loader builds the version from (validated again: a path that vanished fails here)."""
    return ModelSettings.model_validate({**version.spec, "name": version.name, "api_key": version.api_key})


def revision_of(settings: ModelSettings) -> str:
    """A hash of what the version serves: its files' names and bytes, or its upstream."""
    return _digest(settings, contents=True)


def signature_of(settings: ModelSettings) -> str:
    """A hash of the files' names, sizes and modification times: cheap to take at every start,
    so unchanged files are not read again to learn that they did not change."""
    return _digest(settings, contents=False)


def _digest(settings: ModelSettings, *, contents: bool) -> str:
    digest = hashlib.sha256()
    if settings.kind is ModelKind.REMOTE:
        digest.update(json.dumps([settings.base_url, settings.upstream_model or settings.name]).encode())
        return digest.hexdigest()
    assert settings.path is not None  # the settings require a path for local kinds
    if settings.adapter_blob:
        digest.update(f"adapter-blob:{settings.adapter_blob}\0".encode())  # content-addressed already
    for root in [Path(settings.path)] + ([Path(settings.adapter)] if settings.adapter else []):
        digest.update(b"\1")  # the base's files, then the adapter's
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())  # a LoRA may be one file
        for file in files:
            digest.update(str(file.relative_to(root) if file != root else file.name).encode() + b"\0")
            if not contents:
                stat = file.stat()
                digest.update(f"{stat.st_size}:{stat.st_mtime_ns}\0".encode())
                continue
            with file.open("rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
    return digest.hexdigest()


class ModelRegistry:
    def __init__(
        self, *, store: RegistryStore, clock: Callable[[], datetime] = utc_now,
        on_change: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.store = store
        self._clock = clock
        self._on_change = on_change
        self.catalog = Catalog()
        self._refresh_lock = asyncio.Lock()

    async def refresh(self) -> Catalog:
        """Read the registry again and replace the catalog (after a change here or elsewhere)."""
        async with self._refresh_lock:
            versions = await self.store.versions()
            aliases = await self.store.aliases()
            rollouts = {r.name: r for r in await self.store.rollouts(active_only=True)}
            self.catalog = Catalog(versions=serving(versions), aliases=aliases, rollouts=rollouts)
            return self.catalog

    async def changed(self) -> None:
        await self.refresh()
        if self._on_change is not None:
            await self._on_change()

    async def sync_config(self, models: list[ModelSettings]) -> None:
        """Register the config file's models (and the built-ins) at start: an unknown name becomes
        v1 on `production`; a changed entry becomes a new version, and `production` moves to it
        when it pointed at a config version; a config version whose name left the config is
        retired. Versions registered through the API are never touched. Processes starting
        together on one database take turns, so each entry is registered once."""
        async with self.store.exclusive():
            await self._sync_config(models)
        await self.refresh()

    async def _sync_config(self, models: list[ModelSettings]) -> None:
        versions = await self.store.versions()
        aliases = await self.store.aliases()
        configured = {m.name for m in models}
        for settings in models:
            mine = [v for v in versions if v.name == settings.name and v.state is not VersionState.RETIRED]
            spec, api_key = spec_of(settings), settings.api_key.get_secret_value() if settings.api_key else None
            same = [v for v in mine if v.spec == spec and v.api_key == api_key]
            signature = await asyncio.to_thread(signature_of, settings)
            if any(v.signature == signature for v in same):
                continue  # the files were not touched: not read again
            revision = await asyncio.to_thread(revision_of, settings)
            if any(v.revision == revision for v in same):
                continue
            production = aliases.get(settings.name, {}).get(PRODUCTION)
            follows_config = production is None or any(
                v.version == production and v.created_by == CONFIG_ACTOR for v in mine
            )
            added = await self.store.add_version(
                name=settings.name, kind=settings.kind, spec=spec, api_key=api_key, revision=revision, signature=signature,
                metadata={},
                created_by=CONFIG_ACTOR, at=self._clock(), aliases=(PRODUCTION,) if follows_config else (),
            )
            log.info("registered %s from the config%s", added.key, " (now production)" if follows_config else "")
        for v in versions:
            if v.created_by == CONFIG_ACTOR and v.name not in configured and v.state is not VersionState.RETIRED:
                for alias, number in aliases.get(v.name, {}).items():
                    if number == v.version:
                        await self.store.remove_alias(v.name, alias, actor=CONFIG_ACTOR, at=self._clock())
                try:
                    await self.store.set_state(v.name, v.version, VersionState.RETIRED, reason="removed from the config",
                                               actor=CONFIG_ACTOR, at=self._clock())
                except RegistryConflict as e:
                    log.warning("%s left the config but stays: %s", v.key, e)

    async def register(
        self, settings: ModelSettings, *, metadata: dict[str, Any], actor: str, aliases: tuple[str, ...] = ()
    ) -> ModelVersion:
        """A new version of `settings.name`; a new name's first version becomes its production."""
        revision = await asyncio.to_thread(revision_of, settings)
        signature = await asyncio.to_thread(signature_of, settings)
        existing = await self.store.aliases()
        if PRODUCTION not in existing.get(settings.name, {}):
            aliases = (*aliases, PRODUCTION)
        added = await self.store.add_version(
            name=settings.name, kind=settings.kind, spec=spec_of(settings),
            api_key=settings.api_key.get_secret_value() if settings.api_key else None, revision=revision,
            signature=signature, metadata=metadata, created_by=actor, at=self._clock(), aliases=tuple(dict.fromkeys(aliases)),
        )
        await self.changed()
        return added

    async def set_alias(self, name: str, alias: str, version: int, *, actor: str) -> int | None:
        self._model_exists(name)
        rollout = self.catalog.rollouts.get(name)
        if rollout is not None and alias == PRODUCTION:
            raise RegistryConflict(f"model {name} has an active rollout ({rollout.id}); promote or roll it back instead")
        before = await self.store.set_alias(name, alias, version, actor=actor, at=self._clock())
        await self.changed()
        return before

    async def retire(self, name: str, version: int, *, actor: str) -> None:
        self._model_exists(name)
        await self.store.version(name, version)  # 404 for an unknown version
        await self.store.set_state(name, version, VersionState.RETIRED, reason=f"retired by {actor}", actor=actor, at=self._clock())
        await self.changed()

    async def set_state(self, version: ModelVersion, state: VersionState, reason: str | None = None) -> None:
        """A loader's report: loading, ready or failed."""
        await self.store.set_state(version.name, version.version, state, reason=reason, actor="loader", at=self._clock())

    async def history(self, name: str, *, since: datetime | None = None, until: datetime | None = None) -> list[RegistryEvent]:
        if not await self.store.versions(name):
            raise UnknownModel(name, self.catalog.names())
        return await self.store.events(name, since=since, until=until)

    async def served_at(self, name: str, at: datetime) -> dict[str, str]:
        """Which version each alias pointed at, at time `at` (from the audit trail)."""
        pointed: dict[str, str] = {}
        for event in await self.history(name, until=at):
            if event.action != "alias":
                continue
            if event.after is None:
                pointed.pop((event.before or {}).get("alias", ""), None)
            else:
                pointed[event.after["alias"]] = event.after["version"]
        return pointed

    def _model_exists(self, name: str) -> None:
        if name not in self.catalog.names():
            raise UnknownModel(name, self.catalog.names())
