"""The request log against real SQLite files, migrated by the bundled Alembic revisions."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, inspect, select, text

from genloom.store import Database, RequestEntry, RequestLog, RequestStatus
from genloom.store.schema import Base, RequestRow

T0 = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def entry(id: str, created_at: datetime = T0, **changes) -> RequestEntry:
    values = dict(
        id=id,
        endpoint="/v1/chat/completions",
        model="tiny",
        params={"temperature": 0.7, "top_p": 0.9, "stop": ["\n"], "n": 2, "seed": None},
        prompt=[{"role": "user", "content": "Hello, ünïcode ✓"}],
        output=["Hi there", "Hello"],
        prompt_tokens=12,
        completion_tokens=7,
        latency_ms=123.456,
        ttft_ms=9.5,
        status=RequestStatus.COMPLETED,
        error=None,
        created_at=created_at,
        finished_at=created_at + timedelta(milliseconds=123),
    )
    return RequestEntry(**values | changes)


@pytest.fixture(params=["sqlite", "postgresql"])
async def database(request, tmp_path: Path) -> AsyncIterator[Database]:
    url = sqlite_url(tmp_path / "genloom.db") if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    db = Database(url=url)
    await db.migrate()
    yield db
    await db.dispose()


@pytest.fixture
async def request_log(database: Database) -> AsyncIterator[RequestLog]:
    request_log = RequestLog(database=database, flush_interval_s=0.01)
    await request_log.start()
    yield request_log
    await request_log.close()


async def count_rows(database: Database) -> int:
    async with database.session() as session:
        return await session.scalar(select(func.count()).select_from(RequestRow))


async def test_migrate_creates_the_table_in_a_new_directory_and_can_run_again(tmp_path: Path):
    db = Database(url=sqlite_url(tmp_path / "not" / "yet" / "genloom.db"))
    await db.migrate()
    await db.migrate()
    async with db.engine.connect() as conn:
        tables = await conn.run_sync(lambda c: inspect(c).get_table_names())
        version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar_one()
    await db.dispose()
    assert {"requests", "jobs", "job_events", "webhook_deliveries", "tenants", "prompt_templates", "alembic_version"} <= set(tables)
    assert version == "0013"


async def test_migrations_create_exactly_what_the_models_declare(database: Database):
    async with database.engine.connect() as conn:
        diff = await conn.run_sync(lambda c: compare_metadata(MigrationContext.configure(c), Base.metadata))
    assert diff == []


async def test_sqlite_connections_use_wal(database: Database):
    if database.url.get_backend_name() != "sqlite":
        pytest.skip("a SQLite setting")
    async with database.engine.connect() as conn:
        assert (await conn.execute(text("PRAGMA journal_mode"))).scalar_one() == "wal"
        assert (await conn.execute(text("PRAGMA synchronous"))).scalar_one() == 1  # NORMAL


async def test_recorded_entry_round_trips_every_field(request_log: RequestLog):
    chat = entry("chatcmpl-1")
    # A completions prompt is a plain string, offsets are stored as UTC, and optional fields may be empty.
    plain = entry(
        "cmpl-2",
        endpoint="/v1/completions",
        prompt="Once upon a time",
        output=None,
        prompt_tokens=None,
        completion_tokens=None,
        latency_ms=None,
        ttft_ms=None,
        status=RequestStatus.REJECTED,
        error="the queue is full",
        created_at=datetime(2025, 1, 2, 5, 0, tzinfo=timezone(timedelta(hours=2))),
        finished_at=None,
    )
    request_log.record(chat)
    request_log.record(plain)
    await request_log.flush()

    assert await request_log.get("chatcmpl-1") == chat
    got = await request_log.get("cmpl-2")
    assert got == plain
    assert got.created_at.tzinfo is UTC and got.created_at.hour == 3
    assert got.output is None and isinstance(got.status, RequestStatus)
    assert await request_log.get("missing") is None


async def test_close_writes_entries_recorded_just_before_it(tmp_path: Path):
    url = sqlite_url(tmp_path / "genloom.db")
    db = Database(url=url)
    await db.migrate()
    request_log = RequestLog(database=db)
    await request_log.start()
    for i in range(500):
        request_log.record(entry(f"req-{i}", created_at=T0 + timedelta(seconds=i)))
    await request_log.close()
    await db.dispose()

    reopened = Database(url=url)
    assert await count_rows(reopened) == 500
    await reopened.dispose()


async def test_recent_returns_newest_first(request_log: RequestLog):
    for i in (2, 0, 3, 1):
        request_log.record(entry(f"req-{i}", created_at=T0 + timedelta(minutes=i)))
    await request_log.flush()

    assert [e.id for e in await request_log.recent()] == ["req-3", "req-2", "req-1", "req-0"]
    assert [e.id for e in await request_log.recent(limit=2)] == ["req-3", "req-2"]


async def test_failed_write_is_logged_and_the_rest_still_written(
    request_log: RequestLog, database: Database, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.WARNING, logger="genloom.store")
    original = entry("dup")
    request_log.record(original)
    await request_log.flush()

    request_log.record(entry("before"))
    request_log.record(entry("dup", model="other"))  # duplicate primary key: this insert fails
    request_log.record(entry("after"))
    await request_log.flush()
    request_log.record(entry("later"))
    await request_log.flush()

    assert any(r.levelno == logging.ERROR and "dup" in r.getMessage() for r in caplog.records)
    assert await request_log.get("dup") == original
    for id in ("before", "after", "later"):
        assert await request_log.get(id) is not None
    assert await count_rows(database) == 4


def test_entry_refuses_naive_datetimes():
    with pytest.raises(ValueError, match="timezone-aware"):
        entry("naive", created_at=datetime(2025, 1, 1))
