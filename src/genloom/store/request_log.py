"""The request log: record() on the request path only queues; a background task writes in batches."""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress
from dataclasses import fields
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, update

from genloom.store.database import Database
from genloom.store.records import RequestEntry, RequestStatus
from genloom.store.schema import RequestRow

log = logging.getLogger("genloom.store")


class RequestLog:
    """Writes queued entries in one transaction per batch: a batch is whatever arrived within
    flush_interval_s of its first entry, at most max_batch entries."""

    def __init__(self, *, database: Database, flush_interval_s: float = 0.05, max_batch: int = 256) -> None:
        if flush_interval_s < 0:
            raise ValueError(f"flush_interval_s must be >= 0, got {flush_interval_s}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self._database = database
        self._flush_interval_s = flush_interval_s
        self._max_batch = max_batch
        self._queue: asyncio.Queue[RequestEntry] = asyncio.Queue()
        self._recorded = 0  # entries accepted by record()
        self._settled = 0  # entries whose write has finished, written or failed
        self._progress = asyncio.Condition()
        self._writer: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    def record(self, entry: RequestEntry) -> None:
        """Queue an entry for writing; never waits. Call it on the event loop thread."""
        if self._closed:
            log.warning("the request log is closed; request %s is not recorded", entry.id)
            return
        self._queue.put_nowait(entry)
        self._recorded += 1

    async def start(self) -> None:
        if self._writer is not None:
            raise RuntimeError("the request log is already started")
        self._loop = asyncio.get_running_loop()
        self._writer = asyncio.create_task(self._write_forever(), name="genloom-request-log")

    async def flush(self) -> None:
        """Wait until everything recorded so far is written (or has failed and been logged)."""
        if self._loop is None:
            raise RuntimeError("the request log is not started: call start() first")
        if asyncio.get_running_loop() is not self._loop:
            # Tests await this from their own loop while the server runs in another thread.
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self.flush(), self._loop))
            return
        target = self._recorded
        async with self._progress:
            await self._progress.wait_for(lambda: self._settled >= target)

    async def close(self) -> None:
        """Write everything still queued, then stop the writer. Later record() calls are dropped."""
        if self._closed:
            return
        self._closed = True
        if self._writer is None:
            await self.start()  # entries recorded before start() are still written
        await self.flush()
        assert self._writer is not None
        self._writer.cancel()
        with suppress(asyncio.CancelledError):
            await self._writer

    async def get(self, request_id: str) -> RequestEntry | None:
        """The written entry with this id; call flush() first to see entries recorded just now."""
        async with self._database.session() as session:
            row = await session.get(RequestRow, request_id)
        return None if row is None else _entry(row)

    async def owned(self, request_id: str, *, tenant: str) -> RequestEntry | None:
        """The entry with this id if the tenant made the request (None otherwise, as if there were none)."""
        entry = await self.get(request_id)
        return entry if entry is not None and entry.tenant == tenant else None

    async def find(self, *, tenant: str | None = None, model: str | None = None, since: datetime | None = None,
                   status: RequestStatus | None = RequestStatus.COMPLETED, with_content: bool = True,
                   limit: int = 10_000) -> list[RequestEntry]:
        """Written entries, oldest first: a dataset's source."""
        query = select(RequestRow)
        if tenant is not None:
            query = query.where(RequestRow.tenant == tenant)
        if model is not None:  # a model's name, or one version of it (name@v3)
            query = query.where((RequestRow.model == model) | RequestRow.model.startswith(f"{model}@", autoescape=True))
        if since is not None:
            query = query.where(RequestRow.created_at >= since)
        if status is not None:
            query = query.where(RequestRow.status == RequestStatus(status).value)
        if with_content:
            query = query.where(RequestRow.prompt.is_not(None), RequestRow.output.is_not(None))
        query = query.order_by(RequestRow.created_at, RequestRow.id).limit(limit)
        async with self._database.session() as session:
            rows = (await session.scalars(query)).all()
        return [_entry(row) for row in rows]

    async def drop_content(self, *, before: datetime) -> int:
        """Forget the prompt and answer of every request made before `before` (the entry, its
        figures and its links stay); how many were dropped."""
        async with self._database.session() as session, session.begin():
            done = await session.execute(
                update(RequestRow).where(RequestRow.created_at < before, RequestRow.prompt.is_not(None))
                .values(prompt=None, output=None))
        return int(done.rowcount or 0)

    async def delete_user(self, *, tenant: str, user: str) -> list[str]:
        """Delete every request of the tenant's end user; their ids."""
        async with self._database.session() as session, session.begin():
            ids = list((await session.scalars(
                select(RequestRow.id).where(RequestRow.tenant == tenant, RequestRow.user == user))).all())
            if ids:
                await session.execute(delete(RequestRow).where(RequestRow.tenant == tenant, RequestRow.user == user))
        return ids

    async def newest(self, *, tenant: str, model: str | None = None, limit: int = 50) -> list[RequestEntry]:
        """A tenant's newest answered requests that still have their content, newest first
        (everything recorded so far included)."""
        if self._loop is not None:
            await self.flush()
        query = select(RequestRow).where(RequestRow.tenant == tenant, RequestRow.status == RequestStatus.COMPLETED.value,
                                         RequestRow.prompt.is_not(None), RequestRow.output.is_not(None))
        if model is not None:
            query = query.where((RequestRow.model == model) | RequestRow.model.startswith(f"{model}@", autoescape=True))
        query = query.order_by(RequestRow.created_at.desc(), RequestRow.id.desc()).limit(limit)
        async with self._database.session() as session:
            rows = (await session.scalars(query)).all()
        return [_entry(row) for row in rows]

    async def recent(self, limit: int = 50) -> list[RequestEntry]:
        """The newest written entries by created_at, newest first."""
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        query = select(RequestRow).order_by(RequestRow.created_at.desc(), RequestRow.id.desc()).limit(limit)
        async with self._database.session() as session:
            rows = (await session.scalars(query)).all()
        return [_entry(row) for row in rows]

    async def _write_forever(self) -> None:
        while True:
            batch = [await self._queue.get()]
            if self._queue.qsize() < self._max_batch - 1:
                await asyncio.sleep(self._flush_interval_s)  # let a batch gather
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._write(batch)
            async with self._progress:
                self._settled += len(batch)
                self._progress.notify_all()

    async def _write(self, batch: list[RequestEntry]) -> None:
        try:
            async with self._database.session() as session, session.begin():
                await session.execute(insert(RequestRow), [_row(entry) for entry in batch])
        except Exception:
            if len(batch) == 1:
                log.exception("could not record request %s", batch[0].id)
                return
            # One bad entry (say, a duplicate id) must not lose the rest of its batch.
            log.warning("writing %d requests failed; retrying them one at a time", len(batch), exc_info=True)
            for entry in batch:
                await self._write([entry])


def _row(entry: RequestEntry) -> dict[str, Any]:
    values = {f.name: getattr(entry, f.name) for f in fields(entry)}
    values["status"] = RequestStatus(entry.status).value
    return values


def _entry(row: RequestRow) -> RequestEntry:
    values = {f.name: getattr(row, f.name) for f in fields(RequestEntry)}
    values["status"] = RequestStatus(row.status)
    return RequestEntry(**values)
