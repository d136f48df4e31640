"""Rate limits and daily quotas per API key and per tenant, checked before a request is queued.

A limit of N per minute is a token bucket of N that refills N/60 per second, so a client may
burst N and then runs at the steady rate. A daily quota is a counter per UTC calendar day,
reset at 00:00 UTC. `check` reserves the estimated cost (prompt + max_tokens) in every bucket
and counter that applies, or in none of them, and `settle` corrects the reservation once the
real token count is known. Time comes from injected clocks; an implementation over a shared
store answers the same `RateLimiter` protocol and passes the same tests."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, date, datetime, timedelta
from enum import Enum
from typing import Protocol

from genloom.gateway.errors import InvalidRequest
from genloom.telemetry import Observer

_EPSILON = 1e-9  # float noise in refills must not refuse a client that waited exactly retry_after


@dataclass(frozen=True)
class BucketResult:
    allowed: bool
    remaining: float  # the level after the take when allowed, else the current level
    retry_after_s: float  # until `amount` is available: 0 when allowed, inf when it exceeds capacity
    reset_s: float  # until the bucket is full again

    @property
    def exceeds_capacity(self) -> bool:
        return math.isinf(self.retry_after_s)


class TokenBucket:
    def __init__(self, *, capacity: float, refill_per_s: float, clock: Callable[[], float]) -> None:
        _check_rate(capacity, refill_per_s)
        self.capacity, self.refill_per_s, self._clock = capacity, refill_per_s, clock
        self._level, self._updated = capacity, clock()  # starts full

    def resize(self, *, capacity: float, refill_per_s: float) -> None:
        """Follow a limit change; the current level is kept, capped at the new capacity."""
        _check_rate(capacity, refill_per_s)
        self._refill()
        self.capacity, self.refill_per_s = capacity, refill_per_s
        self._level = min(self._level, capacity)

    def peek(self, amount: float) -> BucketResult:
        """What `try_take(amount)` would answer, without taking anything."""
        _check_amount(amount)
        self._refill()
        if amount > self.capacity:
            return BucketResult(False, self._level, math.inf, self._until(self.capacity))
        if amount <= max(self._level, 0.0) + _EPSILON:
            return BucketResult(True, self._level - amount, 0.0, self._until(self.capacity + amount))
        return BucketResult(False, self._level, self._until(amount), self._until(self.capacity))

    def try_take(self, amount: float) -> BucketResult:
        result = self.peek(amount)
        if result.allowed:
            self._level -= amount
        return result

    def give_back(self, amount: float) -> None:
        """Refund what a request reserved but did not use."""
        _check_amount(amount)
        self._refill()
        self._level = min(self.capacity, self._level + amount)

    def charge(self, amount: float) -> None:
        """Take without refusing, even below zero: work already done is paid for by the next requests."""
        _check_amount(amount)
        self._refill()
        self._level -= amount

    def is_full(self) -> bool:
        self._refill()
        return self._level >= self.capacity - _EPSILON

    def _until(self, level: float) -> float:
        return max(0.0, level - self._level) / self.refill_per_s

    def _refill(self) -> None:
        now = self._clock()
        if now > self._updated:  # a clock that steps back adds nothing, now or while it catches up
            self._level = min(self.capacity, self._level + (now - self._updated) * self.refill_per_s)
            self._updated = now


def _check_rate(capacity: float, refill_per_s: float) -> None:
    for name, value in (("capacity", capacity), ("refill_per_s", refill_per_s)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {value}")


def _check_amount(amount: float) -> None:
    if not amount >= 0:
        raise ValueError(f"amount must be >= 0, got {amount}")


@dataclass(frozen=True, kw_only=True)
class Limits:
    """The limits of one API key or one tenant; None means unlimited."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    tokens_per_day: int | None = None
    images_per_day: int | None = None

    @classmethod
    def of(cls, limits: Mapping[str, int]) -> Limits:
        """A tenant's or key's stored limits; others kept beside them (guard_blocks_per_hour) are not these."""
        names = {f.name for f in fields(cls)}
        return cls(**{name: value for name, value in limits.items() if name in names})

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise ValueError(f"{f.name} must be a positive integer or None, got {value!r}")


