"""The real PostgreSQL and Redis servers the scale-out tests run against (127.0.0.1:5432 and
:6379 by default; GENLOOM_TEST_POSTGRES and GENLOOM_TEST_REDIS point elsewhere).

Each test gets its own database, copied from a template migrated once per session, and its
own Redis key prefix, so tests never see each other's data and leave the servers as they were."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import asyncpg
import redis

POSTGRES = os.environ.get("GENLOOM_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("GENLOOM_TEST_REDIS", "redis://127.0.0.1:6379/0")
# A test's own Redis clients give up, as the server's do, rather than wait forever for an answer.
REDIS_TIMEOUTS = {"socket_timeout": 10.0, "socket_connect_timeout": 5.0}


def _in_own_loop(coroutine_function) -> None:
    """Run on a thread of its own: fixtures may be set up while a test's event loop runs."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coroutine_function()).result()


def _admin(statement: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(POSTGRES)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    _in_own_loop(run)


def sqlalchemy_url(database: str) -> str:
    """The async SQLAlchemy URL of `database` on the test server."""
    base = POSTGRES.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    return f"{base}/{database}"


@contextmanager
def postgres_template() -> Iterator[str]:
    """A database migrated to the newest revision, to copy; dropped at the end."""
    from genloom.store import Database

    name = f"genloom_tpl_{uuid.uuid4().hex[:12]}"
    _admin(f'CREATE DATABASE "{name}"')
    try:
        database = Database(url=sqlalchemy_url(name))

        async def migrate() -> None:
            await database.migrate()
            await database.dispose()

        _in_own_loop(migrate)
        yield name
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def postgres_database(template: str) -> Iterator[str]:
    """A fresh copy of `template`; its SQLAlchemy URL."""
    name = f"genloom_t_{uuid.uuid4().hex[:12]}"
    for attempt in range(10):
        try:
            _admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
            break
        except asyncpg.ObjectInUseError:  # a copy is refused while anything is connected to the template
            if attempt == 9:
                raise
            time.sleep(0.3)
    try:
        yield sqlalchemy_url(name)
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def redis_prefix() -> Iterator[str]:
    """A key prefix no other test uses; its keys are deleted at the end."""
    prefix = f"gltest:{uuid.uuid4().hex[:12]}:"
    try:
        yield prefix
    finally:
        client = redis.Redis.from_url(REDIS, **REDIS_TIMEOUTS)
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
        client.close()
