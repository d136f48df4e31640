"""The model registry in SQL: versions, aliases, rollouts, and an event for every change written
in the same transaction as the change. `genloom.registry` decides; this module only keeps."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import Table, delete, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from genloom.config import ModelKind
from genloom.registry.rollout import RolloutRecord, RolloutState
from genloom.registry.versions import (
    ModelVersion,
    RegistryConflict,
    RegistryEvent,
    UnknownModel,
    VersionState,
    version_key,
)
from genloom.store.database import Database
from genloom.store.schema import ModelAliasRow, ModelEventRow, ModelRolloutRow, ModelVersionRow
from genloom.store.versioning import add_numbered_version

_versions: Table = ModelVersionRow.__table__  # type: ignore[assignment]
_aliases: Table = ModelAliasRow.__table__  # type: ignore[assignment]
_events: Table = ModelEventRow.__table__  # type: ignore[assignment]
_rollouts: Table = ModelRolloutRow.__table__  # type: ignore[assignment]


# Replicas starting together register the config's models under this PostgreSQL advisory lock.
_SYNC_LOCK = 0x67656E6C6F6F6D02


class RegistryStore:
    def __init__(self, *, database: Database) -> None:
        self._database = database

    @asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """One process at a time across the database (PostgreSQL: an advisory lock held on a
        connection of its own; SQLite serves one process, so nothing to take)."""
        if self._database.engine.dialect.name != "postgresql":
            yield
            return
        async with self._database.engine.connect() as conn:
            await conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _SYNC_LOCK})
            await conn.commit()
            try:
                yield
            finally:
                await conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _SYNC_LOCK})
                await conn.commit()

    async def add_version(
        self, *, name: str, kind: ModelKind, spec: dict[str, Any], api_key: str | None, revision: str, signature: str,
        metadata: dict[str, Any], created_by: str, at: datetime, aliases: tuple[str, ...] = (),
    ) -> ModelVersion:
        """Store the next version of `name` and point `aliases` at it, in one transaction."""
        values = dict(
            name=name, kind=kind.value, spec=spec, api_key=api_key, revision=revision, signature=signature, metadata=metadata,
            state=VersionState.REGISTERED.value, state_reason=None, created_by=created_by, created_at=at,
        )

        async def record(conn: AsyncConnection, version: int) -> None:
            after = {"version": f"v{version}", "kind": kind.value, "revision": revision}
            await _event(conn, name, "register", created_by, at, None, after)
            for alias in aliases:
                await _point(conn, name, alias, version, created_by, at)

        version = await add_numbered_version(self._database, _versions, values, then=record)
        return _version(values | {"version": version})

    async def versions(self, name: str | None = None) -> list[ModelVersion]:
        query = select(_versions).order_by(_versions.c.name, _versions.c.version)
        if name is not None:
            query = query.where(_versions.c.name == name)
        async with self._database.engine.connect() as conn:
            return [_version(row) for row in (await conn.execute(query)).mappings()]

    async def version(self, name: str, version: int) -> ModelVersion:
        query = select(_versions).where(_versions.c.name == name, _versions.c.version == version)
        async with self._database.engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        if row is None:
            raise UnknownModel(version_key(name, version), [v.key for v in await self.versions(name)])
        return _version(row)

    async def aliases(self) -> dict[str, dict[str, int]]:
        """Every model's aliases: {name: {alias: version}}."""
        async with self._database.engine.connect() as conn:
            rows = (await conn.execute(select(_aliases))).mappings().all()
        out: dict[str, dict[str, int]] = {}
        for row in rows:
            out.setdefault(row["name"], {})[row["alias"]] = row["version"]
        return out

    async def set_alias(self, name: str, alias: str, version: int, *, actor: str, at: datetime) -> int | None:
        """Point `alias` at `version` (which must exist and not be retired); returns the version it
        pointed at before."""
        async with self._database.engine.begin() as conn:
            await _check_serving(conn, name, version)
            return await _point(conn, name, alias, version, actor, at)

    async def remove_alias(self, name: str, alias: str, *, actor: str, at: datetime) -> None:
        async with self._database.engine.begin() as conn:
            query = select(_aliases.c.version).where(_aliases.c.name == name, _aliases.c.alias == alias)
            before = (await conn.execute(query)).scalar()
            if before is None:
                raise UnknownModel(f"{name}@{alias}", [])
            await conn.execute(delete(_aliases).where(_aliases.c.name == name, _aliases.c.alias == alias))
            await _event(conn, name, "alias", actor, at, {"alias": alias, "version": f"v{before}"}, None)

    async def set_state(
        self, name: str, version: int, state: VersionState, *, reason: str | None, actor: str, at: datetime
    ) -> None:
        """Record a version's state (a retired one stays retired); an event when it changes."""
        async with self._database.engine.begin() as conn:
            query = select(_versions.c.state).where(_versions.c.name == name, _versions.c.version == version)
            before = (await conn.execute(query)).scalar()
            if before is None or before == state.value or before == VersionState.RETIRED.value:
                return
            if state is VersionState.RETIRED:
                await _check_unused(conn, name, version)
            await conn.execute(
                update(_versions).where(_versions.c.name == name, _versions.c.version == version)
                .values(state=state.value, state_reason=reason)
            )
            after = {"version": f"v{version}", "state": state.value} | ({"reason": reason} if reason else {})
            await _event(conn, name, "state", actor, at, {"version": f"v{version}", "state": before}, after)

    async def events(self, name: str, *, since: datetime | None = None, until: datetime | None = None) -> list[RegistryEvent]:
        query = select(_events).where(_events.c.name == name).order_by(_events.c.at, _events.c.id)
        if since is not None:
            query = query.where(_events.c.at >= since)
        if until is not None:
            query = query.where(_events.c.at <= until)
        async with self._database.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [
            RegistryEvent(name=r["name"], action=r["action"], actor=r["actor"], at=r["at"], before=r["before"], after=r["after"])
            for r in rows
        ]

    async def start_rollout(self, rollout: RolloutRecord) -> None:
        """Store a new active rollout; a model with one active already is a conflict."""
        values = _rollout_values(rollout) | {"id": rollout.id, "name": rollout.name, "created_at": rollout.created_at}
        try:
            async with self._database.engine.begin() as conn:
                await _check_serving(conn, rollout.name, rollout.candidate)
                await conn.execute(insert(_rollouts), [values])
                after = {"rollout": rollout.id, "strategy": rollout.strategy.value, "candidate": f"v{rollout.candidate}",
                         "stable": f"v{rollout.stable}"}
                await _event(conn, rollout.name, "rollout.start", rollout.created_by, rollout.created_at, None, after)
        except IntegrityError as e:
            raise RegistryConflict(
                f"model {rollout.name} already has an active rollout; promote or roll it back first"
            ) from e

    async def update_rollout(
        self, rollout: RolloutRecord, *, actor: str, expect: RolloutState | None = None,
        alias: tuple[str, int] | None = None,
    ) -> bool:
        """Write a rollout's new state (only if it is still `expect`, when given) and, in the same
        transaction, move `alias` (name, version) when the rollout ends in a promotion."""
        query = update(_rollouts).where(_rollouts.c.id == rollout.id)
        if expect is not None:
            query = query.where(_rollouts.c.state == expect.value)
        async with self._database.engine.begin() as conn:
            done = await conn.execute(query.values(**_rollout_values(rollout)))
            if done.rowcount == 0:
                return False
            if alias is not None:
                await _point(conn, rollout.name, alias[0], alias[1], actor, rollout.updated_at)
            if rollout.state.final or rollout.state != expect:
                after = {"rollout": rollout.id, "state": rollout.state.value, "percent": rollout.percent}
                if rollout.reason:
                    after["reason"] = rollout.reason
                await _event(conn, rollout.name, f"rollout.{rollout.state.value}", actor, rollout.updated_at,
                             {"state": expect.value} if expect else None, after)
        return True

    async def rollouts(self, name: str | None = None, *, active_only: bool = False) -> list[RolloutRecord]:
        query = select(_rollouts).order_by(_rollouts.c.created_at)
        if name is not None:
            query = query.where(_rollouts.c.name == name)
        if active_only:
            query = query.where(_rollouts.c.active_name.is_not(None))
        async with self._database.engine.connect() as conn:
            return [RolloutRecord.from_row(dict(row)) for row in (await conn.execute(query)).mappings()]


