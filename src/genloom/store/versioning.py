"""Numbered immutable versions per name (templates, scenarios, models): the next number is
taken in the INSERT itself, so two writers never store the same version twice."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import Table, func, insert, literal, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from genloom.store.database import Database

# Two writers may pick the same next version; the primary key refuses the second, which tries again.
_VERSION_ATTEMPTS = 8


async def add_numbered_version(
    database: Database, table: Table, values: dict[str, Any],
    then: Callable[[AsyncConnection, int], Awaitable[None]] | None = None,
) -> int:
    """Insert `values` as the next version of `values["name"]` (1 for a new name) and run `then`
    in the same transaction; returns the version number."""
    # One INSERT ... SELECT max(version) + 1: SQLite runs it under its write lock; on PostgreSQL
    # a concurrent writer may take the same number, and the primary key makes this one retry.
    columns = list(values)
    next_version = select(
        *(literal(values[c], type_=table.c[c].type) for c in columns),
        func.coalesce(func.max(table.c.version), 0) + 1,
    ).where(table.c.name == values["name"])
    statement = insert(table).from_select([*columns, "version"], next_version).returning(table.c.version)
    conflict: IntegrityError | None = None
    for _ in range(_VERSION_ATTEMPTS):
        try:
            async with database.engine.begin() as conn:
                version = (await conn.execute(statement)).scalar_one()
                if then is not None:
                    await then(conn, version)
            return version
        except IntegrityError as e:
            conflict = e
    raise RuntimeError(
        f"could not number a new version of '{values['name']}' in {table.name}: "
        f"{_VERSION_ATTEMPTS} concurrent writers took every number first; try again"
    ) from conflict
