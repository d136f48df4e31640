import threading
import time

import pytest

from genloom.queue import InMemoryQueue, Job, Priority, QueueClosed, QueueFull


def job(name: str, model: str = "m", rows: int = 1, priority: Priority = Priority.REALTIME) -> Job:
    return Job(id=name, model=model, payload=None, emit=lambda e: None, rows=rows, priority=priority)


def test_jobs_come_out_by_priority_then_arrival():
    q = InMemoryQueue(max_queued=10)
    for j in (job("a1", priority=Priority.ASYNC), job("r1"), job("a2", priority=Priority.ASYNC), job("r2")):
        q.submit(j)
    assert [j.id for j in q.take(["m"], max_rows=10, timeout=0)] == ["r1", "r2", "a1", "a2"]


def test_full_queue_refuses_with_retry_after():
    q = InMemoryQueue(max_queued=2, retry_after_s=3)
    q.submit(job("a"))
    q.submit(job("b"))
    with pytest.raises(QueueFull) as e:
        q.submit(job("c"))
    assert e.value.retry_after_s == 3
    q.take(["m"], max_rows=1, timeout=0)
    q.submit(job("c"))


def test_take_fills_at_most_the_free_rows_and_keeps_order():
    q = InMemoryQueue(max_queued=10)
    q.submit(job("big", rows=3))
    q.submit(job("small"))
    assert q.take(["m"], max_rows=2, timeout=0) == []
    assert [j.id for j in q.take(["m"], max_rows=4, timeout=0)] == ["big", "small"]


def test_take_only_returns_jobs_for_the_workers_models():
    q = InMemoryQueue(max_queued=10)
    q.submit(job("x", model="other"))
    q.submit(job("y", model="mine"))
    assert [j.id for j in q.take(["mine"], max_rows=5, timeout=0)] == ["y"]
    assert q.depth() == 1


def test_cancelled_job_is_dropped_and_frees_its_place():
    q = InMemoryQueue(max_queued=2)
    a, b = job("a"), job("b")
    q.submit(a)
    q.submit(b)
    a.cancel()
    assert [j.id for j in q.take(["m"], max_rows=5, timeout=0)] == ["b"]
    assert q.depth() == 0


def test_take_wakes_when_a_job_arrives():
    q = InMemoryQueue(max_queued=2)
    threading.Timer(0.05, lambda: q.submit(job("late"))).start()
    started = time.monotonic()
    got = q.take(["m"], max_rows=1, timeout=5)
    assert [j.id for j in got] == ["late"]
    assert time.monotonic() - started < 4


def test_close_hands_back_waiting_jobs_and_refuses_new_ones():
    q = InMemoryQueue(max_queued=5)
    q.submit(job("a"))
    assert [j.id for j in q.close()] == ["a"]
    with pytest.raises(QueueClosed):
        q.submit(job("b"))