class LimitScope(str, Enum):
    KEY = "key"
    TENANT = "tenant"


class RateLimited(Exception):
    """A limit or quota refuses this request for now; the caller answers 429 with `headers`."""

    def __init__(self, message: str, *, retry_after_s: int, scope: LimitScope, limit: str, headers: Mapping[str, str]):
        super().__init__(message)
        self.retry_after_s, self.scope, self.limit = retry_after_s, scope, limit
        self.headers = {**headers, "retry-after": str(retry_after_s)}


class RequestTooLarge(InvalidRequest):
    """The request alone is over a limit, so no wait helps: a 400 rather than a 429 that clients retry."""

    def __init__(self, message: str, *, scope: LimitScope, limit: str) -> None:
        super().__init__(message, "max_tokens" if limit.startswith("tokens") else "n")
        self.scope, self.limit = scope, limit


BucketKey = tuple[LimitScope, str, str]  # (scope, key or tenant id, "requests" | "tokens")
DayKey = tuple[LimitScope, str, str, date]  # (scope, id, "tokens" | "images", UTC day)


@dataclass(frozen=True)
class Admission:
    """What `check` reserved, for `settle`, and the rate-limit headers to send with the response."""

    key_id: str
    tenant_id: str
    tokens: int
    images: int
    headers: Mapping[str, str]
    token_buckets: tuple[tuple[BucketKey, int], ...] = field(default=(), repr=False)  # with their limit then
    token_days: tuple[DayKey, ...] = field(default=(), repr=False)
    image_days: tuple[DayKey, ...] = field(default=(), repr=False)


class RateLimiter(Protocol):
    """Admission against limits; every implementation passes tests/gateway/test_rate_limit.py."""

    async def check(
        self, *, key_id: str, tenant_id: str, key_limits: Limits, tenant_limits: Limits, tokens: int, images: int = 0
    ) -> Admission: ...

    async def settle(self, admission: Admission, *, tokens_used: int, images_made: int | None = None) -> None: ...


@dataclass(frozen=True)
class _Verdict:
    """One limit's answer to one request, before anything is taken."""

    key: BucketKey | DayKey
    per: str  # "minute" for a bucket, "day" for a daily counter
    value: int
    amount: int
    left: float  # before this request
    wait_s: float  # 0 when it fits, inf when it never can
    bucket: TokenBucket | None = None
    after: float | None = None  # a bucket's level once the check is done (None: as `left`)

    @property
    def limit(self) -> str:
        return f"{self.key[2]}_per_{self.per}"


