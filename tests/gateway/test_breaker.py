"""The circuit breaker's state machine, driven by a fake clock."""

from __future__ import annotations

import pytest

from genloom.gateway.breaker import BreakerSnapshot, BreakerState, CircuitBreaker


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def clock() -> FakeClock:
    return FakeClock()


def breaker(clock: FakeClock, **overrides) -> CircuitBreaker:
    settings = {"failure_threshold": 3, "window_s": 10.0, "open_s": 30.0, "clock": clock} | overrides
    return CircuitBreaker(**settings)


def fail(b: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        assert b.allow()
        b.record_failure()


def test_opens_after_threshold_failures_within_the_window(clock):
    b = breaker(clock)
    fail(b, 2)
    assert b.state is BreakerState.CLOSED and b.allow()

    b.record_failure()

    assert b.state is BreakerState.OPEN
    assert not b.allow()


def test_failures_older_than_the_window_age_out(clock):
    b = breaker(clock)
    fail(b, 2)
    clock.now += 10  # both failures are now exactly window_s old, which no longer counts

    b.record_failure()

    assert b.state is BreakerState.CLOSED
    assert b.snapshot().failures_in_window == 1


def test_successes_while_closed_do_not_reset_the_count(clock):
    b = breaker(clock)
    fail(b, 2)
    b.record_success()

    b.record_failure()

    assert b.state is BreakerState.OPEN


def test_half_open_after_open_s(clock):
    b = breaker(clock)
    fail(b, 3)
    clock.now += 29.9
    assert b.state is BreakerState.OPEN

    clock.now += 0.1

    assert b.state is BreakerState.HALF_OPEN


def test_half_open_lets_only_max_probes_through_at_once(clock):
    b = breaker(clock, half_open_max_probes=2)
    fail(b, 3)
    clock.now += 30

    assert [b.allow() for _ in range(3)] == [True, True, False]
    assert b.snapshot().probes_in_flight == 2


def test_probe_success_closes(clock):
    b = breaker(clock)
    fail(b, 3)
    clock.now += 30
    assert b.allow()

    b.record_success()

    assert b.state is BreakerState.CLOSED
    assert b.allow() and b.allow()
    assert b.snapshot().failures_in_window == 0


def test_probe_failure_reopens_for_another_open_s(clock):
    b = breaker(clock)
    fail(b, 3)
    clock.now += 30
    assert b.allow()

    b.record_failure()

    assert b.state is BreakerState.OPEN and not b.allow()
    clock.now += 29.9
    assert b.state is BreakerState.OPEN
    clock.now += 0.1
    assert b.state is BreakerState.HALF_OPEN and b.allow()


def test_released_probe_frees_its_slot(clock):
    b = breaker(clock)
    fail(b, 3)
    clock.now += 30
    assert b.allow() and not b.allow()

    b.release()

    assert b.allow()


def test_late_answers_while_open_change_nothing(clock):
    b = breaker(clock)
    fail(b, 3)
    opened_at = clock.now
    clock.now += 5

    b.record_success()
    b.record_failure()

    assert b.state is BreakerState.OPEN
    assert b.snapshot().opened_at == opened_at


def test_snapshot_describes_each_state(clock):
    b = breaker(clock)
    fail(b, 1)
    assert b.snapshot() == BreakerSnapshot(BreakerState.CLOSED, 1, None, None, 0)

    fail(b, 2)
    assert b.snapshot() == BreakerSnapshot(BreakerState.OPEN, 0, 1000.0, 1030.0, 0)

    clock.now = 1031.0
    assert b.snapshot() == BreakerSnapshot(BreakerState.HALF_OPEN, 0, 1000.0, 1031.0, 0)
    b.allow()
    assert b.snapshot() == BreakerSnapshot(BreakerState.HALF_OPEN, 0, 1000.0, None, 1)


def test_states_are_strings_listed_healthiest_first():
    assert [s.value for s in BreakerState] == ["closed", "half_open", "open"]
    assert BreakerState.OPEN == "open"


@pytest.mark.parametrize(
    "bad", [{"failure_threshold": 0}, {"window_s": 0}, {"open_s": -1}, {"half_open_max_probes": 0}]
)
def test_refuses_unusable_settings(clock, bad):
    with pytest.raises(ValueError):
        breaker(clock, **bad)
