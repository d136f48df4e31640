from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
import redis.asyncio as aioredis

from genloom.gateway.errors import InvalidRequest
from genloom.gateway.rate_limit import (
    Admission,
    InMemoryRateLimiter,
    Limits,
    RateLimited,
    RateLimiter,
    RequestTooLarge,
    TokenBucket,
    openai_duration,
)
from genloom.gateway.redis_rate_limit import RedisRateLimiter
from tests.services import REDIS, REDIS_TIMEOUTS

UNLIMITED = Limits()


class FakeTime:
    """Both clocks a limiter reads, moved by hand: a monotonic one in seconds and a UTC wall clock."""

    def __init__(self, wall: datetime = datetime(2025, 3, 14, 12, 0, tzinfo=UTC)) -> None:
        self.now = 1000.0
        self.wall = wall

    def monotonic(self) -> float:
        return self.now

    def utc(self) -> datetime:
        return self.wall

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.wall += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeTime:
    return FakeTime()


# Every RateLimiter implementation must pass the tests that take `limiter`: the in-process one
# and the one shared through Redis (on the real server, under this test's own key prefix).
@pytest.fixture(params=["in-memory", "redis"])
async def limiter(request: pytest.FixtureRequest, clock: FakeTime) -> AsyncIterator[RateLimiter]:
    if request.param == "in-memory":
        yield InMemoryRateLimiter(clock=clock.monotonic, wall_clock=clock.utc)
        return
    client = aioredis.Redis.from_url(REDIS, decode_responses=True, **REDIS_TIMEOUTS)
    prefix = request.getfixturevalue("redis_prefix")
    yield RedisRateLimiter(client=client, prefix=prefix, clock=clock.monotonic, wall_clock=clock.utc)
    await client.aclose()


async def admit(
    limiter: RateLimiter,
    *,
    key: str = "k1",
    tenant: str = "acme",
    key_limits: Limits = UNLIMITED,
    tenant_limits: Limits = UNLIMITED,
    tokens: int = 0,
    images: int = 0,
) -> Admission:
    return await limiter.check(
        key_id=key, tenant_id=tenant, key_limits=key_limits, tenant_limits=tenant_limits, tokens=tokens, images=images
    )


def test_bucket_allows_a_burst_up_to_capacity_then_refuses(clock: FakeTime) -> None:
    bucket = TokenBucket(capacity=5, refill_per_s=1, clock=clock.monotonic)
    assert all(bucket.try_take(1).allowed for _ in range(5))
    refused = bucket.try_take(1)
    assert not refused.allowed and refused.remaining == 0 and refused.retry_after_s == 1


def test_bucket_refills_at_the_configured_rate(clock: FakeTime) -> None:
    bucket = TokenBucket(capacity=10, refill_per_s=2, clock=clock.monotonic)
    bucket.try_take(10)
    clock.advance(1.5)
    assert bucket.try_take(3).allowed
    assert not bucket.try_take(1).allowed
    clock.advance(100)
    assert bucket.try_take(10).allowed and not bucket.try_take(1).allowed


def test_bucket_retry_after_and_reset_are_exact(clock: FakeTime) -> None:
    bucket = TokenBucket(capacity=10, refill_per_s=2, clock=clock.monotonic)
    taken = bucket.try_take(8)
    assert (taken.remaining, taken.retry_after_s, taken.reset_s) == (2, 0, 4)
    refused = bucket.try_take(5)
    assert (refused.allowed, refused.remaining, refused.retry_after_s, refused.reset_s) == (False, 2, 1.5, 4)


def test_bucket_never_allows_more_than_its_capacity(clock: FakeTime) -> None:
    bucket = TokenBucket(capacity=10, refill_per_s=1, clock=clock.monotonic)
    refused = bucket.try_take(11)
    assert not refused.allowed and refused.exceeds_capacity and refused.retry_after_s == math.inf
    assert bucket.try_take(10).allowed  # the refusal took nothing


