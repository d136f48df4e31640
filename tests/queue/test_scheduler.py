import itertools
from collections import Counter

import pytest

from genloom.queue.scheduler import Entry, QueueFull, Scheduler, SchedulerPolicy, TenantQueueFull, TierPolicy
from genloom.jobs import RequestClass, Tier

REALTIME, ASYNC = RequestClass.REALTIME, RequestClass.ASYNC
PREMIUM, STANDARD, FREE = Tier.PREMIUM, Tier.STANDARD, Tier.FREE


class SimClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


_ids = itertools.count()


def entry(
    tier: Tier = STANDARD,
    tenant: str = "t",
    request_class: RequestClass = ASYNC,
    *,
    id: str | None = None,
    cost: float = 1.0,
    rows: int = 1,
    not_before: float = 0.0,
) -> Entry:
    return Entry(
        id=id or f"{tier.value}-{tenant}-{next(_ids)}",
        request_class=request_class,
        tier=tier,
        tenant=tenant,
        cost=cost,
        rows=rows,
        not_before=not_before,
    )


def scheduler(clock: SimClock | None = None, **policy: object) -> Scheduler:
    return Scheduler(policy=SchedulerPolicy(**policy), clock=clock or SimClock())  # type: ignore[arg-type]


def tiers(**overrides: TierPolicy) -> dict[Tier, TierPolicy]:
    base = SchedulerPolicy().tiers
    return {tier: overrides.get(tier.value, base[tier]) for tier in Tier}


def pop_all(s: Scheduler) -> list[str]:
    out = []
    while (e := s.pop(max_rows=100)) is not None:
        out.append(e.id)
    return out


def test_realtime_always_goes_before_async_even_older_premium_async():
    clock = SimClock()
    s = scheduler(clock)
    for i in range(3):
        s.add(entry(PREMIUM, id=f"a{i}"))
    clock.now += 500  # the async entries are far past their max wait
    s.add(entry(FREE, request_class=REALTIME, id="r0"))
    s.add(entry(FREE, request_class=REALTIME, id="r1"))
    assert pop_all(s) == ["r0", "r1", "a0", "a1", "a2"]


def test_tier_shares_follow_weights_with_every_tier_backlogged():
    s = scheduler()
    for tier in Tier:
        for _ in range(10_000):
            s.add(entry(tier))
    served = Counter(s.pop(max_rows=1).tier for _ in range(10_000))
    for tier, weight in ((PREMIUM, 6), (STANDARD, 3), (FREE, 1)):
        assert served[tier] / 10_000 == pytest.approx(weight / 10, rel=0.1)


def test_tier_shares_of_cost_follow_weights_with_unequal_costs():
    s = scheduler()
    costs = {PREMIUM: 40.0, STANDARD: 7.0, FREE: 1.0}
    for tier in Tier:
        for _ in range(10_000):
            s.add(entry(tier, cost=costs[tier]))
    served: Counter[Tier] = Counter()
    for _ in range(10_000):
        e = s.pop(max_rows=1)
        served[e.tier] += e.cost
    total = sum(served.values())
    for tier, weight in ((PREMIUM, 6), (STANDARD, 3), (FREE, 1)):
        assert served[tier] / total == pytest.approx(weight / 10, rel=0.1)


def test_single_tenant_is_served_fifo_within_its_tier():
    clock = SimClock()
    s = scheduler(clock)
    ids = []
    for i in range(50):
        ids.append(f"e{i}")
        s.add(entry(STANDARD, id=ids[-1], cost=1 + i % 7))
        clock.now += 0.01
    assert pop_all(s) == ids


def wait_of_second_free_entry_under_premium_flood(free_max_wait_s: float) -> float:
    """Premium (weight 1000) is kept backlogged and one entry is served per simulated second. The
    first free entry spends free's fair-share turn, so the second one waits for aging or ~1000 pops."""
    clock = SimClock()
    policy = tiers(
        premium=TierPolicy(weight=1000, max_wait_s=3600), free=TierPolicy(weight=1, max_wait_s=free_max_wait_s)
    )
    s = scheduler(clock, tiers=policy)
    for _ in range(1000):
        s.add(entry(PREMIUM))
    s.add(entry(FREE, id="free0"))
    s.add(entry(FREE, id="free1"))
    added_at = clock.now
    for _ in range(3000):
        e = s.pop(max_rows=1)
        if e.id == "free1":
            return clock.now - added_at
        if e.tier == PREMIUM:
            s.add(entry(PREMIUM))
        clock.now += 1.0
    raise AssertionError("free1 was never served")


def test_aging_bounds_the_wait_of_the_free_tier_while_premium_floods():
    assert 120 <= wait_of_second_free_entry_under_premium_flood(free_max_wait_s=120) <= 120 + 1.0


def test_without_aging_the_flooded_free_tier_waits_for_its_weighted_turn():
    assert wait_of_second_free_entry_under_premium_flood(free_max_wait_s=3600) > 900


