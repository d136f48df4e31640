"""The observer: one call per thing worth counting, made by the request pipeline's stages and by
the workers. The default does nothing; metrics and traces implement it (the observability
issue). Calls come from the event loop (stages) and from worker threads (batches, queue waits),
so an implementation must be thread-safe and must never raise or block.

`model` is the version that runs (`name@vN`) wherever the caller knows it; `request_started`
and `request_finished` get the model the client asked for, and the latter the `version` that
answered."""

from __future__ import annotations

import logging
import threading
from typing import Any, Protocol

log = logging.getLogger("genloom.telemetry")


class Observer(Protocol):
    def request_started(self, *, route: str, model: str, tier: str) -> None: ...

    def request_finished(
        self, *, route: str, model: str, version: str, tier: str, status: str, duration_s: float, tenant: str = "",
    ) -> None: ...

    def queue_wait(self, *, model: str, request_class: str, tier: str, seconds: float) -> None: ...

    def first_token(self, *, model: str, seconds: float) -> None: ...

    def tokens(self, *, model: str, prompt: int, completion: int) -> None: ...

    def batch_formed(self, *, model: str, size: int) -> None: ...

    def cache_lookup(self, *, kind: str, hit: bool) -> None: ...

    def fallback(self, *, from_model: str, to_model: str) -> None: ...

    def rollout_arm(self, *, model: str, version: str, arm: str) -> None: ...

    def guard_decision(self, *, scanner: str, stage: str, action: str) -> None: ...

    def time_per_output_token(self, *, model: str, seconds: float) -> None: ...

    def images_generated(self, *, model: str, count: int) -> None: ...

    def rate_limited(self, *, limit: str) -> None: ...

    def job_retried(self, *, model: str) -> None: ...

    def webhook_delivery(self, *, result: str) -> None: ...

    def rollout_ended(self, *, model: str, outcome: str) -> None: ...

    def feedback(self, *, model: str, version: str, score: float) -> None: ...


EVENTS = frozenset(name for name in vars(Observer) if not name.startswith("_"))


class _NoObserver:
    """Counts nothing, at the cost of a method call (a misspelt event still fails loudly)."""

    def __getattr__(self, name: str) -> Any:
        if name not in EVENTS:
            raise AttributeError(f"the observer has no event '{name}'")
        return _ignore


def _ignore(**_: Any) -> None:
    return None


NO_OBSERVER: Observer = _NoObserver()  # type: ignore[assignment]


class FanOut:
    """Several observers as one; one that raises is logged and the others still hear."""

    def __init__(self, observers: list[Observer]) -> None:
        self._observers = list(observers)

    def __getattr__(self, name: str) -> Any:
        if name not in EVENTS:
            raise AttributeError(f"the observer has no event '{name}'")
        targets = [getattr(o, name) for o in self._observers]

        def call(**fields: Any) -> None:
            for target in targets:
                try:
                    target(**fields)
                except Exception:
                    log.exception("an observer failed on %s", name)

        return call


def combine(*observers: Observer | None) -> Observer:
    present = [o for o in observers if o is not None]
    if not present:
        return NO_OBSERVER
    return present[0] if len(present) == 1 else FanOut(present)  # type: ignore[return-value]


class RecordingObserver:
    """Keeps every call as (name, fields), for tests and for debugging a pipeline by hand."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        if name not in EVENTS:
            raise AttributeError(f"the observer has no event '{name}'")

        def record(**fields: Any) -> None:
            with self._lock:
                self.calls.append((name, fields))

        return record

    def named(self, name: str) -> list[dict[str, Any]]:
        with self._lock:
            return [fields for called, fields in self.calls if called == name]