def test_give_back_refunds_but_never_past_capacity(clock: FakeTime) -> None:
    bucket = TokenBucket(capacity=10, refill_per_s=1, clock=clock.monotonic)
    bucket.try_take(6)
    bucket.give_back(4)
    assert bucket.peek(8).remaining == 0
    bucket.give_back(100)
    assert bucket.is_full() and bucket.peek(10).remaining == 0


def test_clock_going_backwards_adds_no_tokens(clock: FakeTime) -> None:
    bucket = TokenBucket(capacity=10, refill_per_s=1, clock=clock.monotonic)
    bucket.try_take(10)
    clock.now -= 50
    assert not bucket.try_take(1).allowed
    clock.now += 50  # back where it was: still nothing has refilled
    assert not bucket.try_take(1).allowed
    clock.now += 1
    assert bucket.try_take(1).allowed and not bucket.try_take(1).allowed


@pytest.mark.parametrize("capacity, refill_per_s", [(0, 1), (-1, 1), (10, 0), (math.inf, 1), (10, math.nan)])
def test_bucket_rejects_a_capacity_or_rate_that_is_not_positive(capacity: float, refill_per_s: float) -> None:
    with pytest.raises(ValueError, match="must be a finite number > 0"):
        TokenBucket(capacity=capacity, refill_per_s=refill_per_s, clock=lambda: 0.0)


def test_bucket_rejects_a_negative_amount(clock: FakeTime) -> None:
    bucket = TokenBucket(capacity=10, refill_per_s=1, clock=clock.monotonic)
    for method in (bucket.try_take, bucket.give_back, bucket.charge):
        with pytest.raises(ValueError, match="amount must be >= 0"):
            method(-1)


@pytest.mark.parametrize("value", [0, -5, 1.5, True])
def test_limits_reject_values_that_are_not_positive_integers(value: object) -> None:
    with pytest.raises(ValueError, match="tokens_per_minute must be a positive integer or None"):
        Limits(tokens_per_minute=value)  # type: ignore[arg-type]


async def test_requests_burst_up_to_the_limit_then_are_refused(limiter: RateLimiter) -> None:
    limits = Limits(requests_per_minute=5)
    for _ in range(5):
        await admit(limiter, key_limits=limits)
    with pytest.raises(RateLimited) as refused:
        await admit(limiter, key_limits=limits)
    assert (refused.value.scope, refused.value.limit) == ("key", "requests_per_minute")
    assert str(refused.value) == "API key 'k1' is over its limit of 5 requests per minute; retry in 12 s"


async def test_requests_refill_at_the_configured_rate(limiter: RateLimiter, clock: FakeTime) -> None:
    limits = Limits(requests_per_minute=60)
    for _ in range(60):
        await admit(limiter, key_limits=limits)
    clock.advance(0.5)
    with pytest.raises(RateLimited):
        await admit(limiter, key_limits=limits)
    clock.advance(0.5)
    await admit(limiter, key_limits=limits)
    with pytest.raises(RateLimited):
        await admit(limiter, key_limits=limits)
    clock.advance(3)
    for _ in range(3):
        await admit(limiter, key_limits=limits)


async def test_retry_after_for_requests_is_exact(limiter: RateLimiter, clock: FakeTime) -> None:
    limits = Limits(requests_per_minute=60)
    for _ in range(60):
        await admit(limiter, key_limits=limits)
    with pytest.raises(RateLimited) as refused:
        await admit(limiter, key_limits=limits)
    assert refused.value.retry_after_s == 1 and refused.value.headers["retry-after"] == "1"
    clock.advance(1)
    await admit(limiter, key_limits=limits)