def test_a_flooding_tenant_gets_only_its_fair_share_within_a_tier():
    s = scheduler()
    for _ in range(3000):
        s.add(entry(STANDARD, tenant="a"))
    waiting = {"b": entry(STANDARD, tenant="b"), "c": entry(STANDARD, tenant="c")}
    for e in waiting.values():
        s.add(e)
    served: Counter[str] = Counter()
    for _ in range(1500):
        e = s.pop(max_rows=1)
        served[e.tenant] += 1
        if e.tenant != "a":  # b and c keep one entry waiting
            waiting[e.tenant] = entry(STANDARD, tenant=e.tenant)
            s.add(waiting[e.tenant])
    assert served["a"] / 1500 == pytest.approx(1 / 3, rel=0.02)
    for e in waiting.values():
        s.remove(e.id)
    assert {s.pop(max_rows=1).tenant for _ in range(500)} == {"a"}


def test_tenant_shares_are_by_cost_not_by_count():
    s = scheduler()
    for _ in range(2000):
        s.add(entry(STANDARD, tenant="big", cost=10))
        s.add(entry(STANDARD, tenant="small", cost=1))
    served: Counter[str] = Counter()
    for _ in range(1100):
        e = s.pop(max_rows=1)
        served[e.tenant] += e.cost
    assert served["big"] == pytest.approx(served["small"], rel=0.02)


def test_an_idle_tier_does_not_bank_its_missed_turns():
    s = scheduler()
    for _ in range(5000):
        s.add(entry(PREMIUM))
        s.add(entry(STANDARD))
    for _ in range(3000):  # free is idle all this time
        s.pop(max_rows=1)
    for _ in range(1000):
        s.add(entry(FREE))
    first = Counter(s.pop(max_rows=1).tier for _ in range(100))
    assert first[FREE] <= 12  # its 1/10 share, not a burst of the 300 turns it missed
    assert first[FREE] >= 8


def test_an_idle_tenant_does_not_bank_its_missed_turns():
    s = scheduler()
    for _ in range(3000):
        s.add(entry(tenant="a"))
    for _ in range(1000):
        s.pop(max_rows=1)
    for _ in range(100):
        s.add(entry(tenant="b"))
    first = Counter(s.pop(max_rows=1).tenant for _ in range(20))
    assert first == {"a": 10, "b": 10}


def test_admission_refuses_at_the_class_limit_with_retry_after():
    s = scheduler(max_queued={REALTIME: 4, ASYNC: 10}, tenant_max_share=1.0, retry_after_s=7)
    for _ in range(4):
        s.admit(entry(request_class=REALTIME))
    with pytest.raises(QueueFull) as e:
        s.admit(entry(request_class=REALTIME))
    assert (e.value.request_class, e.value.limit, e.value.retry_after_s) == (REALTIME, 4, 7)
    assert "realtime queue is full" in str(e.value) and "retry in 7 s" in str(e.value)
    s.admit(entry(request_class=ASYNC))  # the other class has its own limit
    s.pop(max_rows=1)
    s.admit(entry(request_class=REALTIME))  # a freed slot can be taken again


def test_admission_refuses_a_tenant_at_its_share_but_admits_others():
    s = scheduler(max_queued={REALTIME: 10, ASYNC: 10}, tenant_max_share=0.3, retry_after_s=2)
    for _ in range(3):
        s.admit(entry(tenant="greedy"))
    with pytest.raises(TenantQueueFull) as e:
        s.admit(entry(tenant="greedy"))
    assert (e.value.tenant, e.value.request_class, e.value.limit, e.value.retry_after_s) == ("greedy", ASYNC, 3, 2)
    assert "'greedy'" in str(e.value) and "retry in 2 s" in str(e.value)
    s.admit(entry(tenant="other"))
    s.admit(entry(tenant="greedy", request_class=REALTIME))
    assert s.tenant_depth("greedy", ASYNC) == 3


def test_tenant_limit_is_at_least_one_slot():
    s = scheduler(max_queued={REALTIME: 2, ASYNC: 2}, tenant_max_share=0.1)
    s.admit(entry(tenant="a"))
    with pytest.raises(TenantQueueFull):
        s.admit(entry(tenant="a"))


def test_add_bypasses_admission_but_not_duplicate_ids():
    s = scheduler(max_queued={REALTIME: 1, ASYNC: 1})
    for i in range(5):
        s.add(entry(tenant="a", id=f"x{i}"))
    assert s.depth(ASYNC) == 5
    with pytest.raises(QueueFull):
        s.admit(entry(tenant="b"))
    with pytest.raises(ValueError, match="x0"):
        s.add(entry(id="x0"))
    with pytest.raises(ValueError, match="x0"):
        s.admit(entry(id="x0"))


