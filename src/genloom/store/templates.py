"""Prompt templates and scenarios in SQL: immutable numbered versions per name, and the active
version of each scenario. The gateway validates what is stored here; this module only keeps it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from genloom.store.database import Database
from genloom.store.schema import PromptTemplateRow, ScenarioHeadRow, ScenarioRow
from genloom.store.versioning import add_numbered_version

_templates: Table = PromptTemplateRow.__table__  # type: ignore[assignment]
_scenarios: Table = ScenarioRow.__table__  # type: ignore[assignment]
_heads: Table = ScenarioHeadRow.__table__  # type: ignore[assignment]


@dataclass(frozen=True, kw_only=True)
class TemplateVersion:
    name: str
    version: int
    messages: list[dict[str, str]]
    variables: dict[str, dict[str, Any]]
    model: str | None
    parameters: dict[str, Any]
    created_at: datetime
    description: str | None = None


@dataclass(frozen=True, kw_only=True)
class ScenarioVersion:
    """`active_version` is the scenario's active version when this was read."""

    name: str
    version: int
    template: str
    template_version: int
    model: str | None
    policy: dict[str, Any]
    created_at: datetime
    active_version: int
    description: str | None = None

    @property
    def active(self) -> bool:
        return self.version == self.active_version


class TemplateNotFound(LookupError):
    def __init__(self, name: str, version: int | None = None) -> None:
        if version is None:
            super().__init__(f"no prompt template named '{name}'")
        else:
            super().__init__(f"prompt template '{name}' has no version {version}")
        self.name, self.version = name, version


class ScenarioNotFound(LookupError):
    def __init__(self, name: str, version: int | None = None) -> None:
        super().__init__(
            f"no scenario named '{name}'" if version is None else f"scenario '{name}' has no version {version}"
        )
        self.name, self.version = name, version


class TemplateStore:
    def __init__(self, *, database: Database) -> None:
        self._database = database

    async def add_template(
        self, *, name: str, messages: list[dict[str, str]], variables: dict[str, dict[str, Any]], model: str | None,
        parameters: dict[str, Any], description: str | None, at: datetime,
    ) -> TemplateVersion:
        """Store the next version of `name` (1 for a new name)."""
        values = dict(name=name, messages=messages, variables=variables, model=model, parameters=parameters,
                      description=description, created_at=at)
        version = await add_numbered_version(self._database, _templates, values)
        return TemplateVersion(version=version, **values)

    async def template(self, name: str, version: int | None = None) -> TemplateVersion:
        """One version of a template; its newest when `version` is None."""
        query = select(_templates).where(_templates.c.name == name).order_by(_templates.c.version.desc()).limit(1)
        if version is not None:
            query = query.where(_templates.c.version == version)
        async with self._database.engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        if row is None:
            raise TemplateNotFound(name, version)
        return TemplateVersion(**row)

    async def template_versions(self, name: str) -> list[TemplateVersion]:
        query = select(_templates).where(_templates.c.name == name).order_by(_templates.c.version)
        async with self._database.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        if not rows:
            raise TemplateNotFound(name)
        return [TemplateVersion(**row) for row in rows]

    async def latest_templates(self) -> list[TemplateVersion]:
        """The newest version of every template, by name."""
        newest = select(_templates.c.name, func.max(_templates.c.version).label("version")).group_by(_templates.c.name)
        newest = newest.subquery()
        query = select(_templates).join(
            newest, (newest.c.name == _templates.c.name) & (newest.c.version == _templates.c.version)
        ).order_by(_templates.c.name)
        async with self._database.engine.connect() as conn:
            return [TemplateVersion(**row) for row in (await conn.execute(query)).mappings()]

    async def add_scenario(
        self, *, name: str, template: str, template_version: int, model: str | None, policy: dict[str, Any],
        description: str | None, at: datetime,
    ) -> ScenarioVersion:
        """Store the next version of `name` and make it the active one, in one transaction."""
        values = dict(name=name, template=template, template_version=template_version, model=model, policy=policy,
                      description=description, created_at=at)

        async def activate(conn: AsyncConnection, version: int) -> None:
            await _set_head(conn, name, version, at)

        version = await add_numbered_version(self._database, _scenarios, values, then=activate)
        return ScenarioVersion(version=version, active_version=version, **values)

    async def scenario(self, name: str, version: int | None = None) -> ScenarioVersion:
        """One version of a scenario; its active one when `version` is None."""
        query = _scenario_query().where(_scenarios.c.name == name)
        query = query.where(_scenarios.c.version == (_heads.c.active_version if version is None else version))
        async with self._database.engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        if row is None:
            raise ScenarioNotFound(name, version)
        return ScenarioVersion(**row)

    async def scenario_versions(self, name: str) -> list[ScenarioVersion]:
        query = _scenario_query().where(_scenarios.c.name == name).order_by(_scenarios.c.version)
        async with self._database.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        if not rows:
            raise ScenarioNotFound(name)
        return [ScenarioVersion(**row) for row in rows]

    async def active_scenarios(self) -> list[ScenarioVersion]:
        """The active version of every scenario, by name."""
        query = _scenario_query().where(_scenarios.c.version == _heads.c.active_version).order_by(_scenarios.c.name)
        async with self._database.engine.connect() as conn:
            return [ScenarioVersion(**row) for row in (await conn.execute(query)).mappings()]

    async def activate_scenario(self, name: str, version: int, *, at: datetime) -> ScenarioVersion:
        async with self._database.engine.begin() as conn:
            exists = select(_scenarios.c.version).where(_scenarios.c.name == name, _scenarios.c.version == version)
            if (await conn.execute(exists)).first() is None:
                raise ScenarioNotFound(name, version)
            await _set_head(conn, name, version, at)
        return await self.scenario(name, version)


def _scenario_query():
    return select(_scenarios, _heads.c.active_version).join(_heads, _heads.c.name == _scenarios.c.name)


async def _set_head(conn: AsyncConnection, name: str, version: int, at: datetime) -> None:
    done = await conn.execute(update(_heads).where(_heads.c.name == name).values(active_version=version, updated_at=at))
    if done.rowcount == 0:
        # A concurrent first version of the same name collides here too and retries as version 2.
        await conn.execute(insert(_heads), [{"name": name, "active_version": version, "updated_at": at}])
