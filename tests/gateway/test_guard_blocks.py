"""Blocks per tenant per UTC hour, counted in memory and in the real Redis every replica shares:
the same contract for both (two counters on one Redis prefix see one count)."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from genloom.gateway.guard_blocks import InMemoryBlockCounter, RedisBlockCounter, refuse_if_over
from genloom.gateway.rate_limit import RateLimited
from tests.services import REDIS, REDIS_TIMEOUTS


@pytest.fixture(params=["in-memory", "redis"])
async def counters(request, redis_prefix):
    """Two counters as two replicas would hold them, on one clock the test moves."""
    now = [10 * 3600 + 5.0]
    clock = lambda: now[0]  # noqa: E731
    if request.param == "in-memory":
        shared = InMemoryBlockCounter(clock=clock)
        yield shared, shared, now
        return
    client = aioredis.Redis.from_url(REDIS, **REDIS_TIMEOUTS)
    yield (RedisBlockCounter(client=client, prefix=redis_prefix, clock=clock),
           RedisBlockCounter(client=client, prefix=redis_prefix, clock=clock), now)
    await client.aclose()


async def test_blocks_are_counted_per_tenant_and_hour_across_replicas(counters):
    one, two, now = counters
    await one.add("acme")
    await two.add("acme")
    await one.add("other")
    assert await one.count("acme") == 2 and await two.count("acme") == 2 and await two.count("other") == 1
    with pytest.raises(RateLimited) as limited:
        await refuse_if_over(two, "acme", 2, clock=lambda: now[0])
    assert limited.value.retry_after_s == 3595 and limited.value.limit == "guard_blocks_per_hour"
    await refuse_if_over(two, "acme", 3, clock=lambda: now[0])  # under a higher limit
    await refuse_if_over(two, "acme", None)  # no limit
    now[0] += 3600
    assert await one.count("acme") == 0  # a new hour starts from nothing