class InMemoryRateLimiter:
    """The limits of one process. Every `sweep_every` checks, full buckets and past days are dropped."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sweep_every: int = 1000,
    ) -> None:
        if sweep_every < 1:
            raise ValueError(f"sweep_every must be >= 1, got {sweep_every}")
        self._clock, self._wall_clock, self._sweep_every = clock, wall_clock, sweep_every
        self._buckets: dict[BucketKey, TokenBucket] = {}
        self._used: dict[DayKey, int] = {}
        self._checks = 0

    @property
    def tracked(self) -> int:
        """How many buckets and daily counters are held in memory."""
        return len(self._buckets) + len(self._used)

    async def check(
        self, *, key_id: str, tenant_id: str, key_limits: Limits, tenant_limits: Limits, tokens: int, images: int = 0
    ) -> Admission:
        if tokens < 0 or images < 0:
            raise ValueError(f"tokens and images must be >= 0, got {tokens} and {images}")
        self._checks += 1
        if self._checks % self._sweep_every == 0:
            self.sweep()
        now = self._now()
        verdicts = [
            *self._verdicts(LimitScope.KEY, key_id, key_limits, tokens=tokens, images=images, now=now),
            *self._verdicts(LimitScope.TENANT, tenant_id, tenant_limits, tokens=tokens, images=images, now=now),
        ]
        _refuse_if_over(verdicts)
        # No await between the peeks above and the takes below, so concurrent checks cannot overshoot.
        for v in verdicts:
            if v.bucket is not None:
                v.bucket.try_take(v.amount)
            else:
                self._used[v.key] = self._used.get(v.key, 0) + v.amount
        verdicts = [replace(v, after=v.bucket.peek(0).remaining) if v.bucket else v for v in verdicts]
        return admission(key_id, tenant_id, tokens, images, verdicts)

    async def settle(self, admission: Admission, *, tokens_used: int, images_made: int | None = None) -> None:
        """Correct the token reservation to the real count, and the image quota to the pictures
        made (None leaves it charged); call it once per admission."""
        if tokens_used < 0:
            raise ValueError(f"tokens_used must be >= 0, got {tokens_used}")
        if images_made is not None and not 0 <= images_made <= admission.images:
            raise ValueError(f"images_made must be in [0, {admission.images}], got {images_made}")
        unused = admission.tokens - tokens_used
        for key, value in admission.token_buckets:
            bucket = self._buckets.get(key) or self._bucket(key, value)  # a swept bucket was full
            if unused >= 0:
                bucket.give_back(unused)
            else:
                bucket.charge(-unused)
        today = self._now().date()
        for key in admission.token_days:
            if key[3] == today:  # a past day's quota is over; nothing is left to correct
                self._used[key] = max(0, self._used.get(key, 0) - unused)
        if images_made is not None:
            for key in admission.image_days:
                if key[3] == today:
                    self._used[key] = max(0, self._used.get(key, 0) - (admission.images - images_made))

    def sweep(self) -> None:
        """Drop full buckets (a new bucket starts full, so nothing is lost) and past days' counters."""
        self._buckets = {key: b for key, b in self._buckets.items() if not b.is_full()}
        today = self._now().date()
        self._used = {key: n for key, n in self._used.items() if key[3] >= today}

    def _verdicts(
        self, scope: LimitScope, owner: str, limits: Limits, *, tokens: int, images: int, now: datetime
    ) -> Iterator[_Verdict]:
        for kind, amount in (("requests", 1), ("tokens", tokens)):
            if (value := getattr(limits, f"{kind}_per_minute")) is not None:
                bucket = self._bucket((scope, owner, kind), value)
                r = bucket.peek(amount)
                left = r.remaining + amount if r.allowed else r.remaining
                yield _Verdict((scope, owner, kind), "minute", value, amount, left, r.retry_after_s, bucket)
        midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC)
        for kind, amount in (("tokens", tokens), ("images", images)):
            if (value := getattr(limits, f"{kind}_per_day")) is not None:
                key = (scope, owner, kind, now.date())
                left = value - self._used.get(key, 0)
                if amount > value:
                    wait = math.inf
                else:
                    wait = 0.0 if amount <= max(left, 0) else (midnight - now).total_seconds()
                yield _Verdict(key, "day", value, amount, left, wait)

    def _bucket(self, key: BucketKey, value: int) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(capacity=value, refill_per_s=value / 60, clock=self._clock)
        elif bucket.capacity != value:
            bucket.resize(capacity=value, refill_per_s=value / 60)
        return bucket

    def _now(self) -> datetime:
        now = self._wall_clock()
        if now.tzinfo is None:
            raise ValueError("wall_clock must return a timezone-aware datetime")
        return now.astimezone(UTC)


def admission(key_id: str, tenant_id: str, tokens: int, images: int, verdicts: list[_Verdict]) -> Admission:
    return Admission(
        key_id, tenant_id, tokens, images, _headers(verdicts),
        token_buckets=tuple((v.key, v.value) for v in verdicts if v.limit == "tokens_per_minute"),
        token_days=tuple(v.key for v in verdicts if v.limit == "tokens_per_day"),
        image_days=tuple(v.key for v in verdicts if v.limit == "images_per_day"),
    )