def test_entry_in_backoff_is_skipped_until_due_and_next_eligible_at_says_when():
    clock = SimClock()
    s = scheduler(clock)
    s.add(entry(PREMIUM, id="retry", not_before=clock.now + 5))
    s.add(entry(FREE, id="fresh"))
    assert s.depth() == 2 and s.next_eligible_at() == clock.now + 5
    assert s.pop(max_rows=1).id == "fresh"
    assert s.pop(max_rows=1) is None and s.peek() is None
    clock.now += 5
    assert s.peek().id == "retry"
    assert s.next_eligible_at() is None
    assert s.pop(max_rows=1).id == "retry"


def test_pop_returns_none_rather_than_skip_a_wide_entry():
    s = scheduler()
    s.add(entry(id="wide", rows=4))
    s.add(entry(id="narrow", rows=1))
    assert s.pop(max_rows=2) is None
    assert len(s) == 2 and s.peek().id == "wide"
    assert [s.pop(max_rows=4).id, s.pop(max_rows=4).id] == ["wide", "narrow"]


def test_a_removed_entry_is_never_popped_and_depth_updates():
    clock = SimClock()
    s = scheduler(clock)
    s.add(entry(id="a", tenant="x"))
    s.add(entry(id="b", tenant="x"))
    s.add(entry(id="c", tenant="y"))
    s.add(entry(id="later", not_before=clock.now + 1))
    assert s.remove("a").id == "a"
    assert s.remove("later").id == "later"
    assert s.remove("a") is None and s.remove("nope") is None
    assert "a" not in s and "b" in s
    assert (s.depth(), s.depth(ASYNC), s.tenant_depth("x", ASYNC)) == (2, 2, 1)
    clock.now += 2
    assert sorted(pop_all(s)) == ["b", "c"]
    assert s.depth() == 0 and s.next_eligible_at() is None


def test_a_removed_id_can_be_added_again():
    s = scheduler()
    s.add(entry(id="a"))
    s.remove("a")
    s.add(entry(id="a", tier=PREMIUM))
    assert s.pop(max_rows=1).tier == PREMIUM and len(s) == 0


def test_position_matches_the_actual_pop_order():
    clock = SimClock()
    s = scheduler(clock)
    ids = []
    for i in range(300):
        ids.append(f"e{i}")
        s.add(
            entry(
                list(Tier)[i % 3],
                tenant=f"t{i % 4}",
                request_class=REALTIME if i % 5 == 0 else ASYNC,
                cost=1 + i % 6,
                id=ids[-1],
                not_before=clock.now + 3 if i % 11 == 0 else 0.0,
            )
        )
        clock.now += 0.01
    s.remove("e7")
    s.remove("e12")
    positions = {i: s.position(i) for i in ids if i in s}
    order = []
    while len(s):
        e = s.pop(max_rows=1)
        if e is None:
            clock.now = s.next_eligible_at()
            continue
        order.append(e.id)
    assert positions == {i: n for n, i in enumerate(order, start=1)}
    assert s.position("e7") is None and s.position("unknown") is None


def test_policy_validation_names_the_bad_field():
    with pytest.raises(ValueError, match=r"tiers\['free'\].weight"):
        SchedulerPolicy(tiers=tiers(free=TierPolicy(weight=0, max_wait_s=1)))
    with pytest.raises(ValueError, match=r"tiers\['premium'\].max_wait_s"):
        SchedulerPolicy(tiers=tiers(premium=TierPolicy(weight=1, max_wait_s=-1)))
    with pytest.raises(ValueError, match="tiers: missing a policy for tier 'standard'"):
        SchedulerPolicy(tiers={PREMIUM: TierPolicy(weight=1, max_wait_s=1), FREE: TierPolicy(weight=1, max_wait_s=1)})
    with pytest.raises(ValueError, match=r"max_queued\['async'\]"):
        SchedulerPolicy(max_queued={REALTIME: 1, ASYNC: 0})
    with pytest.raises(ValueError, match="tenant_max_share"):
        SchedulerPolicy(tenant_max_share=0)
    with pytest.raises(ValueError, match="tenant_max_share"):
        SchedulerPolicy(tenant_max_share=1.5)
    with pytest.raises(ValueError, match="retry_after_s"):
        SchedulerPolicy(retry_after_s=-1)
    with pytest.raises(ValueError, match="cost"):
        entry(cost=0)


def test_ten_thousand_waiting_through_fifty_thousand_pops_and_cancellations_lose_nothing():
    s = scheduler()
    for i in range(10_000):
        s.add(entry(list(Tier)[i % 3], tenant=f"t{i % 50}"))
    for i in range(50_000):
        e = s.pop(max_rows=1)
        s.add(entry(e.tier, tenant=e.tenant))
        if i % 100 == 0:  # a cancellation, replaced by a newcomer
            cancelled = entry(tenant="late")
            s.add(cancelled)
            s.remove(cancelled.id)
            s.add(entry(tenant="late"))
    assert len(s) == s.depth() == 10_000 + 500
    assert sum(1 for _ in iter(lambda: s.pop(max_rows=1), None)) == 10_500