async def test_retry_after_for_tokens_is_exact(limiter: RateLimiter, clock: FakeTime) -> None:
    limits = Limits(tokens_per_minute=1000)
    await admit(limiter, key_limits=limits, tokens=900)
    with pytest.raises(RateLimited) as refused:
        await admit(limiter, key_limits=limits, tokens=500)
    assert refused.value.retry_after_s == 24
    assert str(refused.value) == (
        "API key 'k1' is over its limit of 1000 tokens per minute (500 requested, 100 left); retry in 24 s"
    )
    clock.advance(23)
    with pytest.raises(RateLimited) as refused:
        await admit(limiter, key_limits=limits, tokens=500)
    assert refused.value.retry_after_s == 1
    clock.advance(1)
    await admit(limiter, key_limits=limits, tokens=500)


async def test_request_larger_than_the_token_limit_is_refused_as_too_large(limiter: RateLimiter) -> None:
    limits = Limits(tokens_per_minute=1000)
    with pytest.raises(RequestTooLarge) as refused:
        await admit(limiter, key_limits=limits, tokens=1001)
    assert isinstance(refused.value, InvalidRequest) and refused.value.param == "max_tokens"
    assert (refused.value.scope, refused.value.limit) == ("key", "tokens_per_minute")
    assert str(refused.value) == (
        "this request needs 1001 tokens but API key 'k1' is limited to 1000 tokens per minute; "
        "lower max_tokens or shorten the prompt"
    )
    await admit(limiter, key_limits=limits, tokens=1000)  # the refusal charged nothing


async def test_tenant_refusal_names_the_tenant_and_its_limit(limiter: RateLimiter) -> None:
    limits = Limits(requests_per_minute=60)
    for i in range(60):
        await admit(limiter, key=f"k{i}", tenant_limits=limits)
    with pytest.raises(RateLimited) as refused:
        await admit(limiter, key="another", tenant_limits=limits)
    assert (refused.value.scope, refused.value.limit) == ("tenant", "requests_per_minute")
    assert str(refused.value) == "tenant 'acme' is over its limit of 60 requests per minute; retry in 1 s"


async def test_the_tighter_of_key_and_tenant_limits_wins(limiter: RateLimiter) -> None:
    key_limits, tenant_limits = Limits(requests_per_minute=3), Limits(requests_per_minute=10)
    for _ in range(3):
        admission = await admit(limiter, key="k1", key_limits=key_limits, tenant_limits=tenant_limits)
    assert admission.headers["x-ratelimit-limit-requests"] == "3"
    with pytest.raises(RateLimited) as refused:
        await admit(limiter, key="k1", key_limits=key_limits, tenant_limits=tenant_limits)
    assert refused.value.scope == "key"
    for _ in range(3):
        await admit(limiter, key="k2", key_limits=key_limits, tenant_limits=tenant_limits)
    admission = await admit(limiter, key="k3", key_limits=Limits(requests_per_minute=100), tenant_limits=tenant_limits)
    assert admission.headers["x-ratelimit-limit-requests"] == "10"
    assert admission.headers["x-ratelimit-remaining-requests"] == "3"


async def test_tenant_refusal_does_not_charge_the_key(limiter: RateLimiter) -> None:
    key_limits = Limits(requests_per_minute=3, tokens_per_minute=1000)
    tenant_limits = Limits(requests_per_minute=100, tokens_per_minute=500)
    await admit(limiter, key="k2", key_limits=key_limits, tenant_limits=tenant_limits, tokens=500)
    for _ in range(5):
        with pytest.raises(RateLimited) as refused:
            await admit(limiter, key="k1", key_limits=key_limits, tenant_limits=tenant_limits, tokens=300)
        assert (refused.value.scope, refused.value.limit) == ("tenant", "tokens_per_minute")
    # The same key under a tenant without limits still has its whole burst of requests and tokens.
    admission = await admit(limiter, key="k1", tenant="other", key_limits=key_limits, tokens=1000)
    assert admission.headers["x-ratelimit-remaining-requests"] == "2"
    assert admission.headers["x-ratelimit-remaining-tokens"] == "0"


