"""Rollouts as pure policy: which arm a request takes, what the gates make of the figures, and
what happens next. No I/O here: the clock is passed in, outcomes are handed over as data, and
the service that owns the rollout stores what `decide` returns.

Strategies: canary (a share of traffic to the candidate, growing by steps), shadow (a share of
requests mirrored to the candidate; clients only ever see the stable version) and blue_green
(warm the candidate, then move the alias at once)."""

from __future__ import annotations

import hashlib
import math
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from enum import Enum
from typing import Any


class RolloutStrategy(str, Enum):
    CANARY = "canary"
    SHADOW = "shadow"
    BLUE_GREEN = "blue_green"


class RolloutState(str, Enum):
    """collecting (gates wait for `min_requests` per arm) ⇄ running (gates pass) → promoted |
    rolled_back; blue_green: warming → switched → promoted | rolled_back."""

    COLLECTING = "collecting"
    RUNNING = "running"
    WARMING = "warming"
    SWITCHED = "switched"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"

    @property
    def final(self) -> bool:
        return self in (RolloutState.PROMOTED, RolloutState.ROLLED_BACK)


class StickyBy(str, Enum):
    USER = "user"  # the request's `user` field (else its tenant)
    TENANT = "tenant"
    NONE = "none"  # each request decides afresh (by its id)


class Arm(str, Enum):
    STABLE = "stable"
    CANDIDATE = "candidate"


@dataclass(frozen=True, kw_only=True)
class Gates:
    """Limits the candidate must stay within, over the last `window_s` seconds. Absolute limits
    are None when not asked for; `max_latency_ratio` compares the candidate's median latency with
    the stable version's in the same window."""

    max_error_rate: float = 0.02
    max_p99_latency_ms: float | None = None
    max_ttft_p99_ms: float | None = None
    max_latency_ratio: float | None = 1.5
    min_requests: int = 50
    window_s: float = 300.0
    # Users' ratings of the candidate's answers since the rollout began (POST /v1/feedback, scores
    # on 0..1): below this mean, once `min_feedback` ratings are in, it is rolled back; with it set,
    # a canary is not promoted before `min_feedback` ratings.
    min_feedback_score: float | None = None
    min_feedback: int = 20


