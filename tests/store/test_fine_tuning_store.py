"""Fine-tuning jobs' leases on SQLite and PostgreSQL: one trainer claims a job, a lease that runs
out is taken over, a renewed one is not, and only the lease holder finishes the job."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from genloom.store import Database
from genloom.store.fine_tuning import CANCELLED, QUEUED, RUNNING, SUCCEEDED, FineTuningJob, FineTuningJobConflict, FineTuningStore

T0 = datetime(2026, 12, 7, 12, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request, tmp_path: Path) -> AsyncIterator[FineTuningStore]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'g.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    db = Database(url=url)
    await db.migrate()
    yield FineTuningStore(database=db)
    await db.dispose()


def job(i: int, base: str = "tiny@v1") -> FineTuningJob:
    return FineTuningJob(id=f"ftjob-{i}", tenant="t1", model="tiny", base_version=base, training_file="file-x",
                         validation_file=None, training_blob="a" * 64, validation_blob=None, suffix=None,
                         hyperparameters={"n_epochs": 1}, lora={"r": 8}, seed=1, status=QUEUED,
                         created_at=T0 + timedelta(seconds=i))


async def test_the_oldest_job_on_a_held_base_is_claimed_once(store):
    for i, base in ((1, "other@v1"), (2, "tiny@v1"), (3, "tiny@v1")):
        await store.create(job(i, base))
    first = await store.claim(owner="a", lease_s=10, now=T0, models={"tiny@v1"})
    second = await store.claim(owner="b", lease_s=10, now=T0, models={"tiny@v1"})
    assert (first.id, first.status, first.lease_owner, first.attempts) == ("ftjob-2", RUNNING, "a", 1)
    assert second.id == "ftjob-3"
    assert await store.claim(owner="c", lease_s=10, now=T0, models={"tiny@v1"}) is None
    assert await store.claim(owner="c", lease_s=10, now=T0, models=set()) is None


async def test_an_expired_lease_is_taken_over_and_the_old_holder_can_no_longer_finish(store):
    await store.create(job(1))
    await store.claim(owner="a", lease_s=10, now=T0, models={"tiny@v1"})
    assert await store.renew("ftjob-1", owner="a", lease_s=10, now=T0 + timedelta(seconds=5))
    assert await store.claim(owner="b", lease_s=10, now=T0 + timedelta(seconds=12), models={"tiny@v1"}) is None  # renewed
    taken = await store.claim(owner="b", lease_s=10, now=T0 + timedelta(seconds=16), models={"tiny@v1"})
    assert (taken.lease_owner, taken.attempts) == ("b", 2)
    assert not await store.renew("ftjob-1", owner="a", lease_s=10, now=T0 + timedelta(seconds=17))
    assert not await store.finish("ftjob-1", owner="a", status=SUCCEEDED, now=T0)
    assert await store.finish("ftjob-1", owner="b", status=SUCCEEDED, now=T0, fine_tuned_model="ft:tiny:x:1")
    assert (await store.get("ftjob-1", tenant="t1")).status == SUCCEEDED


async def test_cancel_ends_a_queued_job_asks_a_running_one_and_refuses_an_ended_one(store):
    await store.create(job(1))
    await store.create(job(2))
    await store.claim(owner="a", lease_s=10, now=T0, models={"tiny@v1"})  # takes ftjob-1
    running = await store.cancel("ftjob-1", tenant="t1", now=T0)
    assert running.status == RUNNING and running.cancel_requested and await store.cancel_requested("ftjob-1")
    assert (await store.cancel("ftjob-2", tenant="t1", now=T0)).status == CANCELLED
    with pytest.raises(FineTuningJobConflict):
        await store.cancel("ftjob-2", tenant="t1", now=T0)
    assert await store.active_count("t1") == 1
