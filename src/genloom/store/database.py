"""The database: one async engine per process, its schema kept current by the bundled Alembic migrations."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Alembic keeps its context in module globals: one migration at a time per process. Across
# processes (API replicas starting together on PostgreSQL) env.py takes an advisory lock.
_MIGRATING = threading.Lock()


class Database:
    """An SQLAlchemy async URL, e.g. `sqlite+aiosqlite:////abs/path/genloom.db`, and its engine."""

    def __init__(self, *, url: str, echo: bool = False) -> None:
        self.url = make_url(url)
        self._sqlite_file: Path | None = None
        if self.url.get_backend_name() == "sqlite":
            if self.url.database in (None, "", ":memory:"):
                # Migrations run on their own connection, which would get a separate empty database.
                raise ValueError(f"in-memory SQLite is not supported ({url}); give a file path")
            self._sqlite_file = Path(self.url.database)
        # A server's connections can be cut (a restart, a failover, pg_terminate_backend): each is
        # checked as it leaves the pool, so a dead one is replaced instead of failing a request.
        extra = {} if self.url.get_backend_name() == "sqlite" else {"pool_pre_ping": True}
        self.engine: AsyncEngine = create_async_engine(self.url, echo=echo, **extra)
        # A blocking engine on the same SQLite file, for batches written in a thread (GroupCommit).
        self.blocking_engine: Engine | None = None
        if self._sqlite_file is not None:
            event.listen(self.engine.sync_engine, "connect", _use_wal)
            self.blocking_engine = create_engine(
                self.url.set(drivername="sqlite"), echo=echo, connect_args={"check_same_thread": False}
            )
            event.listen(self.blocking_engine, "connect", _use_wal)
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    async def migrate(self) -> None:
        """Bring the schema up to the newest revision; safe to run on every start."""
        if self._sqlite_file is not None:
            self._sqlite_file.parent.mkdir(parents=True, exist_ok=True)
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.set_main_option("path_separator", "os")
        # The config is an INI parser: a literal '%' (in an escaped password) must be doubled.
        url = self.url.render_as_string(hide_password=False).replace("%", "%%")
        config.set_main_option("sqlalchemy.url", url)
        # env.py runs its own event loop (asyncio.run), which cannot start inside ours.
        await asyncio.to_thread(_upgrade, config)

    def session(self) -> AsyncSession:
        return self._sessions()

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self.blocking_engine is not None:
            self.blocking_engine.dispose()


def _upgrade(config: Config) -> None:
    with _MIGRATING:
        command.upgrade(config, "head")


def _use_wal(dbapi_connection: Any, connection_record: Any) -> None:
    # WAL lets readers run while the request log writes; NORMAL is durable enough under WAL.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