@dataclass(frozen=True, kw_only=True)
class RolloutPlan:
    percent: float = 10.0
    sticky_by: StickyBy = StickyBy.NONE
    steps: tuple[float, ...] = ()  # empty: one step at `percent`
    step_after_requests: int = 200  # candidate requests at a step, gates passing, before the next
    auto_promote: bool = True  # after the last step passes, move the alias
    gates: Gates = field(default_factory=Gates)
    warmup_requests: int = 3  # blue_green
    keep_previous_s: float = 600.0  # blue_green: the old version stays loaded for an instant rollback

    def __post_init__(self) -> None:
        for name, value in (("percent", self.percent), *((f"steps[{i}]", s) for i, s in enumerate(self.steps))):
            if not 0 < value <= 100:
                raise ValueError(f"{name} must be more than 0 and at most 100, not {value}")
        if list(self.steps) != sorted(self.steps):
            raise ValueError("steps must not decrease")

    def percent_at(self, step: int) -> float:
        return self.steps[step] if self.steps else self.percent

    @property
    def last_step(self) -> int:
        return max(0, len(self.steps) - 1)

    def as_json(self) -> dict[str, Any]:
        return asdict(self) | {"sticky_by": self.sticky_by.value, "steps": list(self.steps)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RolloutPlan:
        return cls(**(data | {
            "sticky_by": StickyBy(data["sticky_by"]), "steps": tuple(data["steps"]), "gates": Gates(**data["gates"]),
        }))


@dataclass(frozen=True, kw_only=True)
class RolloutRecord:
    id: str
    name: str
    strategy: RolloutStrategy
    stable: int
    candidate: int
    plan: RolloutPlan
    state: RolloutState
    created_by: str
    created_at: datetime
    updated_at: datetime
    step: int = 0
    reason: str | None = None
    figures: dict[str, Any] | None = None
    decisions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def percent(self) -> float:
        return self.plan.percent_at(self.step)

    @property
    def active(self) -> bool:
        return not self.state.final

    def public(self) -> dict[str, Any]:
        return {
            "object": "model.rollout", "id": self.id, "model": self.name, "strategy": self.strategy.value,
            "stable": f"{self.name}@v{self.stable}", "candidate": f"{self.name}@v{self.candidate}",
            "state": self.state.value, "percent": self.percent, "step": self.step, "plan": self.plan.as_json(),
            "reason": self.reason, "figures": self.figures, "decisions": self.decisions,
            "created_by": self.created_by, "created_at": int(self.created_at.timestamp()),
            "updated_at": int(self.updated_at.timestamp()),
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> RolloutRecord:
        return cls(
            id=row["id"], name=row["name"], strategy=RolloutStrategy(row["strategy"]), stable=row["stable"],
            candidate=row["candidate"], plan=RolloutPlan.from_json(row["plan"]), state=RolloutState(row["state"]),
            step=row["step"], reason=row["reason"], figures=row["figures"], decisions=list(row["decisions"]),
            created_by=row["created_by"], created_at=row["created_at"], updated_at=row["updated_at"],
        )


def split(rollout: RolloutRecord, *, request_id: str, user: str | None, tenant: str) -> Arm:
    """The arm of one request: a hash of its sticky key against the current percent, so every
    API replica (and every request of one user, when sticky) decides the same."""
    if rollout.strategy is RolloutStrategy.BLUE_GREEN:
        return Arm.STABLE  # the alias itself moves; no request is split
    sticky = {StickyBy.USER: user or f"tenant:{tenant}", StickyBy.TENANT: tenant, StickyBy.NONE: request_id}
    digest = hashlib.blake2b(f"{rollout.id}:{sticky[rollout.plan.sticky_by]}".encode(), digest_size=8).digest()
    point = int.from_bytes(digest, "big") / 2**64 * 100
    return Arm.CANDIDATE if point < rollout.percent else Arm.STABLE


@dataclass(frozen=True)
class Outcome:
    """One request on one arm: `ok` False when it failed (for the candidate, also when the
    client was answered by the stable version after the candidate failed)."""

    arm: Arm
    ok: bool
    latency_ms: float
    ttft_ms: float | None
    at: float  # seconds, from the caller's clock
    output_chars: int = 0


@dataclass(frozen=True)
class ShadowPair:
    """One mirrored request: both answers' lengths, and how alike they are (embedding cosine,
    None when no embedding model is served or the candidate failed)."""

    stable_chars: int
    candidate_chars: int
    similarity: float | None
    candidate_ok: bool


def shadow_figures(pairs: list[ShadowPair]) -> dict[str, Any]:
    ok = [p for p in pairs if p.candidate_ok]
    similar = [p.similarity for p in ok if p.similarity is not None]
    return {
        "pairs": len(pairs),
        "candidate_errors": len(pairs) - len(ok),
        "mean_stable_chars": round(sum(p.stable_chars for p in ok) / len(ok), 1) if ok else None,
        "mean_candidate_chars": round(sum(p.candidate_chars for p in ok) / len(ok), 1) if ok else None,
        "mean_similarity": round(sum(similar) / len(similar), 4) if similar else None,
        "pairs_with_similarity": len(similar),
    }


@dataclass(frozen=True)
class ArmFigures:
    requests: int
    errors: int
    p50_latency_ms: float | None
    p99_latency_ms: float | None
    p99_ttft_ms: float | None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def as_json(self) -> dict[str, Any]:
        return asdict(self) | {"error_rate": round(self.error_rate, 4)}


@dataclass(frozen=True)
class Feedback:
    """Ratings of one version's answers: how many, and their mean score (0..1)."""

    count: int = 0
    mean_score: float | None = None


@dataclass(frozen=True)
class WindowFigures:
    """What the gates judge: each arm over the window, the candidate's requests at this step, and
    the ratings of each arm's answers since the rollout began."""

    candidate: ArmFigures
    stable: ArmFigures
    step_requests: int
    candidate_feedback: Feedback = Feedback()
    stable_feedback: Feedback = Feedback()


class OutcomeWindow:
    """The outcomes of the last `window_s` seconds per arm, plus the candidate's count per step,
    in this process. Counts are kept as they come and go (latencies in bins, as `RedisOutcomes`
    keeps them), so judging the window costs the same whatever its size."""

    shared = False

    def __init__(self, *, window_s: float, max_per_arm: int = 100_000) -> None:
        self._window_s = window_s
        self._max_per_arm = max_per_arm
        self._arms = {arm: _ArmCounts() for arm in Arm}
        self._steps: dict[int, int] = {}

    def add(self, outcome: Outcome, step: int) -> None:
        counts = self._arms[outcome.arm]
        counts.add(outcome)
        if len(counts.outcomes) > self._max_per_arm:
            counts.drop_oldest()
        if outcome.arm is Arm.CANDIDATE:
            self._steps[step] = self._steps.get(step, 0) + 1

    async def snapshot(self, now: float, step: int) -> WindowFigures:
        return self.figures_at(now, step)

    def figures_at(self, now: float, step: int) -> WindowFigures:
        return WindowFigures(self.figures(Arm.CANDIDATE, now), self.figures(Arm.STABLE, now), self._steps.get(step, 0))

    def figures(self, arm: Arm, now: float) -> ArmFigures:
        counts = self._arms[arm]
        while counts.outcomes and counts.outcomes[0].at < now - self._window_s:
            counts.drop_oldest()
        return ArmFigures(
            requests=len(counts.outcomes), errors=counts.errors, p50_latency_ms=bin_quantile(counts.latency, 0.5),
            p99_latency_ms=bin_quantile(counts.latency, 0.99), p99_ttft_ms=bin_quantile(counts.ttft, 0.99),
        )


class _ArmCounts:
    def __init__(self) -> None:
        self.outcomes: deque[Outcome] = deque()
        self.errors = 0
        self.latency: dict[int, int] = {}
        self.ttft: dict[int, int] = {}

    def add(self, o: Outcome) -> None:
        self.outcomes.append(o)
        self._count(o, 1)

    def drop_oldest(self) -> None:
        self._count(self.outcomes.popleft(), -1)

    def _count(self, o: Outcome, by: int) -> None:
        if not o.ok:
            self.errors += by
            return
        _bump(self.latency, latency_bin(o.latency_ms), by)
        if o.ttft_ms is not None:
            _bump(self.ttft, latency_bin(o.ttft_ms), by)


def _bump(counts: dict[int, int], key: int, by: int) -> None:
    left = counts.get(key, 0) + by
    if left:
        counts[key] = left
    else:
        counts.pop(key, None)


# Windows keep latencies as counts per bin: bin i holds (1.1^(i-1), 1.1^i] ms, so a quantile
# read back is at most 10% above the true one.
_BIN_GROWTH = 1.1


def latency_bin(ms: float) -> int:
    return max(0, math.ceil(math.log(max(ms, 1e-3)) / math.log(_BIN_GROWTH)))


def bin_quantile(counts: dict[int, int], q: float) -> float | None:
    total = sum(counts.values())
    if not total:
        return None
    rank, seen = math.ceil(q * total), 0
    for i in sorted(counts):
        seen += counts[i]
        if seen >= rank:
            return round(_BIN_GROWTH**i, 3)
    return None


class Verdict(str, Enum):
    COLLECTING = "collecting"  # not enough requests yet to judge
    PASSING = "passing"
    ADVANCE = "advance"  # to the next step
    PROMOTE = "promote"
    ROLL_BACK = "roll_back"


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str
    figures: dict[str, Any]


def decide(rollout: RolloutRecord, window: WindowFigures) -> Decision:
    """What the gates make of the window's figures. A breach that more requests could not undo
    (more errors than `max_error_rate` allows in `min_requests`) decides at once; the rest wait
    for `min_requests` on the candidate (and on the stable arm, for relative gates)."""
    g = rollout.plan.gates
    candidate, stable, step_requests = window.candidate, window.stable, window.step_requests
    figures = {"candidate": candidate.as_json(), "stable": stable.as_json(), "step_requests": step_requests,
               "candidate_feedback": asdict(window.candidate_feedback), "stable_feedback": asdict(window.stable_feedback)}
    allowed_errors = g.max_error_rate * max(g.min_requests, candidate.requests)
    if candidate.errors > allowed_errors and (candidate.requests >= g.min_requests or candidate.errors > g.max_error_rate * g.min_requests):
        reason = f"candidate error rate {candidate.error_rate:.3f} over max_error_rate {g.max_error_rate} ({candidate.errors} of {candidate.requests})"
        return Decision(Verdict.ROLL_BACK, reason, figures)
    rated = window.candidate_feedback
    if (g.min_feedback_score is not None and rated.count >= g.min_feedback and rated.mean_score is not None
            and rated.mean_score < g.min_feedback_score):
        reason = f"candidate mean feedback score {rated.mean_score:.3f} below min_feedback_score {g.min_feedback_score} ({rated.count} ratings)"
        return Decision(Verdict.ROLL_BACK, reason, figures)
    if candidate.requests < g.min_requests:
        return Decision(Verdict.COLLECTING, f"collecting: {candidate.requests} of {g.min_requests} candidate requests", figures)
    # Mirrored shadow work waits behind realtime requests, so its latency is not the stable arm's peer.
    relative = stable.requests >= g.min_requests and rollout.strategy is not RolloutStrategy.SHADOW
    breach = _absolute_breach(g, candidate) or (_relative_breach(g, candidate, stable) if relative else None)
    if breach:
        return Decision(Verdict.ROLL_BACK, breach, figures)
    if rollout.strategy is RolloutStrategy.CANARY and step_requests >= rollout.plan.step_after_requests:
        if rollout.step < rollout.plan.last_step:
            return Decision(Verdict.ADVANCE, f"step {rollout.step} passed its gates over {step_requests} candidate requests", figures)
        if rollout.plan.auto_promote:
            if g.min_feedback_score is not None and rated.count < g.min_feedback:
                return Decision(Verdict.PASSING, f"gates pass; waiting for {g.min_feedback} ratings of the candidate "
                                f"({rated.count} so far)", figures)
            return Decision(Verdict.PROMOTE, f"the last step passed its gates over {step_requests} candidate requests", figures)
    return Decision(Verdict.PASSING, "gates pass", figures)


def _absolute_breach(g: Gates, c: ArmFigures) -> str | None:
    if g.max_p99_latency_ms is not None and c.p99_latency_ms is not None and c.p99_latency_ms > g.max_p99_latency_ms:
        return f"candidate p99 latency {c.p99_latency_ms} ms over max_p99_latency_ms {g.max_p99_latency_ms}"
    if g.max_ttft_p99_ms is not None and c.p99_ttft_ms is not None and c.p99_ttft_ms > g.max_ttft_p99_ms:
        return f"candidate p99 time to first token {c.p99_ttft_ms} ms over max_ttft_p99_ms {g.max_ttft_p99_ms}"
    return None


def _relative_breach(g: Gates, c: ArmFigures, s: ArmFigures) -> str | None:
    if g.max_latency_ratio is None or not c.p50_latency_ms or not s.p50_latency_ms:
        return None
    ratio = c.p50_latency_ms / s.p50_latency_ms
    if ratio > g.max_latency_ratio:
        return f"candidate median latency {ratio:.2f}x the stable version's, over max_latency_ratio {g.max_latency_ratio}"
    return None


def after(rollout: RolloutRecord, decision: Decision, *, at: datetime) -> RolloutRecord:
    """The rollout once `decision` is applied (unchanged state for a verdict that changes nothing)."""
    entry = {"at": at.isoformat(), "verdict": decision.verdict.value, "reason": decision.reason, "step": rollout.step,
             "figures": decision.figures}
    changed = dict(updated_at=at, figures=decision.figures)
    if decision.verdict is Verdict.COLLECTING:
        return replace(rollout, state=RolloutState.COLLECTING, **changed)
    if decision.verdict is Verdict.PASSING:
        return replace(rollout, state=RolloutState.RUNNING, **changed)
    decisions = [*rollout.decisions, entry]
    if decision.verdict is Verdict.ADVANCE:
        return replace(rollout, state=RolloutState.RUNNING, step=rollout.step + 1, decisions=decisions, **changed)
    if decision.verdict is Verdict.PROMOTE:
        return replace(rollout, state=RolloutState.PROMOTED, reason=decision.reason, decisions=decisions, **changed)
    return replace(rollout, state=RolloutState.ROLLED_BACK, reason=decision.reason, decisions=decisions, **changed)
