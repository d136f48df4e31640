"""Rate limits and daily quotas shared by every API replica: the same buckets and counters as
`InMemoryRateLimiter`, kept in Redis and checked by one Lua script, so a limit of N per minute
admits N across all replicas together, never N per replica.

Each bucket is a hash (level, when it was last refilled, capacity) that expires once it would be
full again (a new bucket starts full, so nothing is lost); each daily counter expires two days
after its UTC day began. Time is the caller's wall clock in seconds (replicas keep NTP time)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import redis.asyncio as aioredis

from genloom.gateway.errors import NotReady
from genloom.gateway.rate_limit import (
    Admission,
    BucketKey,
    DayKey,
    LimitScope,
    Limits,
    _refuse_if_over,
    _Verdict,
    admission,
)
from genloom.queue.protocol import UNREACHABLE

log = logging.getLogger("genloom.limits")

# ARGV: now, seconds to the next UTC midnight, n buckets, then per bucket: capacity, refill per
# second, amount; then per day counter: limit, amount. KEYS: the buckets', then the counters'.
# Answers per limit: left (before), wait (0 fits, "inf" never), after (the level once done).
_CHECK = """
local now, to_midnight, nb = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local eps = 1e-9
local function f(x) return string.format('%.17g', x) end
local out, levels, fits = {}, {}, true
for i = 1, nb do
  local cap, rate, amount = tonumber(ARGV[3 + 3*i - 2]), tonumber(ARGV[3 + 3*i - 1]), tonumber(ARGV[3 + 3*i])
  local h = redis.call('HMGET', KEYS[i], 'level', 'at')
  local level, at = tonumber(h[1] or cap), tonumber(h[2] or now)
  if now > at then level, at = math.min(cap, level + (now - at) * rate), now end
  level = math.min(level, cap)
  local wait
  if amount > cap then wait = 'inf'
  elseif amount <= math.max(level, 0) + eps then wait = 0
  else wait = (amount - level) / rate end
  if wait ~= 0 then fits = false end
  levels[i] = {level, at, cap, rate, amount}
  out[i] = {f(level), wait == 'inf' and 'inf' or f(wait)}
end
local base = 3 + 3 * nb
for j = 1, #KEYS - nb do
  local limit, amount = tonumber(ARGV[base + 2*j - 1]), tonumber(ARGV[base + 2*j])
  local used = tonumber(redis.call('GET', KEYS[nb + j]) or '0')
  local left = limit - used
  local wait
  if amount > limit then wait = 'inf'
  elseif amount <= math.max(left, 0) then wait = 0
  else wait = to_midnight end
  if wait ~= 0 then fits = false end
  out[nb + j] = {f(left), wait == 'inf' and 'inf' or f(wait)}
end
for i = 1, nb do
  local l = levels[i]
  local level = fits and l[1] - l[5] or l[1]
  out[i][3] = f(level)
  if fits then
    redis.call('HSET', KEYS[i], 'level', f(level), 'at', f(l[2]))
    redis.call('EXPIRE', KEYS[i], math.ceil((l[3] - level) / l[4]) + 60)
  end
end
if fits then
  for j = 1, #KEYS - nb do
    redis.call('INCRBY', KEYS[nb + j], ARGV[base + 2*j])
    redis.call('EXPIRE', KEYS[nb + j], 2 * 86400)
  end
end
return out
"""

# ARGV: now, n buckets, then per bucket: capacity, refill per second, tokens to give back (a
# negative number charges); then per counter: the amount to take off. KEYS as in _CHECK.
_SETTLE = """
local now, nb = tonumber(ARGV[1]), tonumber(ARGV[2])
local function f(x) return string.format('%.17g', x) end
for i = 1, nb do
  local cap, rate, back = tonumber(ARGV[2 + 3*i - 2]), tonumber(ARGV[2 + 3*i - 1]), tonumber(ARGV[2 + 3*i])
  local h = redis.call('HMGET', KEYS[i], 'level', 'at')
  local level, at = tonumber(h[1] or cap), tonumber(h[2] or now)
  if now > at then level, at = math.min(cap, level + (now - at) * rate), now end
  level = math.min(cap, level + back)
  redis.call('HSET', KEYS[i], 'level', f(level), 'at', f(at))
  redis.call('EXPIRE', KEYS[i], math.max(1, math.ceil((cap - level) / rate)) + 60)
end
local base = 2 + 3 * nb
for j = 1, #KEYS - nb do
  local used = tonumber(redis.call('GET', KEYS[nb + j]) or '0')
  redis.call('SET', KEYS[nb + j], math.max(0, used - tonumber(ARGV[base + j])), 'KEEPTTL')
  if redis.call('TTL', KEYS[nb + j]) < 0 then redis.call('EXPIRE', KEYS[nb + j], 2 * 86400) end
