"""What only a shared queue does, on the real Redis server: the same order as the in-process
scheduler (a differential test), events across processes, leases, reclaim, dead letters, and
cancellation reaching the host that runs the job."""

from __future__ import annotations

import random
import threading
import time

import pytest
import redis

from genloom.jobs import ChoiceFinished, Job, JobFailed, RequestClass, SamplingParams, TextTask, Tier, TokenEvent
from genloom.queue import InMemoryQueue, SchedulerPolicy
from genloom.queue.redis_queue import RedisQueue
from genloom.queue.scheduler import TierPolicy
from tests.services import REDIS, REDIS_TIMEOUTS

REALTIME, ASYNC = RequestClass.REALTIME, RequestClass.ASYNC


class Clock:
    """Time in eighths of a second, so arithmetic on it is exact in both Python and Lua."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def make(redis_prefix):
    made: list[RedisQueue] = []

    def make_queue(policy: SchedulerPolicy | None = None, **options) -> RedisQueue:
        client = redis.Redis.from_url(REDIS, decode_responses=True, **REDIS_TIMEOUTS)
        options.setdefault("adopt", lambda job: lambda event: None)
        q = RedisQueue(client=client, policy=policy or SchedulerPolicy(), prefix=redis_prefix, **options)
        made.append(q)
        return q

    yield make_queue
    for q in made:
        q.stop()


def wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_same_order_as_the_in_process_scheduler_through_random_traffic(make):
    """Tiers with unequal weights, many tenants, unequal costs, two classes, wide jobs, retries in
    backoff, aging and cancellations: every take and every position must match, tie for tie."""
    rng = random.Random(11)
    clock = Clock()
    policy = SchedulerPolicy(
        tiers={Tier.PREMIUM: TierPolicy(6, 4), Tier.STANDARD: TierPolicy(3, 8), Tier.FREE: TierPolicy(1, 16)},
        max_queued={REALTIME: 10_000, ASYNC: 10_000},
    )
    memory = InMemoryQueue(policy=policy, clock=clock)
    shared = make(policy, clock=clock, monotonic=clock, position_ttl_s=0)
    keep, waiting, n = [], set(), 0
    for step in range(600):
        action = rng.random()
        if action < 0.55:
            n += 1
            delay = rng.choice([0, 0, 0, 0.5, 2.0])
            values = dict(
                id=f"j{n}", model=rng.choice(["m1", "m2"]), payload=None, emit=lambda e: None,
                rows=rng.choice([1, 1, 1, 2, 3]), request_class=rng.choice([REALTIME, ASYNC, ASYNC]),
                tier=rng.choice(list(Tier)), tenant=f"t{rng.randrange(6)}", cost=rng.choice([1.0, 2.5, 8.0, 30.0]),
                enqueued_at=clock.now - rng.choice([0, 0, 4.0]), not_before=clock.now + delay if delay else 0.0,
            )
            for q in (memory, shared):
                job = Job(**values)
                keep.append(job)
                (q.restore if delay or rng.random() < 0.1 else q.submit)(job)
            waiting.add(values["id"])
        elif action < 0.85:
            models = rng.choice([["m1"], ["m2"], ["m1", "m2"]])
            max_rows, max_async = rng.randrange(1, 8), rng.choice([None, 0, 1, 3])
            got = [[j.id for j in q.take(models, max_rows=max_rows, timeout=0, max_async_rows=max_async)] for q in (memory, shared)]
            assert got[0] == got[1], f"step {step}"
            waiting -= set(got[0])
        elif action < 0.9 and waiting:
            victim = rng.choice(sorted(waiting))
            assert (memory.remove(victim) is None) == (shared.remove(victim) is None)
            waiting.discard(victim)
        else:
            clock.now += rng.choice([0.125, 0.5, 1.0, 3.0])
        if step % 20 == 0:
            for model in ("m1", "m2"):
                # The in-process scheduler's own simulation, uncached, against the shared queue's.
                order = memory._schedulers[model].order() if model in memory._schedulers else []
                assert [shared.position(job_id) for job_id in order] == list(range(1, len(order) + 1)), f"step {step}"
    for models in (["m1"], ["m2"]):
        clock.now += 100
        rest = [[j.id for j in q.take(models, max_rows=10_000, timeout=0)] for q in (memory, shared)]
        assert rest[0] == rest[1] and rest[0]
    assert shared.depth() == memory.depth() == 0


def test_events_reach_the_submitting_replica_in_order(make):
    api, worker = make(), make()
    events: list = []
    done = threading.Event()

    def emit(event):
        events.append(event)
        if isinstance(event, ChoiceFinished):
            done.set()

    task = TextTask(prompt_ids=(1, 2, 3), params=SamplingParams(max_tokens=4, stop=("x",), seed=5), n=1)
    submitted = Job(id="r1", model="m", payload=task, emit=emit)
    api.submit(submitted)
    [taken] = worker.take(["m"], max_rows=4, timeout=2)
    assert taken.payload == task and taken.deliveries == 1
    for i in range(500):
        taken.emit(TokenEvent(0, str(i), i + 1))
    taken.emit(ChoiceFinished(0, "length", 500))
    worker.finish(taken)
    assert done.wait(5)
    assert [e.delta for e in events[:-1]] == [str(i) for i in range(500)]
    wait_for(lambda: worker.depth() == 0 and not worker._redis.zcard(f"{worker._prefix}leases"))


def test_a_dead_workers_job_is_reclaimed_once_and_its_late_finish_refused(make):
    api, dead, alive = make(), make(lease_s=0.5), make(lease_s=0.5)
    api.submit(Job(id="a1", model="m", payload=None, emit=lambda e: None, request_class=ASYNC))
    [first] = dead.take(["m"], max_rows=1, timeout=1)
    dead._stopping.set()  # it stops renewing its lease, as a killed process would
    time.sleep(0.6)
    outcomes = [api.reclaim(), alive.reclaim()]
    assert sorted(o.outcome for batch in outcomes for o in batch) == ["requeued"]
    [second] = alive.take(["m"], max_rows=1, timeout=1)
    assert second.id == "a1" and second.deliveries == 2
    assert dead._call("finish", "a1", dead.owner) == 0  # not its job any more
    alive.finish(second)
    wait_for(lambda: alive._redis.exists(f"{alive._prefix}j:a1") == 0)


def test_a_job_that_keeps_killing_workers_goes_to_the_dead_letters(make):
    api = make(max_deliveries=2)
    api.submit(Job(id="poison", model="m", payload=None, emit=lambda e: None, request_class=ASYNC))
    for _ in range(2):
        worker = make(lease_s=0.2)
        assert [j.id for j in worker.take(["m"], max_rows=1, timeout=1)] == ["poison"]
        worker._stopping.set()
        time.sleep(0.3)
        api.reclaim()
    assert api.dead_letters() == ["poison"] and api.depth() == 0 and api.depths() == {"m": {REALTIME: 0, ASYNC: 0}}
    assert make().take(["m"], max_rows=1, timeout=0) == []


def test_a_waiting_client_hears_that_its_worker_was_lost(make):
    api, dead = make(), make(lease_s=0.2)
    failed = threading.Event()
    got: list = []
    job = Job(id="r1", model="m", payload=None, emit=lambda e: (got.append(e), failed.set()))
    api.submit(job)
    dead.take(["m"], max_rows=1, timeout=1)
    dead._stopping.set()
    time.sleep(0.3)
    assert [r.outcome for r in api.reclaim()] == ["lost"]
    assert failed.wait(5) and isinstance(got[0], JobFailed) and got[0].retryable


def test_cancel_reaches_the_worker_on_another_host(make):
    api, worker = make(), make()
    job = Job(id="r1", model="m", payload=None, emit=lambda e: None)
    api.submit(job)
    [running] = worker.take(["m"], max_rows=1, timeout=1)
    assert not running.cancelled
    job.cancel()
    wait_for(lambda: running.cancelled, timeout=2)
    wait_for(lambda: worker._redis.exists(f"{worker._prefix}j:r1") == 0)


def test_heartbeats_keep_a_long_job_and_restore_is_idempotent(make):
    api, worker = make(), make(lease_s=0.6)
    job = Job(id="a1", model="m", payload=None, emit=lambda e: None, request_class=ASYNC)
    api.submit(job)
    [held] = worker.take(["m"], max_rows=1, timeout=1)
    api.restore(Job(id="a1", model="m", payload=None, emit=lambda e: None, request_class=ASYNC))  # a recovery sweep
    time.sleep(1.5)  # well past the lease: the keeper renewed it
    assert api.reclaim() == [] and api.depth() == 0 and not held.cancelled
    worker.finish(held)


def test_limits_hold_across_replicas(make):
    policy = SchedulerPolicy(max_queued={REALTIME: 3, ASYNC: 3}, tenant_max_share=1.0)
    a, b = make(policy), make(policy)
    keep = [Job(id=f"j{i}", model="m", payload=None, emit=lambda e: None) for i in range(4)]
    a.submit(keep[0])
    b.submit(keep[1])
    place = a.reserve(model="m", request_class=REALTIME, tenant="t")
    from genloom.queue import QueueFull

    with pytest.raises(QueueFull):
        b.submit(keep[2])
    a.release(place)
    b.submit(keep[2])


def test_a_worker_drops_a_request_whose_api_replica_is_gone(make):
    api, worker = make(), make()
    api.submit(Job(id="r1", model="m", payload=None, emit=lambda e: None))
    [running] = worker.take(["m"], max_rows=1, timeout=1)
    api.stop()  # its reply stream goes with it
    running.emit(TokenEvent(0, "anyone there?", 1))
    wait_for(lambda: running.cancelled, timeout=3)
    wait_for(lambda: worker._redis.exists(f"{worker._prefix}j:r1") == 0)
    assert not worker._redis.exists(api._inbox)  # the event did not make the stream again
