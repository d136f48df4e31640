"""The JobStore contract, run against SQLite files and real PostgreSQL databases, both migrated
by the bundled Alembic revisions: the same statements must behave the same on both."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from genloom.jobs.records import IdempotencyConflict, JobNotFound, JobRecord, JobState, JobStateConflict, WebhookAttempt, WebhookState
from genloom.store.jobs import SqlJobStore
from genloom.store import Database


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture()
async def store(database_url, clock) -> AsyncIterator[SqlJobStore]:
    database = Database(url=database_url)
    await database.migrate()
    yield SqlJobStore(database=database, clock=clock)
    await database.dispose()


def job(clock: Clock, id: str = "job_1", **changes) -> JobRecord:
    values = dict(
        id=id, tenant="t1", tier="free", url="/v1/chat/completions",
        body={"model": "tiny", "messages": [{"role": "user", "content": "hi"}]},
        request={"endpoint": "/v1/chat/completions"}, model="tiny", cost=10.0, state=JobState.QUEUED,
        max_attempts=3, request_hash="h1", created_at=clock(), updated_at=clock(),
    )
    values.update(changes)
    return JobRecord(**values)


async def test_created_job_reads_back_with_its_first_transition(store, clock):
    stored, created = await store.create(job(clock, metadata={"batch": "7"}), idempotency_window_s=86400)
    assert created and stored.state is JobState.QUEUED and stored.metadata == {"batch": "7"}
    again = await store.get("job_1")
    assert again.body == stored.body and again.created_at == clock()
    assert [(t.state, t.at) for t in again.transitions] == [(JobState.QUEUED, clock())]


async def test_idempotency_key_returns_the_same_job_within_the_window(store, clock):
    first, created = await store.create(job(clock, idempotency_key="k"), idempotency_window_s=86400)
    clock.advance(3600)
    second, created_again = await store.create(job(clock, "job_2", idempotency_key="k"), idempotency_window_s=86400)
    assert created and not created_again and second.id == first.id
    assert [j.id for j in await store.list()] == ["job_1"]


async def test_idempotency_key_with_another_request_is_a_conflict(store, clock):
    await store.create(job(clock, idempotency_key="k"), idempotency_window_s=86400)
    with pytest.raises(IdempotencyConflict):
        await store.create(job(clock, "job_2", idempotency_key="k", request_hash="other"), idempotency_window_s=86400)


async def test_idempotency_key_is_free_again_after_the_window(store, clock):
    await store.create(job(clock, idempotency_key="k"), idempotency_window_s=86400)
    clock.advance(86401)
    second, created = await store.create(job(clock, "job_2", idempotency_key="k"), idempotency_window_s=86400)
    assert created and second.id == "job_2"


async def test_concurrent_submissions_with_one_key_make_one_job(store, clock):
    results = await asyncio.gather(
        *(store.create(job(clock, f"job_{i}", idempotency_key="k"), idempotency_window_s=60) for i in range(5))
    )
    assert len({r.id for r, _ in results}) == 1 and sum(created for _, created in results) == 1


async def test_other_tenants_job_is_not_found(store, clock):
    await store.create(job(clock), idempotency_window_s=60)
    with pytest.raises(JobNotFound):
        await store.get("job_1", tenant="t2")
    with pytest.raises(JobNotFound):
        await store.cancel("job_1", tenant="t2")


async def test_result_is_stored_only_by_the_lease_holder(store, clock):
    await store.create(job(clock), idempotency_window_s=60)
    started = await store.start("job_1", owner="w1", lease_until=clock() + timedelta(seconds=10))
    assert started.state is JobState.PROCESSING and started.attempts == 1
    assert await store.start("job_1", owner="w2", lease_until=clock()) is None  # already taken
    assert not await store.complete("job_1", owner="w2", result={"x": 2})
    assert await store.complete("job_1", owner="w1", result={"x": 1})
    assert not await store.complete("job_1", owner="w1", result={"x": 3})  # a second result is refused
    done = await store.get("job_1")
    assert done.state is JobState.COMPLETED and done.result == {"x": 1} and done.finished_at == clock()
    assert [t.state for t in done.transitions] == [JobState.QUEUED, JobState.PROCESSING, JobState.COMPLETED]


async def test_expired_lease_is_reclaimed_and_the_stale_worker_cannot_finish(store, clock):
    await store.create(job(clock), idempotency_window_s=60)
    await store.start("job_1", owner="dead", lease_until=clock() + timedelta(seconds=5))
    clock.advance(3)
    assert await store.reclaim_expired() == []
    clock.advance(3)
    [reclaimed] = await store.reclaim_expired()
    assert reclaimed.state is JobState.RETRYING and reclaimed.error["code"] == "worker_lost"
    assert not await store.complete("job_1", owner="dead", result={})
    assert (await store.start("job_1", owner="w2", lease_until=clock() + timedelta(seconds=5))).attempts == 2


async def test_heartbeat_keeps_the_lease(store, clock):
    await store.create(job(clock), idempotency_window_s=60)
    await store.start("job_1", owner="w1", lease_until=clock() + timedelta(seconds=5))
    clock.advance(4)
    assert await store.heartbeat({"job_1": "w1", "nope": "w1"}, lease_until=clock() + timedelta(seconds=5)) == {"job_1"}
    clock.advance(4)
    assert await store.reclaim_expired() == []
    assert await store.heartbeat({"job_1": "w2"}, lease_until=clock() + timedelta(seconds=5)) == set()


async def test_failures_retry_until_attempts_run_out(store, clock):
    await store.create(job(clock, max_attempts=2), idempotency_window_s=60)
    error = {"message": "boom", "code": "generation_failed"}
    await store.start("job_1", owner="w", lease_until=clock())
    retrying = await store.fail("job_1", owner="w", error=error, retry_at=clock() + timedelta(seconds=2))
    assert retrying.state is JobState.RETRYING and retrying.not_before == clock() + timedelta(seconds=2)
    assert [j.id for j in await store.waiting()] == ["job_1"]
    await store.start("job_1", owner="w", lease_until=clock())
    failed = await store.fail("job_1", owner="w", error=error, retry_at=clock())
    assert failed.state is JobState.FAILED and failed.error == error and failed.attempts == 2
    assert [j.id for j in await store.list(state=JobState.FAILED)] == ["job_1"]


async def test_non_retryable_failure_fails_at_once(store, clock):
    await store.create(job(clock), idempotency_window_s=60)
    await store.start("job_1", owner="w", lease_until=clock())
    failed = await store.fail("job_1", owner="w", error={"message": "bad input"}, retry_at=None)
    assert failed.state is JobState.FAILED and failed.attempts == 1


async def test_manual_retry_requeues_a_failed_job_with_more_attempts(store, clock):
    await store.create(job(clock, max_attempts=1), idempotency_window_s=60)
    await store.start("job_1", owner="w", lease_until=clock())
    await store.fail("job_1", owner="w", error={"message": "boom"}, retry_at=clock())
    again = await store.retry("job_1", extra_attempts=2)
    assert again.state is JobState.QUEUED and again.max_attempts == 3 and again.error is None
    with pytest.raises(JobStateConflict):
        await store.retry("job_1", extra_attempts=2)


async def test_release_puts_a_running_job_back_without_counting_the_attempt(store, clock):
    await store.create(job(clock), idempotency_window_s=60)
    await store.start("job_1", owner="w", lease_until=clock())
    assert await store.release("job_1", owner="w", message="shutdown")
    released = await store.get("job_1")
    assert released.state is JobState.QUEUED and released.attempts == 0


async def test_cancel_waiting_and_running_jobs_but_not_finished_ones(store, clock):
    await store.create(job(clock, "a"), idempotency_window_s=60)
    await store.create(job(clock, "b"), idempotency_window_s=60)
    await store.start("b", owner="w", lease_until=clock())
    assert (await store.cancel("a")).state is JobState.CANCELLED
    assert (await store.cancel("b")).state is JobState.CANCELLED
    assert not await store.complete("b", owner="w", result={})  # the running worker's result is refused
    with pytest.raises(JobStateConflict):
        await store.cancel("a")


async def test_list_pages_newest_first_and_filters_by_tenant(store, clock):
    for i in range(5):
        await store.create(job(clock, f"j{i}", tenant="t1" if i % 2 == 0 else "t2"), idempotency_window_s=60)
        clock.advance(1)
    assert [j.id for j in await store.list(limit=2)] == ["j4", "j3"]
    assert [j.id for j in await store.list(limit=2, after="j3")] == ["j2", "j1"]
    assert [j.id for j in await store.list(tenant="t1")] == ["j4", "j2", "j0"]


async def test_webhook_is_due_once_a_job_with_a_callback_finishes(store, clock):
    await store.create(job(clock, callback_url="http://127.0.0.1:9/hook"), idempotency_window_s=60)
    await store.start("job_1", owner="w", lease_until=clock())
    assert await store.due_webhooks(limit=10) == []
    await store.complete("job_1", owner="w", result={})
    [due] = await store.due_webhooks(limit=10)
    attempt = WebhookAttempt(
        webhook_id="wh_1", attempt=1, url=due.callback_url, status_code=500, error="HTTP 500", duration_ms=3.0,
        delivered=False, at=clock(),
    )
    await store.record_delivery(attempt, job_id="job_1", next_at=clock() + timedelta(seconds=5))
    assert await store.due_webhooks(limit=10) == []
    clock.advance(5)
    assert [j.id for j in await store.due_webhooks(limit=10)] == ["job_1"]
    delivered = WebhookAttempt(**(attempt.__dict__ | {"attempt": 2, "status_code": 200, "error": None, "delivered": True}))
    await store.record_delivery(delivered, job_id="job_1", next_at=None)
    final = await store.get("job_1")
    assert final.webhook_state is WebhookState.DELIVERED and [d.status_code for d in final.deliveries] == [500, 200]


async def test_two_replicas_on_one_postgresql_never_double_take_or_double_write(postgres_url, clock):
    """Two API replicas, each with its own engine and connection pool, race on the same jobs."""
    databases = [Database(url=postgres_url) for _ in range(2)]
    await asyncio.gather(*(d.migrate() for d in databases))  # concurrent starts migrate safely
    a, b = (SqlJobStore(database=d, clock=clock) for d in databases)
    try:
        made = await asyncio.gather(
            *(s.create(job(clock, f"job_{i}", idempotency_key="k"), idempotency_window_s=60) for i, s in enumerate([a, b] * 4))
        )
        assert len({r.id for r, _ in made}) == 1 and sum(created for _, created in made) == 1
        job_id = made[0][0].id
        lease = clock() + timedelta(seconds=30)
        starts = await asyncio.gather(*(s.start(job_id, owner=f"w{i}", lease_until=lease) for i, s in enumerate([a, b] * 5)))
        winners = [i for i, r in enumerate(starts) if r is not None]
        assert len(winners) == 1
        finishes = await asyncio.gather(*(s.complete(job_id, owner=f"w{i}", result={"by": i}) for i, s in enumerate([a, b] * 5)))
        assert finishes.count(True) == 1 and finishes[winners[0]]
        done = await b.get(job_id)
        assert done.result == {"by": winners[0]}
        assert [t.state for t in done.transitions] == [JobState.QUEUED, JobState.PROCESSING, JobState.COMPLETED]
    finally:
        await asyncio.gather(*(d.dispose() for d in databases))


async def test_a_due_webhook_is_claimed_by_one_poller_until_its_hold_ends(store, clock):
    for i in range(6):
        await store.create(job(clock, f"job_{i}", callback_url="http://127.0.0.1:9/hook"), idempotency_window_s=60)
        await store.start(f"job_{i}", owner="w", lease_until=clock() + timedelta(seconds=60))
        await store.complete(f"job_{i}", owner="w", result={})
    claims = await asyncio.gather(*(store.due_webhooks(limit=4, hold_s=30) for _ in range(3)))
    claimed = [r.id for batch in claims for r in batch]
    assert sorted(claimed) == [f"job_{i}" for i in range(6)]  # each once, none twice
    assert await store.due_webhooks(limit=10, hold_s=30) == []
    clock.advance(31)  # the claimer never recorded an attempt: they come due again
    assert len(await store.due_webhooks(limit=10, hold_s=30)) == 6