async def test_key_refusal_does_not_charge_the_tenant(limiter: RateLimiter) -> None:
    key_limits, tenant_limits = Limits(requests_per_minute=1), Limits(requests_per_minute=2)
    await admit(limiter, key="k1", key_limits=key_limits, tenant_limits=tenant_limits)
    for _ in range(5):
        with pytest.raises(RateLimited):
            await admit(limiter, key="k1", key_limits=key_limits, tenant_limits=tenant_limits)
    admission = await admit(limiter, key="k2", key_limits=key_limits, tenant_limits=tenant_limits)
    assert admission.headers["x-ratelimit-remaining-requests"] == "0"


async def test_settle_refunds_unused_tokens_so_a_following_request_fits(limiter: RateLimiter) -> None:
    limits = Limits(tokens_per_minute=1000, tokens_per_day=1000)
    admission = await admit(limiter, key_limits=limits, tenant_limits=limits, tokens=800)
    with pytest.raises(RateLimited):
        await admit(limiter, key_limits=limits, tenant_limits=limits, tokens=500)
    await limiter.settle(admission, tokens_used=200)
    admission = await admit(limiter, key_limits=limits, tenant_limits=limits, tokens=500)
    assert admission.headers["x-ratelimit-remaining-tokens"] == "300"


async def test_settle_charges_extra_tokens_without_refusing(limiter: RateLimiter) -> None:
    limits = Limits(tokens_per_minute=1000)
    admission = await admit(limiter, key_limits=limits, tokens=100)
    await limiter.settle(admission, tokens_used=1600)
    with pytest.raises(RateLimited) as refused:
        await admit(limiter, key_limits=limits, tokens=100)
    assert refused.value.retry_after_s == 42  # 600 tokens of debt plus 100 at 1000 per minute


async def test_settle_corrects_the_daily_token_quota(limiter: RateLimiter) -> None:
    limits = Limits(tokens_per_day=2000)
    admission = await admit(limiter, tenant_limits=limits, tokens=100)
    await limiter.settle(admission, tokens_used=1600)
    with pytest.raises(RateLimited) as refused:
        await admit(limiter, tenant_limits=limits, tokens=500)
    assert "(1600 used, 500 requested)" in str(refused.value)
    admission = await admit(limiter, tenant_limits=limits, tokens=400)
    await limiter.settle(admission, tokens_used=0)
    await admit(limiter, tenant_limits=limits, tokens=400)


async def test_daily_token_quota_resets_at_utc_midnight(limiter: RateLimiter, clock: FakeTime) -> None:
    clock.wall = datetime(2025, 3, 14, 23, 0, tzinfo=UTC)
    limits = Limits(tokens_per_day=1000)
    await admit(limiter, tenant_limits=limits, tokens=1000)
    with pytest.raises(RateLimited) as refused:
        await admit(limiter, tenant_limits=limits, tokens=1)
    assert (refused.value.scope, refused.value.limit, refused.value.retry_after_s) == ("tenant", "tokens_per_day", 3600)
    assert str(refused.value) == (
        "tenant 'acme' has used up its daily quota of 1000 tokens (1000 used, 1 requested); "
        "it resets at 00:00 UTC, retry in 1 h"
    )
    clock.advance(3599)
    with pytest.raises(RateLimited):
        await admit(limiter, tenant_limits=limits, tokens=1)
    clock.advance(1)
    await admit(limiter, tenant_limits=limits, tokens=1000)


async def test_the_quota_day_is_the_utc_day_whatever_the_wall_clock_zone(limiter: RateLimiter, clock: FakeTime) -> None:
    clock.wall = datetime(2025, 3, 15, 1, 30, tzinfo=timezone(timedelta(hours=2)))  # 23:30 UTC on the 14th
    limits = Limits(images_per_day=1)
    await admit(limiter, tenant_limits=limits, images=1)
    with pytest.raises(RateLimited) as refused:
        await admit(limiter, tenant_limits=limits, images=1)
    assert refused.value.retry_after_s == 1800 and "retry in 30 min" in str(refused.value)


