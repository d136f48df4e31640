"""Dataset versions (numbered per name, immutable) and the record of data deletions."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, insert, select, update

from genloom.store.database import Database
from genloom.store.schema import DataDeletionRow, DatasetRow
from genloom.store.versioning import add_numbered_version

_datasets: Table = DatasetRow.__table__  # type: ignore[assignment]
_deletions: Table = DataDeletionRow.__table__  # type: ignore[assignment]

ACTIVE, SUPERSEDED = "active", "superseded"


class DatasetNotFound(LookupError):
    def __init__(self, ref: str) -> None:
        super().__init__(f"no dataset '{ref}'")
        self.ref = ref


@dataclass(frozen=True, kw_only=True)
class DatasetVersion:
    name: str
    version: int
    tenant: str | None
    sha256: str
    state: str
    rows: int
    manifest: dict[str, Any]
    blob: str | None
    train_blob: str | None
    eval_blob: str | None
    created_at: datetime
    superseded_at: datetime | None = None
    superseded_by: int | None = None
    superseded_why: str | None = None

    @property
    def ref(self) -> str:
        return f"{self.name}@v{self.version}"


class DatasetStore:
    def __init__(self, *, database: Database) -> None:
        self._database = database

    async def add(self, *, name: str, tenant: str | None, sha256: str, rows: int, manifest: dict[str, Any],
                  blob: str, train_blob: str | None, eval_blob: str | None, at: datetime) -> tuple[DatasetVersion, bool]:
        """The next version of `name`, unless its newest active version has the same content: then
        that one. Returns the version and whether it is new."""
        newest = await self.newest(name)
        if newest is not None and newest.sha256 == sha256 and newest.state == ACTIVE:
            return newest, False
        values = {"name": name, "tenant": tenant, "sha256": sha256, "state": ACTIVE, "rows": rows, "manifest": manifest,
                  "blob": blob, "train_blob": train_blob, "eval_blob": eval_blob, "created_at": at}
        version = await add_numbered_version(self._database, _datasets, values)
        return await self.get(name, version), True

    async def get(self, name: str, version: int | None = None) -> DatasetVersion:
        """One version, or the newest active one."""
        found = await self.newest(name) if version is None else await self._one(name, version)
        if found is None:
            raise DatasetNotFound(name if version is None else f"{name}@v{version}")
        return found

    async def _one(self, name: str, version: int) -> DatasetVersion | None:
        query = select(_datasets).where(_datasets.c.name == name, _datasets.c.version == version)
        async with self._database.engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        return None if row is None else DatasetVersion(**row)

    async def newest(self, name: str) -> DatasetVersion | None:
        query = (select(_datasets).where(_datasets.c.name == name, _datasets.c.state == ACTIVE)
                 .order_by(_datasets.c.version.desc()).limit(1))
        async with self._database.engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        return None if row is None else DatasetVersion(**row)

    async def list(self, *, name: str | None = None, tenant: str | None = None, active_only: bool = False) -> list[DatasetVersion]:
        query = select(_datasets)
        if name is not None:
            query = query.where(_datasets.c.name == name)
        if tenant is not None:
            query = query.where(_datasets.c.tenant == tenant)
        if active_only:
            query = query.where(_datasets.c.state == ACTIVE)
        async with self._database.engine.connect() as conn:
            rows = (await conn.execute(query.order_by(_datasets.c.name, _datasets.c.version))).mappings().all()
        return [DatasetVersion(**row) for row in rows]

    async def supersede(self, name: str, version: int, *, by: int | None, why: str, at: datetime) -> bool:
        """Mark an active version replaced (its blobs no longer named: the caller deletes them);
        False when it was not active any more (another change superseded it first)."""
        async with self._database.engine.begin() as conn:
            done = await conn.execute(update(_datasets).where(
                _datasets.c.name == name, _datasets.c.version == version, _datasets.c.state == ACTIVE).values(
                state=SUPERSEDED, superseded_at=at, superseded_by=by, superseded_why=why, blob=None, train_blob=None,
                eval_blob=None))
        return done.rowcount == 1

    async def names_blob(self, sha256: str) -> bool:
        """Whether any dataset version still holds this blob."""
        c = _datasets.c
        query = select(c.name).where((c.blob == sha256) | (c.train_blob == sha256) | (c.eval_blob == sha256)).limit(1)
        async with self._database.engine.connect() as conn:
            return (await conn.execute(query)).first() is not None

    async def record_deletion(self, *, tenant: str, user_sha256: str, removed: dict[str, Any], at: datetime) -> str:
        deletion_id = f"del_{uuid.uuid4().hex}"
        async with self._database.engine.begin() as conn:
            await conn.execute(insert(_deletions).values(id=deletion_id, tenant=tenant, user_sha256=user_sha256,
                                                         removed=removed, created_at=at))
        return deletion_id

    async def deletions(self, *, tenant: str) -> list[dict[str, Any]]:
        query = select(_deletions).where(_deletions.c.tenant == tenant).order_by(_deletions.c.created_at)
        async with self._database.engine.connect() as conn:
            return [dict(row) for row in (await conn.execute(query)).mappings()]
