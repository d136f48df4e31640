"""The rolling usage series on SQLite and PostgreSQL: requests of two processes in the same
minutes are summed, buckets follow the window's step, percentiles come from the merged
histograms, a tenant filter keeps that tenant's requests and the queue's depth, a flush replaces
a minute's row rather than adding it twice, and old rows are pruned."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from genloom.store import Database
from genloom.store.usage import BUCKETS_MS, UsageSeries, percentile

NOW = 1_800_000_000.0  # a minute boundary plus nothing: 1_800_000_000 % 60 == 0


class Clock:
    def __init__(self) -> None:
        self.now = NOW + 30

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sqlite", "postgresql"])
async def database(request, tmp_path: Path) -> AsyncIterator[Database]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'g.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    db = Database(url=url)
    await db.migrate()
    yield db
    await db.dispose()


async def test_two_processes_are_summed_per_bucket_with_percentiles_and_tenant_filters(database):
    clock = Clock()
    a = UsageSeries(database=database, source="host-a:1", clock=clock)
    b = UsageSeries(database=database, source="host-b:2", clock=clock)
    for i in range(90):  # this minute: 90 fast requests on a, tenant t1
        a.request(model="tiny", tenant="t1", ok=True, latency_ms=20, ttft_ms=8, prompt_tokens=5, completion_tokens=10)
    for i in range(10):  # and 10 slow ones on b, tenant t2, two of them failed, one from the cache
        b.request(model="tiny", tenant="t2", ok=i >= 2, latency_ms=2000, completion_tokens=1, cached=i == 9)
    b.queue_depth(model="tiny", depth=7)
    b.queue_depth(model="tiny", depth=3)
    a.request(model="big", tenant="t1", ok=True, latency_ms=100, at=NOW - 120)  # two minutes ago
    await a.flush()
    await a.flush()  # nothing changed: the rows stay as they are, one per key
    await b.flush()
    a.request(model="tiny", tenant="t1", ok=True, latency_ms=20)  # one more, then the whole minute again
    await a.flush()

    usage = await a.query(window_s=3600, step_s=60)
    assert len(usage["data"]) == 60 and usage["models"] == ["big", "tiny"] and usage["tenants"] == ["t1", "t2"]
    last, older = usage["data"][-1], usage["data"][-3]
    assert last["start"] == NOW and older["start"] == NOW - 120
    assert (last["requests"], last["errors"], last["cache_hits"], last["queue_depth"]) == (101, 2, 1, 7)
    assert (last["prompt_tokens"], last["completion_tokens"]) == (450, 910)
    assert last["latency_ms"]["p50"] <= 25 and 1000 < last["latency_ms"]["p99"] <= 2500  # 91 fast, 10 slow
    assert last["ttft_ms"]["p50"] <= 10 and older["requests"] == 1 and older["latency_ms"]["p50"] <= 100

    t2 = await a.query(window_s=3600, step_s=60, tenant="t2")
    assert (t2["data"][-1]["requests"], t2["data"][-1]["queue_depth"]) == (10, 7)
    assert (await a.query(window_s=3600, step_s=60, model="big"))["data"][-1]["requests"] == 0
    coarse = await a.query(window_s=86400, step_s=1440)
    assert sum(x["requests"] for x in coarse["data"]) == 102 and len(coarse["data"]) == 60

    async with database.engine.connect() as conn:
        from sqlalchemy import func, select

        from genloom.store.schema import UsageMinuteRow
        stored = (await conn.execute(select(func.count()).select_from(UsageMinuteRow))).scalar()
    assert stored == 4  # a: tiny/t1 now, big/t1 earlier; b: tiny/t2 and the queue's row (tiny/'')

    clock.now = NOW + 3 * 86400  # three days on: everything is older than the two days kept
    assert await a.prune() == 4
    assert sum(x["requests"] for x in (await a.query(window_s=86400 * 7, step_s=86400))["data"]) == 0


def test_percentiles_of_a_histogram():
    counts = [0] * (len(BUCKETS_MS) + 1)
    assert percentile(counts, 50) is None
    counts[BUCKETS_MS.index(100)] = 100  # everything between 50 and 100 ms
    assert 50 < percentile(counts, 50) <= 100 and percentile(counts, 99) <= 100
    counts[-1] = 1  # one beyond the last bound
    assert percentile(counts, 100) > BUCKETS_MS[-1]


async def test_a_flush_of_many_keys_goes_in_chunks_and_a_failed_one_is_written_later(database):
    """After an outage, thousands of changed minutes are written in statements of a few hundred
    (one statement would pass SQLite's expression depth and PostgreSQL's bind limit)."""
    clock = Clock()
    series = UsageSeries(database=database, source="host:1", clock=clock)
    for i in range(1500):
        series.request(model=f"m{i % 50}", tenant=f"t{i // 50}", ok=True, latency_ms=10)
    await series.flush()
    usage = await series.query(window_s=3600, step_s=60)
    assert usage["data"][-1]["requests"] == 1500 and len(usage["models"]) == 50 and len(usage["tenants"]) == 30
    one = await series.query(window_s=3600, step_s=60, model="m7", tenant="t3")
    assert one["data"][-1]["requests"] == 1 and len(one["models"]) == 50  # one of each; the lists are unfiltered
    assert (await series.query(window_s=3600, step_s=60, model="m7", tenant="nobody"))["data"][-1]["requests"] == 0
    assert (await series.query(window_s=3600, step_s=60, model="m7", tenant="t0"))["data"][-1]["requests"] == 1
    from sqlalchemy import text

    async with database.engine.begin() as conn:  # the table away for a moment: the flush fails and keeps its figures
        await conn.execute(text("ALTER TABLE usage_minutes RENAME TO usage_away"))
    series.request(model="m0", tenant="t0", ok=False, latency_ms=10)
    with pytest.raises(Exception):
        await series.flush()
    async with database.engine.begin() as conn:
        await conn.execute(text("ALTER TABLE usage_away RENAME TO usage_minutes"))
    last = (await series.query(window_s=3600, step_s=60))["data"][-1]
    assert (last["requests"], last["errors"]) == (1501, 1)  # written at the next flush