end
return 1
"""


class RedisRateLimiter:
    def __init__(
        self,
        *,
        client: aioredis.Redis,
        prefix: str = "genloom:",
        clock: Callable[[], float] = time.time,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._redis = client
        self._prefix = f"{prefix}limits:"
        self._clock, self._wall_clock = clock, wall_clock
        self._check = client.register_script(_CHECK)
        self._settle = client.register_script(_SETTLE)

    async def check(
        self, *, key_id: str, tenant_id: str, key_limits: Limits, tenant_limits: Limits, tokens: int, images: int = 0
    ) -> Admission:
        if tokens < 0 or images < 0:
            raise ValueError(f"tokens and images must be >= 0, got {tokens} and {images}")
        now, wall = self._clock(), self._now()
        buckets: list[tuple[BucketKey, int, int]] = []
        days: list[tuple[DayKey, int, int]] = []
        for scope, owner, limits in ((LimitScope.KEY, key_id, key_limits), (LimitScope.TENANT, tenant_id, tenant_limits)):
            for kind, amount in (("requests", 1), ("tokens", tokens)):
                if (value := getattr(limits, f"{kind}_per_minute")) is not None:
                    buckets.append(((scope, owner, kind), value, amount))
            for kind, amount in (("tokens", tokens), ("images", images)):
                if (value := getattr(limits, f"{kind}_per_day")) is not None:
                    days.append(((scope, owner, kind, wall.date()), value, amount))
        if not buckets and not days:
            return admission(key_id, tenant_id, tokens, images, [])
        midnight = datetime.combine(wall.date() + timedelta(days=1), datetime.min.time(), UTC)
        args: list = [repr(now), repr((midnight - wall).total_seconds()), len(buckets)]
        for _, value, amount in buckets:
            args += [value, repr(value / 60), amount]
        for _, value, amount in days:
            args += [value, amount]
        keys = [self._key(k) for k, _, _ in buckets] + [self._key(k) for k, _, _ in days]
        try:
            answers = await self._check(keys=keys, args=args)
        except UNREACHABLE as e:  # refuse rather than admit unmetered
            raise NotReady(f"rate limits cannot be checked: Redis cannot be reached ({type(e).__name__})") from e
        verdicts = []
        for (key, value, amount), (left, wait, after) in zip(buckets, answers[: len(buckets)], strict=True):
            verdicts.append(_Verdict(key, "minute", value, amount, float(left), _wait(wait), after=float(after)))
        for (key, value, amount), (left, wait) in zip(days, answers[len(buckets):], strict=True):
            verdicts.append(_Verdict(key, "day", value, amount, float(left), _wait(wait)))
        _refuse_if_over(verdicts)
        return admission(key_id, tenant_id, tokens, images, verdicts)

    async def settle(self, admission: Admission, *, tokens_used: int, images_made: int | None = None) -> None:
        """As InMemoryRateLimiter.settle: one atomic correction across every replica."""
        if tokens_used < 0:
            raise ValueError(f"tokens_used must be >= 0, got {tokens_used}")
        if images_made is not None and not 0 <= images_made <= admission.images:
            raise ValueError(f"images_made must be in [0, {admission.images}], got {images_made}")
        unused = admission.tokens - tokens_used
        today = self._now().date()
        keys, args = [], [repr(self._clock()), len(admission.token_buckets)]
        for key, value in admission.token_buckets:
            keys.append(self._key(key))
            args += [value, repr(value / 60), unused]
        for key in admission.token_days:
            if key[3] == today:  # a past day's quota is over; nothing is left to correct
                keys.append(self._key(key))
                args.append(unused)
        if images_made is not None:
            for key in admission.image_days:
                if key[3] == today:
                    keys.append(self._key(key))
                    args.append(admission.images - images_made)
        if keys:
            try:
                await self._settle(keys=keys, args=args)
            except UNREACHABLE as e:  # the estimate stays charged
                log.warning("could not settle a rate-limit reservation in Redis: %s", e)

    def _key(self, key: BucketKey | DayKey) -> str:
        scope, owner, kind, *day = key
        suffix = f":{day[0].isoformat()}" if day else ""
        return f"{self._prefix}{scope.value}:{kind}{suffix}:{owner}"

    def _now(self) -> datetime:
        now = self._wall_clock()
        if now.tzinfo is None:
            raise ValueError("wall_clock must return a timezone-aware datetime")
        return now.astimezone(UTC)


def _wait(text: str) -> float:
    return math.inf if text == "inf" else float(text)
