"""The exact and semantic response caches shared by every API replica through Redis: what one
replica stored answers the same request on any other. Same protocols, same behaviour and the
same tests as the in-memory caches in cache.py.

Entries carry their expiry time from the caller's clock (and a Redis TTL a minute longer, so
nothing outlives it); least-recently-used order is kept by a counter, not a clock, so it is
exact however close together the uses are. The semantic search itself runs on the replica:
it reads the bucket's vectors (one tenant, model and parameter set) and takes their dot
products with numpy. Plain Redis has no vector index; this is fine up to some thousands of
entries per tenant, the bound `max_entries_per_tenant` sets."""

from __future__ import annotations

import functools
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import redis.asyncio as aioredis

from genloom.gateway.cache import (
    CachedCompletion,
    CacheStats,
    Embed,
    SemanticHit,
    _check_size,
    _check_ttl,
    _decode,
    _digest,
    _encode,
)
from genloom.queue.protocol import UNREACHABLE

log = logging.getLogger("genloom.cache")
_MARGIN_S = 60  # a Redis TTL this much past the entry's own expiry bounds memory

# KEYS: entry, lru zset, expiry zset, counters. ARGV: key, now, tick. A hit refreshes the entry's place.
_GET = """
local v = redis.call('HMGET', KEYS[1], 'data', 'exp')
if not v[1] or tonumber(v[2]) <= tonumber(ARGV[2]) then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('HINCRBY', KEYS[4], 'misses', 1)
  return false
end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('HINCRBY', KEYS[4], 'hits', 1)
return v[1]
"""

# KEYS: lru, expiry. ARGV: entry key prefix, now, max entries, key, data, expires at, tick, ttl ms.
_PUT = """
local prefix, now, most = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('HSET', prefix .. ARGV[4], 'data', ARGV[5], 'exp', ARGV[6])
redis.call('PEXPIRE', prefix .. ARGV[4], ARGV[8])
redis.call('ZADD', KEYS[1], ARGV[7], ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[6], ARGV[4])
if redis.call('ZCARD', KEYS[1]) > most then
  for _, key in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)) do
    redis.call('DEL', prefix .. key)
    redis.call('ZREM', KEYS[1], key)
    redis.call('ZREM', KEYS[2], key)
  end
end
while redis.call('ZCARD', KEYS[1]) > most do
  local oldest = redis.call('ZPOPMIN', KEYS[1])[1]
  redis.call('DEL', prefix .. oldest)
  redis.call('ZREM', KEYS[2], oldest)
end
return 1
"""

# KEYS: lru, expiry. ARGV: entry key prefix, now. Drops expired entries; answers how many are left.
_SWEEP = """
for _, key in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[2])) do
  redis.call('DEL', ARGV[1] .. key)
  redis.call('ZREM', KEYS[1], key)
  redis.call('ZREM', KEYS[2], key)
end
return redis.call('ZCARD', KEYS[1])
"""


