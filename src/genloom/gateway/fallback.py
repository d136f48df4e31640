"""Which model a request tries next, and when: the fallback and retry policy as data, with no
I/O. A realtime request walks its chain within one call (`FallbackPlan`); an async job takes one
model per attempt (`job_target`), each attempt a stored retry with backoff.

The chain is the model the request resolved to, then its fallbacks (a rollout's candidate is
followed by the stable version's chain). Each model is tried up to `attempts_per_model` times,
a second try waiting `backoff(tries)` first; a model whose breaker is open is skipped at once,
as is one that failed in a way another try would not fix."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from genloom.gateway.breaker import CircuitBreaker


@dataclass(frozen=True)
class Attempt:
    model: str
    delay_s: float  # wait this long first (a second try on the same model)
    breaker: CircuitBreaker | None  # let this call through; expects exactly one verdict


class FallbackPlan:
    def __init__(
        self, *, chain: list[str], attempts_per_model: int, breakers: Mapping[str, CircuitBreaker],
        backoff: Callable[[int], float],
    ) -> None:
        self._order = [model for model in chain for _ in range(max(1, attempts_per_model))]
        self._breakers = breakers
        self._backoff = backoff
        self._next = 0
        self._tries: Counter[str] = Counter()
        self._skip: set[str] = set()
        self._last_failed: str | None = None
        self._pending: Attempt | None = None  # allowed by its breaker and not yet judged
        self.failures: list[str] = []

    def next(self) -> Attempt | None:
        """The next model to try, or None when the chain is spent (`failures` says why)."""
        self.abandon()
        while self._next < len(self._order):
            model = self._order[self._next]
            self._next += 1
            if model in self._skip:
                continue
            breaker = self._breakers.get(model)
            if breaker is not None and not breaker.allow():
                self.failures.append(f"{model}: skipped, its circuit breaker is open")
                continue
            delay = self._backoff(self._tries[model]) if self._last_failed == model else 0.0
            self._pending = Attempt(model, delay, breaker)
            return self._pending
        return None

    def unusable(self, attempt: Attempt, reason: str) -> None:
        """The model cannot take this request at all (unknown, too small): skip it for good."""
        self.failures.append(f"{attempt.model}: {reason}")
        self._skip.add(attempt.model)
        self.abandon()

    def failed(self, attempt: Attempt, message: str, *, retryable: bool) -> None:
        """It failed before producing anything: try again or go on down the chain."""
        self.failures.append(f"{attempt.model}: {message}")
        self._tries[attempt.model] += 1
        self._last_failed = attempt.model
        if not retryable:
            self._skip.add(attempt.model)
        self._verdict(attempt, ok=False)

    def answered(self, attempt: Attempt) -> None:
        """It produced output (or refused the request itself, which also means it works)."""
        self._verdict(attempt, ok=True)

    def broke(self, attempt: Attempt) -> None:
        """It failed after producing output: nothing more is tried, but the breaker hears of it."""
        self._verdict(attempt, ok=False)

    def abandon(self) -> None:
        """The pending attempt ends without a verdict (cancelled, refused by the queue)."""
        if self._pending is not None and self._pending.breaker is not None:
            self._pending.breaker.release()
        self._pending = None

    def _verdict(self, attempt: Attempt, *, ok: bool) -> None:
        if self._pending is attempt:
            if attempt.breaker is not None:
                (attempt.breaker.record_success if ok else attempt.breaker.record_failure)()
            self._pending = None


def job_target(chain: list[str], *, attempts: int, failed_before: bool) -> str:
    """The model an async job's next attempt runs on: after a failure, the next of its chain
    (one model per attempt), the last one keeping it."""
    return chain[min(attempts, len(chain) - 1)] if failed_before else chain[0]


def job_may_fall_back(chain: list[str], *, attempts: int, before_output: bool) -> bool:
    """Whether a failed job attempt has a fallback model left to try."""
    return before_output and attempts < len(chain)
