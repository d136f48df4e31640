"""The guards' audit log: every flag, block and redaction, newest first when read. Entries are
written in small batches off the request path (a request never waits for the insert); `flush`
writes what is pending, so a reader sees everything recorded before it asked."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, insert, select

from genloom.store.database import Database
from genloom.store.schema import GuardAuditRow

_audit: Table = GuardAuditRow.__table__  # type: ignore[assignment]
log = logging.getLogger(__name__)

_FLUSH_AFTER_S = 0.05
_MAX_PENDING = 10_000  # beyond this, while the database is down, the oldest entries are dropped (and logged)


@dataclass(frozen=True, kw_only=True)
class AuditEntry:
    created_at: datetime
    request_id: str
    tenant: str
    stage: str  # input | output
    scanner: str
    category: str
    score: float
    action: str  # flag | redact | block
    spans: list[dict[str, Any]]  # {start, end, label}: where in the scanned text
    content: str | None = None
    id: int | None = None


class GuardAudit:
    def __init__(self, *, database: Database) -> None:
        self._database = database
        self._pending: list[AuditEntry] = []
        self._flushing: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def record(self, entries: list[AuditEntry]) -> None:
        """Queue entries for the next batch insert (from a running event loop)."""
        self._pending.extend(entries)
        if len(self._pending) > _MAX_PENDING:
            dropped = len(self._pending) - _MAX_PENDING
            del self._pending[:dropped]
            log.error("guard audit: %d entries dropped, the store has not taken any for a while", dropped)
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.get_running_loop().create_task(self._flush_soon())

    async def flush(self) -> None:
        async with self._lock:
            batch, self._pending = self._pending, []
            if not batch:
                return
            try:
                async with self._database.engine.begin() as conn:
                    await conn.execute(insert(_audit), [_row(entry) for entry in batch])
            except Exception:
                self._pending[:0] = batch  # kept for the next try
                raise

    async def list(
        self, *, tenant: str | None = None, scanner: str | None = None, action: str | None = None,
        after: int | None = None, limit: int = 100,
    ) -> list[AuditEntry]:
        """Newest first; `after` is an entry id (the page goes on below it)."""
        await self.flush()
        query = select(_audit).order_by(_audit.c.id.desc()).limit(limit)
        for column, value in ((_audit.c.tenant, tenant), (_audit.c.scanner, scanner), (_audit.c.action, action)):
            if value is not None:
                query = query.where(column == value)
        if after is not None:
            query = query.where(_audit.c.id < after)
        async with self._database.engine.connect() as conn:
            return [AuditEntry(**row) for row in (await conn.execute(query)).mappings()]

    async def close(self) -> None:
        if self._flushing is not None:
            await asyncio.gather(self._flushing, return_exceptions=True)
        try:
            await self.flush()
        except Exception:
            log.exception("guard audit: %d entries could not be written at shutdown", len(self._pending))

    async def _flush_soon(self) -> None:
        await asyncio.sleep(_FLUSH_AFTER_S)
        try:
            await self.flush()
        except Exception:
            log.warning("guard audit: writing %d entries failed; retried with the next ones", len(self._pending), exc_info=True)


def _row(entry: AuditEntry) -> dict[str, Any]:
    row = dict(entry.__dict__)
    row.pop("id")
    return row
