"""Blocks per tenant per UTC hour: a tenant whose requests the guards keep refusing is probing
them, and once it reaches its `guard_blocks_per_hour` every request it makes gets 429 until the
hour ends. Counted in memory in one process, in Redis when scaled out (every replica sees the
same count)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from genloom.gateway.rate_limit import LimitScope, RateLimited

LIMIT = "guard_blocks_per_hour"


class BlockCounter(Protocol):
    async def count(self, tenant: str) -> int: ...

    async def add(self, tenant: str) -> None: ...


def _hour(now: float) -> int:
    return int(now // 3600)


class InMemoryBlockCounter:
    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._counts: dict[tuple[str, int], int] = {}

    async def count(self, tenant: str) -> int:
        return self._counts.get((tenant, _hour(self._clock())), 0)

    async def add(self, tenant: str) -> None:
        hour = _hour(self._clock())
        if len(self._counts) > 10_000:  # past hours' counts are never read again
            self._counts = {k: v for k, v in self._counts.items() if k[1] == hour}
        self._counts[(tenant, hour)] = self._counts.get((tenant, hour), 0) + 1


class RedisBlockCounter:
    def __init__(self, *, client: Any, prefix: str, clock: Callable[[], float] = time.time) -> None:
        self._client, self._prefix, self._clock = client, prefix, clock

    def _key(self, tenant: str) -> str:
        return f"{self._prefix}guard_blocks:{tenant}:{_hour(self._clock())}"

    async def count(self, tenant: str) -> int:
        value = await self._client.get(self._key(tenant))
        return int(value or 0)

    async def add(self, tenant: str) -> None:
        key = self._key(tenant)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, 7200)
            await pipe.execute()


async def refuse_if_over(counter: BlockCounter, tenant: str, limit: int | None, *, clock: Callable[[], float] = time.time) -> None:
    """RateLimited (429) while `tenant` has reached `limit` blocks this hour."""
    if limit is None:
        return
    blocks = await counter.count(tenant)
    if blocks >= limit:
        retry = max(1, int(3600 - clock() % 3600))
        raise RateLimited(
            f"tenant '{tenant}' had {blocks} requests blocked by guards this hour (limit {limit}); "
            f"its requests are refused until the hour ends in {retry} s",
            retry_after_s=retry, scope=LimitScope.TENANT, limit=LIMIT, headers={},
        )
