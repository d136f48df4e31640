"""Running rollouts: start, observe outcomes, apply the gates' decisions, promote, roll back.
The policy is `rollout.py`; this class holds the windows of outcomes and writes each decision
to the registry (the database), so every replica and a restart see the same state.

Embedded, a rollout's outcomes are judged in process (`OutcomeWindow`); scaled out, every API
replica counts them in Redis and judges them all (`RedisOutcomes`). A decision is written only
if the rollout is still in the state it was judged in, so two replicas deciding at once apply
one; the others read it back on the registry's change channel."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime
from typing import Any, Protocol

from genloom.registry.catalog import Resolution
from genloom.registry.registry import ModelRegistry, utc_now
from genloom.registry.rollout import (
    Feedback,
    Decision,
    Outcome,
    OutcomeWindow,
    RolloutPlan,
    RolloutRecord,
    RolloutState,
    RolloutStrategy,
    ShadowPair,
    Verdict,
    WindowFigures,
    after,
    decide,
    shadow_figures,
)
from genloom.registry.versions import PRODUCTION, RegistryConflict, UnknownModel, version_key
from genloom.telemetry import NO_OBSERVER, Observer

log = logging.getLogger("genloom.rollouts")
_FIGURES_EVERY_S = 5.0  # how often passing figures are written (decisions are written at once)
_FEEDBACK_EVERY_S = 2.0  # how often a feedback gate's ratings are read again
_WARM_WAIT_S = 300.0  # how long a blue-green switch waits for its candidate to load
_MAX_PAIRS = 1000  # shadow pairs kept per rollout (the latest)
_SHARED_EVERY_S = 0.2  # how often a replica reads a shared (Redis) window while outcomes arrive


class Outcomes(Protocol):
    """A rollout's window of outcomes: `OutcomeWindow` (this process) or `RedisOutcomes` (shared)."""

    shared: bool

    def add(self, outcome: Outcome, step: int) -> None: ...

    async def snapshot(self, now: float, step: int) -> WindowFigures: ...


class InvalidRollout(ValueError):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class RolloutNotFound(LookupError):
    pass


