"""Group commit: write operations queued by many tasks run in one transaction per batch.

An operation is a plain function over a blocking SQLAlchemy `Connection`. On SQLite the batch
runs in a thread on a blocking engine (one hop off the event loop per batch, instead of several
per statement through the async driver); elsewhere it runs through the async engine's
`run_sync`. Either way there is one writer, so SQLite never makes writers sleep on its lock."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Connection

from genloom.store.database import Database

T = TypeVar("T")
Operation = Callable[[Connection], Any]


class GroupCommit:
    """One commit for whatever arrived while the previous batch was being written. If a batch
    fails, its operations run again one transaction each, so a bad operation fails alone."""

    def __init__(self, *, database: Database, max_batch: int = 256) -> None:
        self._database = database
        self._max_batch = max_batch
        self._pending: list[tuple[Operation, asyncio.Future[Any]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def run(self, op: Callable[[Connection], T]) -> T:
        """Run `op` in the next batch's transaction; returns once that transaction has committed."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((op, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_pending(), name="genloom-group-commit")
        return await future

    async def _write_pending(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
            try:
                results = await self._transaction([op for op, _ in batch])
            except Exception:
                for op, future in batch:
                    try:
                        [result] = await self._transaction([op])
                    except Exception as e:
                        _settle(future, error=e)
                    else:
                        _settle(future, result=result)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                _settle(future, result=result)

    async def _transaction(self, ops: list[Operation]) -> list[Any]:
        engine = self._database.blocking_engine
        if engine is not None:

            def write() -> list[Any]:
                with engine.begin() as conn:
                    return [op(conn) for op in ops]

            return await asyncio.to_thread(write)
        async with self._database.engine.begin() as conn:
            return await conn.run_sync(lambda sync_conn: [op(sync_conn) for op in ops])


def _settle(future: asyncio.Future[Any], *, result: Any = None, error: BaseException | None = None) -> None:
    if future.done():  # its caller was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