async def test_daily_image_quota_refuses_what_no_longer_fits_today(limiter: RateLimiter) -> None:
    limits = Limits(images_per_day=4)
    await admit(limiter, tenant_limits=limits, images=3)
    with pytest.raises(RateLimited) as refused:
        await admit(limiter, tenant_limits=limits, images=2)
    assert refused.value.limit == "images_per_day" and "used up its daily quota of 4 images" in str(refused.value)
    await admit(limiter, tenant_limits=limits, images=1)
    await admit(limiter, tenant_limits=limits, tokens=100)  # a request without images still passes
    with pytest.raises(RequestTooLarge) as too_large:
        await admit(limiter, tenant_limits=limits, images=5)
    assert too_large.value.param == "n" and "ask for fewer images" in str(too_large.value)


async def test_headers_carry_remaining_and_reset_in_openai_format(limiter: RateLimiter) -> None:
    admission = await admit(limiter, key_limits=Limits(requests_per_minute=500, tokens_per_minute=1000), tokens=100)
    assert admission.headers == {
        "x-ratelimit-limit-requests": "500",
        "x-ratelimit-remaining-requests": "499",
        "x-ratelimit-reset-requests": "120ms",
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "900",
        "x-ratelimit-reset-tokens": "6s",
    }
    admission = await admit(limiter, key="k2", key_limits=Limits(tokens_per_minute=100), tokens=100)
    assert admission.headers["x-ratelimit-reset-tokens"] == "1m0s"


async def test_refusal_headers_carry_retry_after_and_what_is_left(limiter: RateLimiter) -> None:
    limits = Limits(requests_per_minute=10, tokens_per_minute=1000)
    await admit(limiter, tenant_limits=limits, tokens=1000)
    with pytest.raises(RateLimited) as refused:
        await admit(limiter, tenant_limits=limits, tokens=10)
    assert refused.value.headers == {
        "x-ratelimit-limit-requests": "10",
        "x-ratelimit-remaining-requests": "9",
        "x-ratelimit-reset-requests": "6s",
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "0",
        "x-ratelimit-reset-tokens": "1m0s",
        "retry-after": "1",
    }


@pytest.mark.parametrize(
    "seconds, text",
    [(0, "0s"), (0.0001, "1ms"), (0.12, "120ms"), (1, "1s"), (1.5, "1.5s"), (360, "6m0s"), (3725, "1h2m5s")],
)
def test_reset_durations_are_written_like_openai(seconds: float, text: str) -> None:
    assert openai_duration(seconds) == text


async def test_a_limit_change_takes_effect_on_the_next_check(limiter: RateLimiter) -> None:
    for _ in range(2):
        await admit(limiter, key_limits=Limits(requests_per_minute=10))
    lowered = Limits(requests_per_minute=5)
    admission = await admit(limiter, key_limits=lowered)
    assert admission.headers["x-ratelimit-limit-requests"] == "5"
    assert admission.headers["x-ratelimit-remaining-requests"] == "4"  # 8 left, capped at the new 5
    for _ in range(4):
        await admit(limiter, key_limits=lowered)
    with pytest.raises(RateLimited) as refused:
        await admit(limiter, key_limits=lowered)
    assert refused.value.retry_after_s == 12
    with pytest.raises(RateLimited) as refused:  # raising the limit refills faster but adds no burst at once
        await admit(limiter, key_limits=Limits(requests_per_minute=20))
    assert refused.value.retry_after_s == 3


async def test_none_limits_are_unlimited(limiter: RateLimiter) -> None:
    for _ in range(1000):
        admission = await admit(limiter, tokens=1_000_000, images=100)
    assert admission.headers == {}
    await limiter.settle(admission, tokens_used=5_000_000)