class RolloutService:
    def __init__(
        self, *, registry: ModelRegistry, loaded: Callable[[str], bool],
        warm: Callable[[str, int], Awaitable[None]] | None = None, clock: Callable[[], float] = time.time,
        windows: Callable[[RolloutRecord], Outcomes] | None = None, observer: Observer = NO_OBSERVER,
        feedback: Callable[[str, datetime], Awaitable[Feedback]] | None = None,
    ) -> None:
        """`loaded(key)`: whether this process can serve a version now; `warm(key, n)` sends it n
        warm-up requests (blue_green); `windows` makes a rollout's outcome window (in-process by
        default; `RedisOutcomes` to judge every replica's traffic together); `feedback(key, since)`:
        the ratings of a version's answers since then (read only for rollouts with a feedback gate)."""
        self._registry = registry
        self.feedback = feedback
        self._rated: dict[str, tuple[float, Feedback, Feedback]] = {}  # rollout id -> (read at, candidate, stable)
        self._loaded = loaded
        self._observer = observer
        self._warm = warm
        self._clock = clock
        self._new_window = windows or (lambda r: OutcomeWindow(window_s=r.plan.gates.window_s))
        self._windows: dict[str, Outcomes] = {}
        self._evaluating: set[str] = set()
        self._again: set[str] = set()
        self._pairs: dict[str, deque[ShadowPair]] = {}
        self._written: dict[str, float] = {}
        self._tasks: set[asyncio.Task] = set()

    async def start(self, name: str, *, strategy: RolloutStrategy, candidate: int, plan: RolloutPlan, actor: str) -> RolloutRecord:
        catalog = self._registry.catalog
        if name not in catalog.names():
            raise UnknownModel(name, catalog.names())
        stable = catalog.version(name)
        target = catalog.versions.get(version_key(name, candidate))
        if target is None:
            raise UnknownModel(version_key(name, candidate), sorted(k for k in catalog.versions if k.startswith(f"{name}@")))
        if candidate == stable.version:
            raise InvalidRollout(f"{target.key} already serves {name} (its production alias); register a new version", "candidate")
        if target.kind is not stable.kind:
            raise InvalidRollout(f"{target.key} is a {target.kind.value} model and {stable.key} a {stable.kind.value} one", "candidate")
        now = utc_now()
        state = RolloutState.WARMING if strategy is RolloutStrategy.BLUE_GREEN else RolloutState.COLLECTING
        record = RolloutRecord(
            id=f"rollout-{uuid.uuid4().hex[:16]}", name=name, strategy=strategy, stable=stable.version,
            candidate=candidate, plan=plan, state=state, created_by=actor, created_at=now, updated_at=now,
        )
        await self._registry.store.start_rollout(record)
        await self._registry.changed()
        if strategy is RolloutStrategy.BLUE_GREEN:
            self._spawn(self._switch_when_warm(record))
        return record

    async def current(self, name: str) -> RolloutRecord:
        """The active rollout, with the figures its gates see now."""
        record = self._registry.catalog.rollouts.get(name)
        if record is None:
            if name not in self._registry.catalog.names():
                raise UnknownModel(name, self._registry.catalog.names())
            raise RolloutNotFound(f"model {name} has no active rollout")
        if record.strategy is RolloutStrategy.BLUE_GREEN:
            return record
        figures = decide(record, await self._window(record).snapshot(self._clock(), record.step)).figures
        if record.strategy is RolloutStrategy.SHADOW:
            figures = figures | {"shadow": shadow_figures(list(self._pairs.get(record.id, ())))}
        return replace(record, figures=figures)

    def record_pair(self, rollout_id: str, pair: ShadowPair) -> None:
        """A shadow rollout's mirrored request, with the stable answer beside it."""
        self._pairs.setdefault(rollout_id, deque(maxlen=_MAX_PAIRS)).append(pair)

    async def history(self, name: str) -> list[RolloutRecord]:
        if name not in self._registry.catalog.names():
            raise UnknownModel(name, self._registry.catalog.names())
        return await self._registry.store.rollouts(name)

    async def promote(self, name: str, *, actor: str, reason: str | None = None) -> RolloutRecord:
        record = await self.current(name)
        done = replace(record, state=RolloutState.PROMOTED, reason=reason or f"promoted by {actor}", updated_at=utc_now())
        await self._finish(record, done, actor=actor, alias=(PRODUCTION, record.candidate))
        return done

    async def rollback(self, name: str, *, actor: str, reason: str | None = None) -> RolloutRecord:
        record = await self.current(name)
        done = replace(record, state=RolloutState.ROLLED_BACK, reason=reason or f"rolled back by {actor}", updated_at=utc_now())
        switched_back = (PRODUCTION, record.stable) if record.state is RolloutState.SWITCHED else None
        await self._finish(record, done, actor=actor, alias=switched_back)
        return done

    async def _finish(self, record: RolloutRecord, done: RolloutRecord, *, actor: str, alias: tuple[str, int] | None) -> None:
        if not await self._registry.store.update_rollout(done, actor=actor, expect=record.state, alias=alias):
            raise RegistryConflict(f"rollout {record.id} changed meanwhile; read it again")
        self._observer.rollout_ended(model=record.name, outcome=done.state.value)
        self._forget(record.id)
        await self._registry.changed()

    def _forget(self, rollout_id: str) -> None:
        """An ended rollout's window and pairs are not needed any more (its figures are stored)."""
        self._windows.pop(rollout_id, None)
        self._pairs.pop(rollout_id, None)
        self._written.pop(rollout_id, None)

    def observe(self, resolution: Resolution, outcome: Outcome) -> None:
        """One request's outcome on a rollout arm (called on the event loop by the request path).
        An in-process window is judged here and now; only a decision to write leaves the request
        path (a task), as does judging a shared window, which needs Redis."""
        record = self._registry.catalog.rollouts.get(resolution.name)
        if record is None or record.id != resolution.rollout or not record.active or record.strategy is RolloutStrategy.BLUE_GREEN:
            return
        window = self._window(record)
        window.add(outcome, record.step)
        if record.name in self._evaluating:
            self._again.add(record.name)  # one more look when the running one is done
            return
        if isinstance(window, OutcomeWindow):
            now = self._clock()
            if not self._worth_writing(record, self._judge(record, window.figures_at(now, record.step)), now):
                return
        self._evaluating.add(record.name)
        self._spawn(self._evaluate(record.name))

    def _window(self, record: RolloutRecord) -> Outcomes:
        window = self._windows.get(record.id)
        if window is None:
            window = self._windows[record.id] = self._new_window(record)
        return window

    @staticmethod
    def _judge(record: RolloutRecord, figures: WindowFigures) -> Decision:
        decision = decide(record, figures)
        if record.strategy is RolloutStrategy.SHADOW and decision.verdict in (Verdict.ADVANCE, Verdict.PROMOTE):
            return Decision(Verdict.PASSING, "gates pass; a shadow rollout is promoted by hand", decision.figures)
        return decision

    def _worth_writing(self, record: RolloutRecord, decision: Decision, now: float) -> bool:
        """A decision, a change of state, or figures not written for `_FIGURES_EVERY_S`."""
        state = {Verdict.COLLECTING: RolloutState.COLLECTING, Verdict.PASSING: RolloutState.RUNNING}.get(decision.verdict)
        return state is None or state != record.state or now - self._written.get(record.id, 0.0) >= _FIGURES_EVERY_S

    async def _evaluate(self, name: str) -> None:
        """Judge the window and write what changed; outcomes that arrive meanwhile are judged
        once more after (a shared window at most every `_SHARED_EVERY_S`)."""
        try:
            while True:
                self._again.discard(name)
                record = self._registry.catalog.rollouts.get(name)
                if record is None or not record.active or record.strategy is RolloutStrategy.BLUE_GREEN:
                    return
                window = self._window(record)
                figures = await self._with_feedback(record, await window.snapshot(self._clock(), record.step))
                decision = self._judge(record, figures)
                await self._apply(record, decision)
                if name not in self._again:
                    return
                if window.shared:
                    await asyncio.sleep(_SHARED_EVERY_S)
        except Exception:
            log.exception("could not judge the rollout of %s", name)
        finally:
            self._evaluating.discard(name)

    async def _with_feedback(self, record: RolloutRecord, figures: WindowFigures) -> WindowFigures:
        """The arms' ratings since the rollout began, for a rollout whose gates ask for them (read
        from the store at most every `_FEEDBACK_EVERY_S`: every replica sees the same ratings)."""
        if self.feedback is None or record.plan.gates.min_feedback_score is None:
            return figures
        read = self._rated.get(record.id)
        if read is None or self._clock() - read[0] >= _FEEDBACK_EVERY_S:
            candidate = await self.feedback(version_key(record.name, record.candidate), record.created_at)
            stable = await self.feedback(version_key(record.name, record.stable), record.created_at)
            read = self._rated[record.id] = (self._clock(), candidate, stable)
        return replace(figures, candidate_feedback=read[1], stable_feedback=read[2])

    async def _apply(self, record: RolloutRecord, decision: Decision) -> None:
        now = self._clock()
        if not self._worth_writing(record, decision, now):
            return
        self._written[record.id] = now
        changed = after(record, decision, at=utc_now())
        moves = decision.verdict in (Verdict.ADVANCE, Verdict.PROMOTE, Verdict.ROLL_BACK)
        if moves:
            log.info("rollout %s of %s: %s (%s)", record.id, record.name, decision.verdict.value, decision.reason)
        self._registry.catalog.rollouts[record.name] = changed  # this process follows at once
        alias = (PRODUCTION, record.candidate) if decision.verdict is Verdict.PROMOTE else None
        written = await self._registry.store.update_rollout(changed, actor="rollout", expect=record.state, alias=alias)
        if changed.state.final:
            if written:  # counted once, by the replica whose decision stood
                self._observer.rollout_ended(model=record.name, outcome=changed.state.value)
            self._forget(record.id)
        if moves or not written:  # a decision, or another replica decided first: read it back
            await self._registry.changed()

    async def _switch_when_warm(self, record: RolloutRecord) -> None:
        """blue_green: wait until the candidate is loaded here, send it warm-up requests, then move
        the alias in one transaction; the old version stays loaded for `keep_previous_s`."""
        key = version_key(record.name, record.candidate)
        deadline = self._clock() + _WARM_WAIT_S
        try:
            while not self._loaded(key):
                if self._clock() > deadline:
                    raise TimeoutError(f"{key} did not load within {_WARM_WAIT_S:.0f} s")
                await asyncio.sleep(0.05)
            if self._warm is not None and record.plan.warmup_requests:
                await self._warm(key, record.plan.warmup_requests)
        except Exception as e:
            log.warning("blue-green rollout %s: %s", record.id, e)
            failed = replace(record, state=RolloutState.ROLLED_BACK, reason=f"warm-up failed: {e}", updated_at=utc_now())
            await self._registry.store.update_rollout(failed, actor="rollout", expect=RolloutState.WARMING)
            await self._registry.changed()
            return
        switched = replace(record, state=RolloutState.SWITCHED, reason=f"{key} warm; production switched", updated_at=utc_now())
        if await self._registry.store.update_rollout(switched, actor="rollout", expect=RolloutState.WARMING,
                                                     alias=(PRODUCTION, record.candidate)):
            await self._registry.changed()
            self._spawn(self._promote_after(switched))

    async def _promote_after(self, record: RolloutRecord) -> None:
        await asyncio.sleep(max(0.0, record.plan.keep_previous_s - (utc_now() - record.updated_at).total_seconds()))
        done = replace(record, state=RolloutState.PROMOTED, reason="kept the previous version for keep_previous_s", updated_at=utc_now())
        if await self._registry.store.update_rollout(done, actor="rollout", expect=RolloutState.SWITCHED):
            await self._registry.changed()

    def resume(self) -> None:
        """At start: a blue-green rollout left warming or switched goes on where it stopped."""
        for record in self._registry.catalog.rollouts.values():
            if record.state is RolloutState.WARMING:
                self._spawn(self._switch_when_warm(record))
            elif record.state is RolloutState.SWITCHED:
                self._spawn(self._promote_after(record))

    def _spawn(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