def _refuse_if_over(verdicts: list[_Verdict]) -> None:
    """Name the limit that makes the client wait longest, since it must wait for all of them."""
    if not (waits := [v for v in verdicts if v.wait_s > 0]):
        return
    v = max(waits, key=lambda v: v.wait_s)
    scope, owner, kind = v.key[:3]
    who = f"API key {owner!r}" if scope is LimitScope.KEY else f"tenant {owner!r}"
    if math.isinf(v.wait_s):
        hint = "lower max_tokens or shorten the prompt" if kind == "tokens" else "ask for fewer images"
        limit = f"{v.value} {v.limit.replace('_', ' ')}"
        message = f"this request needs {v.amount} {kind} but {who} is limited to {limit}; {hint}"
        raise RequestTooLarge(message, scope=scope, limit=v.limit)
    wait = max(1, math.ceil(v.wait_s - _EPSILON))
    if v.per == "day":
        message = (
            f"{who} has used up its daily quota of {v.value} {kind} ({int(v.value - v.left)} used, {v.amount} "
            f"requested); it resets at 00:00 UTC, retry in {_spoken(wait)}"
        )
    else:
        left = f" ({v.amount} requested, {_whole(v.left)} left)" if kind == "tokens" else ""
        message = f"{who} is over its limit of {v.value} {kind} per minute{left}; retry in {_spoken(wait)}"
    raise RateLimited(message, retry_after_s=wait, scope=scope, limit=v.limit, headers=_headers(verdicts))


def _headers(verdicts: list[_Verdict]) -> dict[str, str]:
    """OpenAI's x-ratelimit-* headers as the buckets stand now, each from the key or tenant with least left."""
    headers = {}
    for kind in ("requests", "tokens"):
        levels = [(v.left if v.after is None else v.after, v.value) for v in verdicts if v.per == "minute" and v.key[2] == kind]
        if levels:
            level, value = min(levels)
            headers[f"x-ratelimit-limit-{kind}"] = str(value)
            headers[f"x-ratelimit-remaining-{kind}"] = str(_whole(level))
            headers[f"x-ratelimit-reset-{kind}"] = openai_duration(max(0.0, value - level) / (value / 60))
    return headers


def openai_duration(seconds: float) -> str:
    """A wait written like OpenAI's reset headers (Go durations): "120ms", "1s", "1.5s", "6m0s", "1h0m0s"."""
    ms = math.ceil(seconds * 1000 - 1e-6)  # round up: a client that waits this long finds the bucket reset
    if ms <= 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{hours}h{minutes}m{secs}" if hours else f"{minutes}m{secs}" if minutes else secs


def _whole(level: float) -> int:
    return max(0, math.floor(level + _EPSILON))


def _spoken(seconds: int) -> str:
    parts = ((seconds // 3600, "h"), (seconds // 60 % 60, "min"), (seconds % 60, "s"))
    return " ".join(f"{n} {unit}" for n, unit in parts if n)


class ObservedLimiter:
    """A limiter that tells the observer each refusal (which limit), and otherwise is the limiter."""

    def __init__(self, limiter: RateLimiter, observer: Observer) -> None:
        self._limiter = limiter
        self._observer = observer

    async def check(
        self, *, key_id: str, tenant_id: str, key_limits: Limits, tenant_limits: Limits, tokens: int, images: int = 0
    ) -> Admission:
        try:
            return await self._limiter.check(
                key_id=key_id, tenant_id=tenant_id, key_limits=key_limits, tenant_limits=tenant_limits, tokens=tokens,
                images=images,
            )
        except (RateLimited, RequestTooLarge) as e:
            self._observer.rate_limited(limit=e.limit)
            raise

    async def settle(self, admission: Admission, *, tokens_used: int, images_made: int | None = None) -> None:
        await self._limiter.settle(admission, tokens_used=tokens_used, images_made=images_made)