def _version(row: Any) -> ModelVersion:
    return ModelVersion(
        name=row["name"], version=row["version"], kind=ModelKind(row["kind"]), spec=row["spec"],
        api_key=row["api_key"], revision=row["revision"], signature=row["signature"], metadata=row["metadata"], state=VersionState(row["state"]),
        state_reason=row["state_reason"], created_by=row["created_by"], created_at=row["created_at"],
    )


def _rollout_values(r: RolloutRecord) -> dict[str, Any]:
    return {
        "active_name": None if r.state.final else r.name, "strategy": r.strategy.value, "stable": r.stable,
        "candidate": r.candidate, "plan": r.plan.as_json(), "state": r.state.value, "step": r.step, "reason": r.reason,
        "figures": r.figures, "decisions": r.decisions, "created_by": r.created_by, "updated_at": r.updated_at,
        "finished_at": r.updated_at if r.state.final else None,
    }


async def _event(
    conn: AsyncConnection, name: str, action: str, actor: str, at: datetime,
    before: dict[str, Any] | None, after: dict[str, Any] | None,
) -> None:
    await conn.execute(insert(_events), [{"name": name, "action": action, "actor": actor, "at": at, "before": before, "after": after}])


async def _point(conn: AsyncConnection, name: str, alias: str, version: int, actor: str, at: datetime) -> int | None:
    query = select(_aliases.c.version).where(_aliases.c.name == name, _aliases.c.alias == alias)
    before = (await conn.execute(query)).scalar()
    if before == version:
        return before
    if before is None:
        await conn.execute(insert(_aliases), [{"name": name, "alias": alias, "version": version, "updated_at": at}])
    else:
        await conn.execute(
            update(_aliases).where(_aliases.c.name == name, _aliases.c.alias == alias).values(version=version, updated_at=at)
        )
    await _event(
        conn, name, "alias", actor, at,
        None if before is None else {"alias": alias, "version": f"v{before}"}, {"alias": alias, "version": f"v{version}"},
    )
    return before


async def _check_serving(conn: AsyncConnection, name: str, version: int) -> None:
    query = select(_versions.c.state).where(_versions.c.name == name, _versions.c.version == version)
    state = (await conn.execute(query)).scalar()
    if state is None:
        raise UnknownModel(version_key(name, version), [])
    if state == VersionState.RETIRED.value:
        raise RegistryConflict(f"{version_key(name, version)} is retired; register a new version instead")


async def _check_unused(conn: AsyncConnection, name: str, version: int) -> None:
    aliases = (await conn.execute(
        select(_aliases.c.alias).where(_aliases.c.name == name, _aliases.c.version == version)
    )).scalars().all()
    if aliases:
        raise RegistryConflict(
            f"{version_key(name, version)} is in use by alias {', '.join(sorted(aliases))}; point it elsewhere first"
        )
    active = (await conn.execute(
        select(_rollouts.c.id).where(
            _rollouts.c.active_name == name, (_rollouts.c.candidate == version) | (_rollouts.c.stable == version)
        )
    )).scalars().all()
    if active:
        raise RegistryConflict(f"{version_key(name, version)} is in use by rollout {active[0]}; end it first")
