"""Whether to call an upstream at all: a circuit breaker, a pure policy over an injected clock.

CLOSED lets every call through; `failure_threshold` failures within `window_s` seconds open it.
OPEN lets nothing through for `open_s` seconds, after which it is HALF_OPEN and lets up to
`half_open_max_probes` calls at once through as probes. A probe that succeeds closes it; one that
fails opens it again for another `open_s`. Callers ask `allow()` before each call and report
every call it allowed with exactly one of `record_success`, `record_failure` or `release`.
One breaker serves one event loop: it takes no locks.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum


class BreakerState(str, Enum):
    """Healthiest first, as a health page sorts them: CLOSED lets every call through, HALF_OPEN
    a few probes, OPEN none."""

    CLOSED = "closed"
    HALF_OPEN = "half_open"
    OPEN = "open"


@dataclass(frozen=True)
class BreakerSnapshot:
    state: BreakerState
    failures_in_window: int
    opened_at: float | None  # clock time it last opened; None while closed
    next_probe_at: float | None  # when a probe may next go through; None while closed or every probe slot is taken
    probes_in_flight: int


class CircuitBreaker:
    def __init__(
        self,
        *,
        failure_threshold: int,
        window_s: float,
        open_s: float,
        half_open_max_probes: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be >= 1, got {failure_threshold}")
        if not (math.isfinite(window_s) and window_s > 0):
            raise ValueError(f"window_s must be > 0, got {window_s}")
        if not (math.isfinite(open_s) and open_s > 0):
            raise ValueError(f"open_s must be > 0, got {open_s}")
        if half_open_max_probes < 1:
            raise ValueError(f"half_open_max_probes must be >= 1, got {half_open_max_probes}")
        self._window_s = window_s
        self._open_s = open_s
        self._max_probes = half_open_max_probes
        self._clock = clock
        # Only the newest `failure_threshold` failures can decide whether it opens.
        self._failures: deque[float] = deque(maxlen=failure_threshold)
        self._opened_at: float | None = None
        self._probes = 0

    @property
    def state(self) -> BreakerState:
        return self._state_at(self._clock())

    def allow(self) -> bool:
        """Whether a call may go through now; when HALF_OPEN, a True answer takes a probe slot."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN or self._probes >= self._max_probes:
            return False
        self._probes += 1
        return True

    def record_success(self) -> None:
        # While CLOSED a success resets nothing: failures leave by ageing out of the window. While OPEN,
        # a late answer to a call let through before it opened says little about the upstream now.
        if self.state is BreakerState.HALF_OPEN:
            self._failures.clear()
            self._opened_at = None
            self._probes = 0

    def record_failure(self) -> None:
        now = self._clock()
        state = self._state_at(now)
        if state is BreakerState.HALF_OPEN:
            self._open(now)
        elif state is BreakerState.CLOSED:
            self._failures.append(now)
            if len(self._failures) == self._failures.maxlen and self._in_window(self._failures[0], now):
                self._open(now)

    def release(self) -> None:
        """An allowed call ended without a verdict (it was cancelled): give back its probe slot."""
        if self.state is BreakerState.HALF_OPEN and self._probes > 0:
            self._probes -= 1

    def snapshot(self) -> BreakerSnapshot:
        now = self._clock()
        state = self._state_at(now)
        if state is BreakerState.OPEN:
            assert self._opened_at is not None
            next_probe_at: float | None = self._opened_at + self._open_s
        elif state is BreakerState.HALF_OPEN and self._probes < self._max_probes:
            next_probe_at = now
        else:
            next_probe_at = None
        return BreakerSnapshot(
            state=state,
            failures_in_window=sum(1 for t in self._failures if self._in_window(t, now)),
            opened_at=self._opened_at,
            next_probe_at=next_probe_at,
            probes_in_flight=self._probes if state is BreakerState.HALF_OPEN else 0,
        )

    def _state_at(self, now: float) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        return BreakerState.OPEN if now < self._opened_at + self._open_s else BreakerState.HALF_OPEN

    def _in_window(self, failed_at: float, now: float) -> bool:
        return now - failed_at < self._window_s

    def _open(self, now: float) -> None:
        self._failures.clear()
        self._opened_at = now
        self._probes = 0
