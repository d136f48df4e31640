"""The rollout policy without I/O: traffic split, gates, low-traffic collecting, steps."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime

from genloom.registry.catalog import Catalog
from genloom.registry.rollout import (
    Arm,
    Gates,
    Outcome,
    OutcomeWindow,
    RolloutPlan,
    RolloutRecord,
    RolloutState,
    RolloutStrategy,
    StickyBy,
    Verdict,
    after,
    bin_quantile,
    decide,
    latency_bin,
    split,
)
from genloom.registry.versions import ModelVersion, UnknownModel, VersionState
from genloom.config import ModelKind

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def rollout(**plan) -> RolloutRecord:
    strategy = plan.pop("strategy", RolloutStrategy.CANARY)
    return RolloutRecord(
        id="r1", name="m", strategy=strategy, stable=1, candidate=2, plan=RolloutPlan(**plan),
        state=RolloutState.COLLECTING, created_by="t", created_at=NOW, updated_at=NOW,
    )


def window(candidate: list[bool], stable: list[bool], latency_c: float = 10, latency_s: float = 10, step: int = 0) -> OutcomeWindow:
    w = OutcomeWindow(window_s=300)
    for ok in stable:
        w.add(Outcome(Arm.STABLE, ok, latency_s, 1.0, at=0.0), step)
    for ok in candidate:
        w.add(Outcome(Arm.CANDIDATE, ok, latency_c, 1.0, at=0.0), step)
    return w


def verdict(r: RolloutRecord, w: OutcomeWindow):
    return decide(r, asyncio.run(w.snapshot(1.0, r.step)))


def test_split_sends_about_percent_of_requests_to_the_candidate():
    r = rollout(percent=20)
    arms = [split(r, request_id=f"req-{i}", user=None, tenant="t") for i in range(10_000)]
    share = arms.count(Arm.CANDIDATE) / len(arms)
    assert 0.18 < share < 0.22


def test_sticky_by_user_keeps_one_user_on_one_arm_and_splits_users():
    r = rollout(percent=50, sticky_by=StickyBy.USER)
    for user in ("alice", "bob", "carol"):
        assert len({split(r, request_id=f"{user}-{i}", user=user, tenant="t") for i in range(50)}) == 1
    users = [split(r, request_id="x", user=f"user-{i}", tenant="t") for i in range(1000)]
    assert 400 < users.count(Arm.CANDIDATE) < 600


def test_gates_wait_for_min_requests_instead_of_deciding_on_three_samples():
    r = rollout(gates=Gates(min_requests=50, max_latency_ratio=None))
    d = verdict(r, window([True] * 3, [True] * 3))
    assert d.verdict is Verdict.COLLECTING and "3 of 50" in d.reason


def test_an_error_rate_over_the_gate_rolls_back_with_the_figures():
    r = rollout(gates=Gates(min_requests=50, max_error_rate=0.1))
    d = verdict(r, window([True] * 40 + [False] * 10, [True] * 50))
    assert d.verdict is Verdict.ROLL_BACK
    assert d.figures["candidate"]["errors"] == 10 and d.figures["candidate"]["requests"] == 50
    assert after(r, d, at=NOW).state is RolloutState.ROLLED_BACK


def test_a_breach_no_later_request_could_undo_decides_before_min_requests():
    r = rollout(gates=Gates(min_requests=50, max_error_rate=0.02))
    assert verdict(r, window([False], [])).verdict is Verdict.COLLECTING  # one error of 50 is within 2%
    assert verdict(r, window([False, False], [])).verdict is Verdict.ROLL_BACK  # two never can be


def test_a_slow_candidate_rolls_back_on_the_relative_latency_gate():
    r = rollout(gates=Gates(min_requests=20, max_latency_ratio=1.5))
    assert verdict(r, window([True] * 20, [True] * 20, latency_c=30, latency_s=10)).verdict is Verdict.ROLL_BACK
    assert verdict(r, window([True] * 20, [True] * 20, latency_c=12, latency_s=10)).verdict is Verdict.PASSING


def test_steps_advance_after_step_after_requests_and_promote_after_the_last():
    r = rollout(steps=(10, 50), step_after_requests=30, gates=Gates(min_requests=10, max_latency_ratio=None))
    d = verdict(r, window([True] * 30, [True] * 30))
    assert d.verdict is Verdict.ADVANCE
    r = after(r, d, at=NOW)
    assert r.step == 1 and r.percent == 50
    assert verdict(r, window([True] * 30, [True] * 30)).verdict is Verdict.PASSING  # nothing seen at step 1 yet
    assert verdict(r, window([True] * 30, [True] * 30, step=1)).verdict is Verdict.PROMOTE


def test_outcomes_older_than_the_window_no_longer_count():
    w = OutcomeWindow(window_s=60)
    w.add(Outcome(Arm.CANDIDATE, False, 5, None, at=0.0), 0)
    w.add(Outcome(Arm.CANDIDATE, True, 5, None, at=50.0), 0)
    assert asyncio.run(w.snapshot(55.0, 0)).candidate.errors == 1
    assert asyncio.run(w.snapshot(100.0, 0)).candidate.errors == 0


def test_binned_quantiles_are_within_ten_percent_of_the_exact_ones():
    latencies = [1 + (i * 7919 % 1000) for i in range(1000)]
    counts: dict[int, int] = {}
    for ms in latencies:
        counts[latency_bin(ms)] = counts.get(latency_bin(ms), 0) + 1
    exact = sorted(latencies)
    for q in (0.5, 0.99):
        true = exact[math.ceil(q * len(exact)) - 1]
        approx = bin_quantile(counts, q)
        assert true <= approx <= true * 1.1


def version(n: int, state: VersionState = VersionState.READY) -> ModelVersion:
    return ModelVersion(name="m", version=n, kind=ModelKind.TEXT, spec={}, revision="x", signature="x", metadata={}, state=state,
                        created_by="t", created_at=NOW)


def test_catalog_resolves_names_versions_and_aliases_and_splits_only_plain_names():
    r = rollout(percent=100)
    catalog = Catalog(versions={"m@v1": version(1), "m@v2": version(2)}, aliases={"m": {"production": 1, "staging": 2}},
                      rollouts={"m": r})
    assert catalog.resolve("m@v1", request_id="a").key == "m@v1"
    assert catalog.resolve("m@staging", request_id="a").key == "m@v2"
    plain = catalog.resolve("m", request_id="a")
    assert plain.key == "m@v2" and plain.arm is Arm.CANDIDATE and plain.stable == "m@v1"
    for ref in ("x", "m@v9", "m@nope"):
        try:
            catalog.resolve(ref, request_id="a")
        except UnknownModel as e:
            assert "m" in e.known
        else:
            raise AssertionError(f"{ref} resolved")


def test_a_feedback_gate_rolls_back_a_poorly_rated_candidate_and_holds_promotion_for_ratings():
    from dataclasses import replace

    from genloom.registry.rollout import Feedback

    r = rollout(gates=Gates(min_requests=10, min_feedback_score=0.6, min_feedback=5), step_after_requests=10)
    figures = asyncio.run(window([True] * 20, [True] * 20).snapshot(1.0, 0))
    few = decide(r, replace(figures, candidate_feedback=Feedback(count=3, mean_score=0.1)))
    assert few.verdict is Verdict.PASSING and "waiting for 5 ratings" in few.reason  # too few to judge, too few to promote
    bad = decide(r, replace(figures, candidate_feedback=Feedback(count=8, mean_score=0.4)))
    assert bad.verdict is Verdict.ROLL_BACK and "mean feedback score 0.400 below min_feedback_score 0.6" in bad.reason
    good = decide(r, replace(figures, candidate_feedback=Feedback(count=8, mean_score=0.9)))
    assert good.verdict is Verdict.PROMOTE and good.figures["candidate_feedback"] == {"count": 8, "mean_score": 0.9}
    early = decide(r, replace(asyncio.run(window([True] * 2, [True] * 2).snapshot(1.0, 0)),
                              candidate_feedback=Feedback(count=6, mean_score=0.0)))
    assert early.verdict is Verdict.ROLL_BACK  # ratings decide even before min_requests
    assert decide(rollout(gates=Gates(min_requests=10), step_after_requests=10), figures).verdict is Verdict.PROMOTE
