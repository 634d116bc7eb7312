"""The circuit breaker: opens on a run of failures or a failure ratio, probes, recloses;
and guard(), the allow -> call -> verdict protocol written once."""

from __future__ import annotations

import asyncio

import pytest

from tollgate_common.breaker import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    BreakerConfig,
    BreakerOpen,
    CircuitBreaker,
    Guard,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(**kw: float) -> tuple[CircuitBreaker, Clock, list[tuple[int, int]]]:
    cfg = BreakerConfig(
        **{
            "consecutive_failures": 3,
            "failure_ratio": 0.5,
            "window_seconds": 10,
            "min_requests": 6,
            "cooldown_seconds": 5,
            **kw,
        }  # type: ignore[arg-type]
    )
    clock = Clock()
    changes: list[tuple[int, int]] = []
    b = CircuitBreaker(cfg, clock, lambda old, new: changes.append((old, new)))
    return b, clock, changes


def test_opens_after_consecutive_failures_and_skips_at_once() -> None:
    b, _, changes = make()
    for _ in range(2):
        assert b.allow()
        b.record_failure()
    assert b.state == CLOSED
    b.record_success()  # a success resets the run
    for _ in range(3):
        b.record_failure()
    assert b.state == OPEN
    assert changes == [(CLOSED, OPEN)]
    assert not b.allow()


def test_half_open_probe_closes_or_reopens() -> None:
    b, clock, changes = make()
    for _ in range(3):
        b.record_failure()
    clock.now += 5
    assert b.allow()  # the probe
    assert b.state == HALF_OPEN
    assert not b.allow()  # only one probe at a time
    b.record_failure()
    assert b.state == OPEN
    assert not b.allow()
    clock.now += 5
    assert b.allow()
    b.record_success()
    assert b.state == CLOSED
    assert changes == [(0, 2), (2, 1), (1, 2), (2, 1), (1, 0)]


def test_opens_on_failure_ratio_in_window() -> None:
    b, _, _ = make(consecutive_failures=100)
    for _ in range(3):
        b.record_success()
        b.record_failure()
    assert b.state == OPEN  # 3 of 6 failed


def test_late_outcomes_while_open_change_nothing() -> None:
    b, clock, _ = make()
    for _ in range(3):
        b.record_failure()
    b.record_success()  # a call let through before the circuit opened
    assert b.state == OPEN
    clock.now += 4
    b.record_failure()
    clock.now += 1
    assert b.allow()  # the cooldown was not extended by the late failure


def test_old_outcomes_leave_the_window() -> None:
    b, _, _ = make(consecutive_failures=100)
    for _ in range(5):
        b.record_failure()
        b.record_success()
    b2, clock2, _ = make(consecutive_failures=100)
    for _ in range(2):
        b2.record_failure()
    clock2.now += 20
    for _ in range(4):
        b2.record_success()
    b2.record_failure()
    assert b2.state == CLOSED  # 1 failure in 5 recent calls: the old ones fell out
    assert b.state == OPEN  # 4 failures in 7 calls


def test_release_frees_the_probe_without_a_verdict() -> None:
    b, clock, _ = make()
    for _ in range(3):
        b.record_failure()
    clock.now += 5
    assert b.allow()
    b.release()
    assert b.state == HALF_OPEN
    assert b.allow()  # a new probe may go


def test_a_lost_probe_does_not_wedge_half_open() -> None:
    b, clock, _ = make()
    for _ in range(3):
        b.record_failure()
    clock.now += 5
    assert b.allow()
    assert not b.allow()
    clock.now += 5  # the probe's caller vanished without a verdict
    assert b.allow()


# --- guard() ------------------------------------------------------------------------------------


def test_guard_records_success_and_failure_and_reraises() -> None:
    b, _, _ = make(consecutive_failures=2)
    with b.guard():
        pass
    for _ in range(2):
        with pytest.raises(ValueError), b.guard():
            raise ValueError("down")
    assert b.state == OPEN


def test_guard_refuses_with_breaker_open_without_running_the_block() -> None:
    b, _, _ = make()
    for _ in range(3):
        b.record_failure()
    ran = False
    with pytest.raises(BreakerOpen), b.guard():
        ran = True
    assert not ran


async def test_async_guard_and_cancellation_releases_the_probe() -> None:
    b, clock, _ = make()
    for _ in range(3):
        b.record_failure()
    clock.now += 5

    async def hang() -> None:
        async with b.guard():  # the half-open probe
            await asyncio.sleep(30)

    task = asyncio.create_task(hang())
    await asyncio.sleep(0)
    assert b.state == HALF_OPEN and not b.allow()  # the probe is out
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert b.state == HALF_OPEN  # no verdict...
    assert b.allow()  # ...and the probe slot is free again at once


def test_cancellation_is_released_even_when_listed_as_a_failure() -> None:
    b, _, _ = make(consecutive_failures=1)
    with pytest.raises(asyncio.CancelledError), b.guard(failure=(BaseException,)):
        raise asyncio.CancelledError
    assert b.state == CLOSED


def test_cancellation_counts_when_the_owner_says_callers_give_up_first() -> None:
    b, _, _ = make(consecutive_failures=1)
    with pytest.raises(asyncio.CancelledError), b.guard(cancel_fails=True):
        raise asyncio.CancelledError
    assert b.state == OPEN


def test_guard_sorts_exceptions_into_failure_success_or_release() -> None:
    class Down(Exception):
        pass

    class Answered(Exception):
        pass

    class Bug(Exception):
        pass

    b, _, _ = make(consecutive_failures=2)

    def guard() -> Guard:
        return b.guard(failure=(Down,), success=(Answered,))

    with pytest.raises(Down), guard():
        raise Down
    with pytest.raises(Answered), guard():
        raise Answered  # resets the run of failures
    with pytest.raises(Down), guard():
        raise Down
    assert b.state == CLOSED
    with pytest.raises(Bug), guard():
        raise Bug  # released: neither resets nor extends the run
    with pytest.raises(Down), guard():
        raise Down
    assert b.state == OPEN
