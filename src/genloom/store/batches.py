"""Batches of the Batch API, per tenant. A batch row lists its input's lines: each either the
job that runs it or the error that kept it from running. Its progress is its jobs' states."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Table, insert, select, update

from genloom.store.database import Database
from genloom.store.schema import BatchRow

_batches: Table = BatchRow.__table__  # type: ignore[assignment]


class BatchNotFound(LookupError):
    def __init__(self, batch_id: str) -> None:
        super().__init__(f"no batch with id '{batch_id}'")
        self.batch_id = batch_id


@dataclass(frozen=True)
class BatchRecord:
    id: str
    tenant: str
    endpoint: str
    input_file_id: str
    completion_window: str
    status: str  # in_progress, cancelling, completed, cancelled, failed
    lines: list[dict[str, Any]]  # {"line", "custom_id", "job_id"} or {"line", "custom_id", "error": {code, message}}
    output_file_id: str | None
    error_file_id: str | None
    metadata: dict[str, Any]
    created_at: datetime
    cancelling_at: datetime | None = None
    finished_at: datetime | None = None


def _record(row: Any) -> BatchRecord:
    fields = dict(row)
    fields["metadata"] = fields.pop("meta", None) or fields.pop("metadata", None) or {}
    return BatchRecord(**fields)


class BatchStore:
    def __init__(self, *, database: Database) -> None:
        self._database = database

    async def add(self, batch: BatchRecord) -> None:
        values = batch.__dict__ | {"metadata": batch.metadata}
        async with self._database.engine.begin() as conn:
            await conn.execute(insert(_batches).values(**values))

    async def get(self, batch_id: str, *, tenant: str) -> BatchRecord:
        query = select(_batches).where(_batches.c.id == batch_id, _batches.c.tenant == tenant)
        async with self._database.engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        if row is None:
            raise BatchNotFound(batch_id)
        return _record(row)

    async def list(self, *, tenant: str, limit: int, after: str | None) -> list[BatchRecord]:
        query = select(_batches).where(_batches.c.tenant == tenant)
        if after is not None:
            marker = await self.get(after, tenant=tenant)
            query = query.where(
                (_batches.c.created_at < marker.created_at)
                | ((_batches.c.created_at == marker.created_at) & (_batches.c.id < marker.id))
            )
        query = query.order_by(_batches.c.created_at.desc(), _batches.c.id.desc()).limit(limit)
        async with self._database.engine.connect() as conn:
            return [_record(row) for row in (await conn.execute(query)).mappings()]

    async def move(self, batch: BatchRecord, *, expect: str, **changes: Any) -> BatchRecord | None:
        """Change a batch that is still in state `expect`; None when another process moved it first."""
        async with self._database.engine.begin() as conn:
            done = await conn.execute(
                update(_batches).where(_batches.c.id == batch.id, _batches.c.status == expect).values(**changes)
            )
        return replace(batch, **changes) if done.rowcount else None
