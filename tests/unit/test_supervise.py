"""make run's restart rule: the backoff schedule, when it resets, when it gives up."""

from __future__ import annotations

import pytest

from tools.supervise import CrashHistory, RestartPolicy, describe_exit, ordinal

POLICY = RestartPolicy()


def test_backoff_doubles_from_half_a_second_to_thirty() -> None:
    assert [POLICY.delay(n) for n in range(1, 10)] == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]


def test_crashes_after_serving_back_off_and_never_give_up() -> None:
    h = CrashHistory()
    delays = [h.record(POLICY, was_ready=True, uptime=1.0) for _ in range(20)]
    assert delays[:4] == [0.5, 1, 2, 4] and delays[-1] == 30
    assert None not in delays


def test_a_stable_run_starts_the_backoff_again() -> None:
    h = CrashHistory()
    for _ in range(5):
        h.record(POLICY, was_ready=True, uptime=1.0)
    assert h.record(POLICY, was_ready=True, uptime=POLICY.stable_after) == 0.5


def test_gives_up_after_five_failed_starts_in_a_row() -> None:
    h = CrashHistory()
    assert h.record(POLICY, was_ready=True, uptime=100) == 0.5  # it served, then crashed
    delays = [h.record(POLICY, was_ready=False, uptime=0.5) for _ in range(5)]
    assert delays == [1, 2, 4, 8, None]


def test_one_good_start_clears_the_failed_starts() -> None:
    h = CrashHistory()
    for _ in range(4):
        h.record(POLICY, was_ready=False, uptime=0.5)
    h.record(POLICY, was_ready=True, uptime=2)
    assert h.start_failures == 0
    assert h.record(POLICY, was_ready=False, uptime=0.5) is not None


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (1, "1st"),
        (2, "2nd"),
        (3, "3rd"),
        (4, "4th"),
        (11, "11th"),
        (12, "12th"),
        (13, "13th"),
        (21, "21st"),
        (102, "102nd"),
        (111, "111th"),
    ],
)
def test_ordinal(n: int, text: str) -> None:
    assert ordinal(n) == text


def test_exit_codes_in_words() -> None:
    assert describe_exit(2) == "exit code 2"
    assert describe_exit(-9) == "exit code -9 (SIGKILL)"
    assert describe_exit(-15) == "exit code -15 (SIGTERM)"
    assert describe_exit(None) == "an unknown exit code"
