"""The fallback and retry policy without I/O: order, backoff, skips, breakers, job attempts."""

from __future__ import annotations

from genloom.gateway.breaker import BreakerState, CircuitBreaker
from genloom.gateway.fallback import FallbackPlan, job_may_fall_back, job_target


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def plan(chain: list[str], attempts: int = 2, breakers=None) -> FallbackPlan:
    return FallbackPlan(chain=chain, attempts_per_model=attempts, breakers=breakers or {}, backoff=lambda tries: 0.1 * tries)


def test_each_model_is_tried_attempts_times_then_the_next_with_backoff_on_the_second_try():
    p = plan(["a", "b"])
    first = p.next()
    assert (first.model, first.delay_s) == ("a", 0.0)
    p.failed(first, "timeout", retryable=True)
    second = p.next()
    assert (second.model, second.delay_s) == ("a", 0.1)
    p.failed(second, "timeout", retryable=True)
    third = p.next()
    assert (third.model, third.delay_s) == ("b", 0.0)
    p.answered(third)
    assert p.failures == ["a: timeout", "a: timeout"]


def test_a_failure_another_try_cannot_fix_skips_the_rest_of_that_model():
    p = plan(["a", "b"], attempts=3)
    p.failed(p.next(), "401 from upstream", retryable=False)
    assert p.next().model == "b"


def test_an_unusable_model_is_skipped_and_an_exhausted_chain_ends_with_the_reasons():
    p = plan(["a", "b"], attempts=1)
    p.unusable(p.next(), "too small for this prompt")
    p.failed(p.next(), "503", retryable=True)
    assert p.next() is None
    assert p.failures == ["a: too small for this prompt", "b: 503"]


def test_an_open_breaker_is_skipped_and_every_allowed_call_gets_exactly_one_verdict():
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, window_s=60, open_s=30, clock=clock)
    p = plan(["remote", "local"], attempts=1, breakers={"remote": breaker})
    attempt = p.next()
    assert attempt.model == "remote"
    p.failed(attempt, "500", retryable=True)
    assert breaker.snapshot().state is BreakerState.OPEN
    p2 = plan(["remote", "local"], attempts=1, breakers={"remote": breaker})
    assert p2.next().model == "local" and p2.failures == ["remote: skipped, its circuit breaker is open"]
    clock.now = 31  # half open: one probe, released when abandoned
    p3 = plan(["remote"], attempts=1, breakers={"remote": breaker})
    probe = p3.next()
    assert probe.model == "remote" and breaker.snapshot().probes_in_flight == 1
    p3.abandon()
    assert breaker.snapshot().probes_in_flight == 0


def test_a_job_takes_one_model_per_attempt_and_the_last_keeps_it():
    chain = ["a", "b", "c"]
    assert job_target(chain, attempts=1, failed_before=False) == "a"
    assert [job_target(chain, attempts=n, failed_before=True) for n in (1, 2, 3, 4)] == ["b", "c", "c", "c"]
    assert job_may_fall_back(chain, attempts=2, before_output=True)
    assert not job_may_fall_back(chain, attempts=3, before_output=True)
    assert not job_may_fall_back(chain, attempts=1, before_output=False)