async def test_concurrent_checks_admit_exactly_the_limit(limiter: RateLimiter) -> None:
    limits = Limits(requests_per_minute=10)
    results = await asyncio.gather(*(admit(limiter, key_limits=limits) for _ in range(100)), return_exceptions=True)
    assert sum(isinstance(r, Admission) for r in results) == 10
    assert sum(isinstance(r, RateLimited) for r in results) == 90


async def test_bucket_memory_stays_bounded_after_many_keys_go_idle(clock: FakeTime) -> None:
    limiter = InMemoryRateLimiter(clock=clock.monotonic, wall_clock=clock.utc, sweep_every=100)
    limits = Limits(requests_per_minute=10, tokens_per_minute=1000)
    for i in range(5000):
        await admit(limiter, key=f"k{i}", key_limits=limits, tokens=10)
    assert limiter.tracked > 1000
    clock.advance(60)
    for _ in range(100):
        await admit(limiter, key="busy", tokens=1)
    assert limiter.tracked == 0


async def test_daily_counters_of_past_days_are_dropped(clock: FakeTime) -> None:
    limiter = InMemoryRateLimiter(clock=clock.monotonic, wall_clock=clock.utc, sweep_every=10)
    for i in range(50):
        await admit(limiter, tenant=f"t{i}", tenant_limits=Limits(tokens_per_day=100), tokens=1)
    assert limiter.tracked == 50
    clock.advance(24 * 3600)
    limiter.sweep()
    assert limiter.tracked == 0


async def test_check_refuses_a_naive_wall_clock(clock: FakeTime) -> None:
    limiter = InMemoryRateLimiter(clock=clock.monotonic, wall_clock=lambda: datetime(2025, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        await admit(limiter, tenant_limits=Limits(tokens_per_day=10), tokens=1)


async def test_pictures_never_made_give_their_daily_quota_back(limiter: RateLimiter) -> None:
    limits = Limits(images_per_day=4)
    failed = await admit(limiter, key_limits=limits, tenant_limits=limits, images=3)
    await limiter.settle(failed, tokens_used=0, images_made=0)  # the generation failed: all three back
    partly = await admit(limiter, key_limits=limits, tenant_limits=limits, images=4)
    await limiter.settle(partly, tokens_used=0, images_made=3)  # one of four was not made
    await admit(limiter, key_limits=limits, tenant_limits=limits, images=1)
    with pytest.raises(RateLimited):
        await admit(limiter, key_limits=limits, tenant_limits=limits, images=1)
    kept = await admit(limiter, tenant=other_tenant(), tenant_limits=Limits(images_per_day=2), images=2)
    await limiter.settle(kept, tokens_used=0)  # a token settlement leaves the images charged
    with pytest.raises(RateLimited):
        await admit(limiter, tenant=other_tenant(), tenant_limits=Limits(images_per_day=2), images=1)
    with pytest.raises(ValueError):
        await limiter.settle(kept, tokens_used=0, images_made=3)


def other_tenant() -> str:
    return "globex"


async def test_two_replicas_sharing_redis_admit_the_limit_once_not_twice(clock: FakeTime, redis_prefix: str) -> None:
    clients = [aioredis.Redis.from_url(REDIS, decode_responses=True, **REDIS_TIMEOUTS) for _ in range(2)]
    replicas = [RedisRateLimiter(client=c, prefix=redis_prefix, clock=clock.monotonic, wall_clock=clock.utc) for c in clients]
    limits = Limits(requests_per_minute=30)

    async def one(i: int) -> bool:
        try:
            await admit(replicas[i % 2], key_limits=limits)
        except RateLimited:
            return False
        return True

    try:
        results = await asyncio.gather(*(one(i) for i in range(100)))
        assert sum(results) == 30
        clock.advance(2)  # 30/min refills one request per two seconds, seen by both replicas
        assert [await one(0), await one(1)] == [True, False]
    finally:
        for c in clients:
            await c.aclose()
