"""The queue contract: what the gateway and the workers rely on, run against the in-process
queue and the Redis one (on the real server) alike."""

import threading
import time

import pytest
import redis

from genloom.queue import InMemoryQueue, QueueClosed, QueueFull, SchedulerPolicy, TenantQueueFull
from genloom.jobs import Job, RequestClass
from genloom.queue.redis_queue import RedisQueue
from tests.services import REDIS, REDIS_TIMEOUTS

REALTIME, ASYNC = RequestClass.REALTIME, RequestClass.ASYNC


def job(name: str, model: str = "m", rows: int = 1, request_class: RequestClass = REALTIME, tenant: str = "t") -> Job:
    return Job(id=name, model=model, payload=None, emit=lambda e: None, rows=rows, request_class=request_class, tenant=tenant)


@pytest.fixture(params=["memory", "redis"])
def queue(request):
    """queue(max_queued, retry_after_s=1, tenant_max_share=1.0): a fresh queue of the backend under test."""
    made = []

    def make(max_queued: int, retry_after_s: int = 1, tenant_max_share: float = 1.0):
        policy = SchedulerPolicy(
            max_queued={REALTIME: max_queued, ASYNC: max_queued}, retry_after_s=retry_after_s,
            tenant_max_share=tenant_max_share,
        )
        if request.param == "memory":
            return InMemoryQueue(policy=policy)
        client = redis.Redis.from_url(REDIS, decode_responses=True, **REDIS_TIMEOUTS)
        q = RedisQueue(client=client, policy=policy, prefix=request.getfixturevalue("redis_prefix"))
        made.append(q)
        return q

    yield make
    for q in made:
        q.stop()


def test_jobs_come_out_by_class_then_arrival(queue):
    q = queue(10)
    for j in (job("a1", request_class=ASYNC), job("r1"), job("a2", request_class=ASYNC), job("r2")):
        q.submit(j)
    assert [j.id for j in q.take(["m"], max_rows=10, timeout=0)] == ["r1", "r2", "a1", "a2"]


def test_full_queue_refuses_with_retry_after(queue):
    q = queue(2, retry_after_s=3)
    q.submit(job("a"))
    q.submit(job("b"))
    with pytest.raises(QueueFull) as e:
        q.submit(job("c"))
    assert e.value.retry_after_s == 3
    q.take(["m"], max_rows=1, timeout=0)
    q.submit(job("c"))


def test_take_fills_at_most_the_free_rows_and_keeps_order(queue):
    q = queue(10)
    q.submit(job("big", rows=3))
    q.submit(job("small"))
    assert q.take(["m"], max_rows=2, timeout=0) == []
    assert [j.id for j in q.take(["m"], max_rows=4, timeout=0)] == ["big", "small"]


def test_take_only_returns_jobs_for_the_workers_models(queue):
    q = queue(10)
    q.submit(job("x", model="other"))
    q.submit(job("y", model="mine"))
    assert [j.id for j in q.take(["mine"], max_rows=5, timeout=0)] == ["y"]
    assert q.depth() == 1


def test_cancelled_job_is_dropped_and_frees_its_place(queue):
    q = queue(2)
    a, b = job("a"), job("b")
    q.submit(a)
    q.submit(b)
    a.cancel()
    assert [j.id for j in q.take(["m"], max_rows=5, timeout=0)] == ["b"]
    assert q.depth() == 0


def test_take_wakes_when_a_job_arrives(queue):
    q = queue(2)
    threading.Timer(0.05, lambda: q.submit(job("late"))).start()
    started = time.monotonic()
    got = q.take(["m"], max_rows=1, timeout=5)
    assert [j.id for j in got] == ["late"]
    assert time.monotonic() - started < 4


def test_close_hands_back_waiting_jobs_and_refuses_new_ones(queue):
    q = queue(5)
    q.submit(job("a"))
    assert [j.id for j in q.close()] == ["a"]
    with pytest.raises(QueueClosed):
        q.submit(job("b"))


def test_one_tenant_cannot_fill_the_queue(queue):
    q = queue(4, tenant_max_share=0.5)
    q.submit(job("a", tenant="flood"))
    q.submit(job("b", tenant="flood"))
    with pytest.raises(TenantQueueFull) as e:
        q.submit(job("c", tenant="flood"))
    assert e.value.retry_after_s == 1
    with pytest.raises(TenantQueueFull):
        q.reserve(model="m", request_class=REALTIME, tenant="flood")
    q.submit(job("d", tenant="other"))


def test_restored_jobs_skip_admission_and_removed_jobs_never_come_out(queue):
    q = queue(1)
    q.submit(job("a"))
    q.restore(job("b"))
    assert q.depth() == 2 and q.remove("a") is not None
    assert [j.id for j in q.take(["m"], max_rows=5, timeout=0)] == ["b"]


def test_delayed_job_waits_for_its_time(queue):
    q = queue(5)
    q.restore(Job(id="later", model="m", payload=None, emit=lambda e: None, request_class=ASYNC,
                  not_before=time.monotonic() + 0.2))
    assert q.take(["m"], max_rows=1, timeout=0) == []
    assert [j.id for j in q.take(["m"], max_rows=1, timeout=2)] == ["later"]


def test_position_follows_the_schedule(queue):
    q = queue(10)
    q.submit(job("a1", request_class=ASYNC))
    q.submit(job("r1"))
    assert q.position("r1") == 1 and q.position("a1") == 2 and q.position("gone") is None


def test_async_jobs_leave_reserved_rows_to_realtime(queue):
    q = queue(10)
    for name in ("a1", "a2", "a3"):
        q.submit(job(name, request_class=ASYNC))
    assert [j.id for j in q.take(["m"], max_rows=4, timeout=0, max_async_rows=2)] == ["a1", "a2"]
    assert q.take(["m"], max_rows=2, timeout=0, max_async_rows=0) == []
    q.submit(job("r1"))
    assert [j.id for j in q.take(["m"], max_rows=2, timeout=0, max_async_rows=0)] == ["r1"]


def test_reserved_places_count_against_the_limits_until_released(queue):
    q = queue(3, tenant_max_share=1.0)
    places = [q.reserve(model="fresh", request_class=ASYNC, tenant="t") for _ in range(3)]
    with pytest.raises(QueueFull):
        q.reserve(model="fresh", request_class=ASYNC, tenant="t")
    q.restore(job("a", model="fresh", request_class=ASYNC))
    q.release(places[0])
    q.release(places[0])  # a second release gives nothing back
    with pytest.raises(QueueFull):
        q.reserve(model="fresh", request_class=ASYNC, tenant="t")
    q.release(places[1])
    q.reserve(model="fresh", request_class=ASYNC, tenant="t")
