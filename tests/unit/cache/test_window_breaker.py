"""The rolling hit-rate window and the circuit breaker's state machine."""

from __future__ import annotations

import pytest

from tollgate_cache.breaker import Breaker, State
from tollgate_cache.window import HitRateWindow


def test_hit_rate_is_zero_before_any_lookup() -> None:
    assert HitRateWindow(10).rate() == 0.0


def test_hit_rate_covers_only_the_last_n_lookups() -> None:
    w = HitRateWindow(4)
    for hit in (True, True, True, True):
        w.record(hit)
    assert w.rate() == 1.0
    w.record(False)
    w.record(False)
    assert w.rate() == 0.5  # the window is now T T F F
    for _ in range(4):
        w.record(False)
    assert w.rate() == 0.0
    assert w.count == 4


def test_partial_window_uses_the_lookups_seen() -> None:
    w = HitRateWindow(1000)
    w.record(True)
    w.record(False)
    w.record(False)
    assert w.rate() == pytest.approx(1 / 3)


def test_window_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="hit_rate_window"):
        HitRateWindow(0)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def st(b: Breaker) -> str:
    return b.state  # a plain str, so mypy does not narrow it across calls


def make() -> tuple[Breaker, Clock, list[tuple[State, State]]]:
    clock = Clock()
    changes: list[tuple[State, State]] = []
    b = Breaker(3, 5.0, clock=clock, on_change=lambda old, new: changes.append((old, new)))
    return b, clock, changes


def test_opens_after_consecutive_failures_only() -> None:
    b, _, _ = make()
    b.failure()
    b.failure()
    b.success()  # a success resets the count
    b.failure()
    b.failure()
    assert st(b) == "closed" and b.allow()
    b.failure()
    assert st(b) == "open"
    assert not b.allow()


def test_half_open_lets_exactly_one_probe_through_after_the_reset_period() -> None:
    b, clock, _ = make()
    for _ in range(3):
        b.failure()
    clock.now = 4.9
    assert not b.allow()
    clock.now = 5.0
    assert b.allow()
    assert st(b) == "half_open"
    assert not b.allow()  # the probe is in flight
    assert not b.allow()


def test_probe_success_closes_and_probe_failure_reopens_for_a_new_period() -> None:
    b, clock, changes = make()
    for _ in range(3):
        b.failure()
    clock.now = 5
    assert b.allow()
    b.failure()
    assert st(b) == "open"
    clock.now = 9.9
    assert not b.allow()
    clock.now = 10
    assert b.allow()
    b.success()
    assert st(b) == "closed" and b.allow()
    assert changes == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]


def test_a_probe_that_never_reports_back_is_replaced_after_a_period() -> None:
    b, clock, _ = make()
    for _ in range(3):
        b.failure()
    clock.now = 5
    assert b.allow()  # this probe gets cancelled: no success or failure
    clock.now = 9
    assert not b.allow()
    clock.now = 10
    assert b.allow()


def test_breaker_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        Breaker(0, 1)
    with pytest.raises(ValueError):
        Breaker(1, 0)