def _tolerant(default: Any) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
    """A cache that cannot reach Redis answers as an empty one (a miss, nothing stored) and says
    so in the log: requests go on, uncached."""

    def wrap(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(method)
        async def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return await method(self, *args, **kwargs)
            except UNREACHABLE as e:
                log.warning("response cache unavailable (%s): %s skipped", e, method.__name__)
                return default

        return call

    return wrap


class RedisResponseCache:
    def __init__(
        self, *, client: aioredis.Redis, max_entries: int, prefix: str = "genloom:", clock: Callable[[], float] = time.time
    ) -> None:
        _check_size("max_entries", max_entries)
        self._redis, self._max_entries, self._clock = client, max_entries, clock
        p = f"{prefix}cache:exact:"
        self._entry, self._lru, self._expiry, self._counters, self._tick = f"{p}e:", f"{p}lru", f"{p}exp", f"{p}stats", f"{p}tick"
        self._get = client.register_script(_GET)
        self._put = client.register_script(_PUT)
        self._sweep = client.register_script(_SWEEP)

    @_tolerant(None)
    async def get(self, key: str) -> CachedCompletion | None:
        tick = await self._redis.incr(self._tick)
        data = await self._get(
            keys=[self._entry + key, self._lru, self._expiry, self._counters], args=[key, repr(self._clock()), tick]
        )
        return None if data is None else _decode(data)

    @_tolerant(None)
    async def put(self, key: str, value: CachedCompletion, ttl_s: float) -> None:
        _check_ttl(ttl_s)
        now = self._clock()
        tick = await self._redis.incr(self._tick)
        await self._put(
            keys=[self._lru, self._expiry],
            args=[self._entry, repr(now), self._max_entries, key, _encode(value), repr(now + ttl_s), tick,
                  math.ceil((ttl_s + _MARGIN_S) * 1000)],
        )

    async def stats(self) -> CacheStats:
        entries = await self._sweep(keys=[self._lru, self._expiry], args=[self._entry, repr(self._clock())])
        counters = await self._redis.hmget(self._counters, "hits", "misses")
        return CacheStats(int(counters[0] or 0), int(counters[1] or 0), int(entries))

    async def forget_tenant(self, tenant: str) -> int:
        """Drop every entry of the tenant's (keys begin with its id); how many there were."""
        pattern = re.sub(r"([*?\[\]\\])", r"\\\1", tenant) + "/*"  # the tenant's id taken literally
        keys = [k async for k, _ in self._redis.zscan_iter(self._lru, match=pattern, count=1000)]
        for chunk in range(0, len(keys), 500):
            part = keys[chunk:chunk + 500]
            pipe = self._redis.pipeline(transaction=True)
            pipe.delete(*(self._entry + (k.decode() if isinstance(k, bytes) else k) for k in part))
            pipe.zrem(self._lru, *part)
            pipe.zrem(self._expiry, *part)
            await pipe.execute()
        return len(keys)


class RedisSemanticCache:
    """Per tenant: a zset of its entries by last use, a zset by expiry; per bucket (tenant,
    model, parameters): a hash of entry id -> unit vector (float32 bytes) and one of text ->
    entry id, so storing a text again replaces its entry; per entry: a hash of the rest."""

    def __init__(
        self, *, client: aioredis.Redis, embed: Embed, threshold: float = 0.92, max_entries_per_tenant: int,
        prefix: str = "genloom:", clock: Callable[[], float] = time.time,
    ) -> None:
        if not (math.isfinite(threshold) and -1 <= threshold <= 1):
            raise ValueError(f"threshold is a cosine similarity in [-1, 1], got {threshold}")
        _check_size("max_entries_per_tenant", max_entries_per_tenant)
        self._redis, self._embed, self._threshold, self._clock = client, embed, threshold, clock
        self._max_per_tenant = max_entries_per_tenant
        self._p = f"{prefix}cache:semantic:"

    def _bucket(self, tenant: str, model: str, params_key: str) -> str:
        return self._p + "b:" + _digest({"t": tenant, "m": model, "p": params_key})

    @_tolerant(None)
    async def lookup(self, tenant: str, model: str, params_key: str, text: str) -> SemanticHit | None:
        vector = await self._vector(text)
        await self._drop_expired(tenant)
        rows = await self._redis.hgetall(self._bucket(tenant, model, params_key) + ":v")
        if rows:
            ids = list(rows)
            matrix = np.frombuffer(b"".join(rows[i] for i in ids), dtype=np.float32).reshape(len(ids), -1)
            similarities = matrix @ vector
            best = int(np.argmax(similarities))
            if similarities[best] >= self._threshold:
                entry_id = ids[best].decode()
                data = await self._redis.hget(self._p + "e:" + entry_id, "data")
                if data is not None:
                    await self._redis.zadd(self._p + "lru:" + tenant, {entry_id: await self._tick()})
                    await self._redis.hincrby(self._p + "stats", "hits", 1)
                    return SemanticHit(_decode(data), float(similarities[best]))
        await self._redis.hincrby(self._p + "stats", "misses", 1)
        return None

    @_tolerant(None)
    async def store(
        self, tenant: str, model: str, params_key: str, text: str, value: CachedCompletion, ttl_s: float
    ) -> None:
        _check_ttl(ttl_s)
        vector = await self._vector(text)
        bucket = self._bucket(tenant, model, params_key)
        old = await self._redis.hget(bucket + ":t", text)
        if old is not None:  # the same text again replaces, so one text is one row
            await self._remove(tenant, old.decode())
        entry_id = str(await self._redis.incr(self._p + "ids"))
        expires = self._clock() + ttl_s
        ttl_ms = math.ceil((ttl_s + _MARGIN_S) * 1000)
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(self._p + "e:" + entry_id, mapping={"bucket": bucket, "text": text, "data": _encode(value)})
        pipe.pexpire(self._p + "e:" + entry_id, ttl_ms)
        pipe.hset(bucket + ":v", entry_id, vector.astype(np.float32).tobytes())
        pipe.hset(bucket + ":t", text, entry_id)
        pipe.zadd(self._p + "lru:" + tenant, {entry_id: await self._tick()})
        pipe.zadd(self._p + "exp:" + tenant, {entry_id: expires})
        await pipe.execute()
        if await self._redis.zcard(self._p + "lru:" + tenant) > self._max_per_tenant:
            await self._drop_expired(tenant)
        while await self._redis.zcard(self._p + "lru:" + tenant) > self._max_per_tenant:
            [(oldest, _)] = await self._redis.zrange(self._p + "lru:" + tenant, 0, 0, withscores=True)
            await self._remove(tenant, oldest.decode())

    async def stats(self) -> CacheStats:
        entries = 0
        async for key in self._redis.scan_iter(match=self._p + "lru:*", count=1000):
            tenant = key.decode()[len(self._p + "lru:"):]
            await self._drop_expired(tenant)
            entries += await self._redis.zcard(key)
        counters = await self._redis.hmget(self._p + "stats", "hits", "misses")
        return CacheStats(int(counters[0] or 0), int(counters[1] or 0), entries)

    async def forget_tenant(self, tenant: str) -> int:
        ids = [i.decode() for i in await self._redis.zrange(self._p + "lru:" + tenant, 0, -1)]
        for entry_id in ids:
            await self._remove(tenant, entry_id)
        return len(ids)

    async def _tick(self) -> int:
        return int(await self._redis.incr(self._p + "tick"))

    async def _vector(self, text: str) -> np.ndarray:
        vector = np.asarray((await self._embed([text]))[0], dtype=np.float32)
        norm = float(np.linalg.norm(vector))
        if not norm > 0:
            raise ValueError("the embedding model returned a zero vector; cannot compare it")
        return vector / norm

    async def _drop_expired(self, tenant: str) -> None:
        for entry_id in await self._redis.zrangebyscore(self._p + "exp:" + tenant, "-inf", repr(self._clock())):
            await self._remove(tenant, entry_id.decode())

    async def _remove(self, tenant: str, entry_id: str) -> None:
        entry = self._p + "e:" + entry_id
        bucket, text = await self._redis.hmget(entry, "bucket", "text")
        pipe = self._redis.pipeline(transaction=True)
        if bucket is not None:
            pipe.hdel(bucket.decode() + ":v", entry_id)
            pipe.hdel(bucket.decode() + ":t", text)
        pipe.delete(entry)
        pipe.zrem(self._p + "lru:" + tenant, entry_id)
        pipe.zrem(self._p + "exp:" + tenant, entry_id)
        await pipe.execute()
