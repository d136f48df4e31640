"""A rollout's outcome window shared through the real Redis: what two replicas count is seen
whole by either, with the same counts as the in-process window and quantiles within 10%."""

from __future__ import annotations

import asyncio
import random

import redis.asyncio as aioredis

from genloom.registry.redis_outcomes import RedisOutcomes
from genloom.registry.rollout import Arm, Outcome, OutcomeWindow
from tests.services import REDIS, REDIS_TIMEOUTS


def test_two_replicas_counts_add_up_and_match_the_in_process_window(redis_prefix):
    async def scenario() -> None:
        clients = [aioredis.Redis.from_url(REDIS, **REDIS_TIMEOUTS), aioredis.Redis.from_url(REDIS, **REDIS_TIMEOUTS)]
        replicas = [RedisOutcomes(client=c, prefix=redis_prefix, rollout_id="r1", window_s=300) for c in clients]
        exact = OutcomeWindow(window_s=300)
        rng = random.Random(7)
        now = 1_000_000.0
        for i in range(400):
            arm = Arm.CANDIDATE if i % 4 == 0 else Arm.STABLE
            outcome = Outcome(arm, rng.random() > 0.05, rng.uniform(5, 200), rng.uniform(1, 20), at=now - rng.uniform(0, 200))
            replicas[i % 2].add(outcome, 0)
            exact.add(outcome, 0)
        for r in replicas:  # a replica's snapshot waits for its own writes; the other's may still be on the way
            await r.snapshot(now, 0)
        shared = [await r.snapshot(now, 0) for r in replicas]
        truth = await exact.snapshot(now, 0)
        for seen in shared:
            assert seen.step_requests == truth.step_requests == 100
            for arm in ("candidate", "stable"):
                got, want = getattr(seen, arm), getattr(truth, arm)
                assert (got.requests, got.errors) == (want.requests, want.errors)
                assert want.p50_latency_ms <= got.p50_latency_ms <= want.p50_latency_ms * 1.1
        later = await replicas[0].snapshot(now + 400, 0)
        assert later.candidate.requests == 0 and later.step_requests == 100  # the window moved on; the step did not
        for c in clients:
            await c.aclose()

    asyncio.run(scenario())
