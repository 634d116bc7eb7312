"""Retry decisions: which failures retry, the backoff schedule, Retry-After, the budget."""

from __future__ import annotations

import email.utils

import pytest

from tollgate_orchestrator.errors import exhausted
from tollgate_orchestrator.retry import (
    CLIENT,
    CONNECTION,
    MAX_RETRY_AFTER_SECONDS,
    MODEL_NOT_FOUND,
    RATE_LIMIT,
    SERVER,
    TIMEOUT,
    UPSTREAM_AUTH,
    Failure,
    RetryBudget,
    RetryPolicy,
    classify_status,
    parse_retry_after,
)

POLICY = RetryPolicy(
    max_attempts_per_model=3,
    total_attempts=5,
    base_backoff=0.1,
    max_backoff=0.5,
    retry_after_cap=5,
)


def one() -> float:
    return 1.0


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (429, RATE_LIMIT),
        (500, SERVER),
        (503, SERVER),
        (408, SERVER),
        (409, SERVER),
        (400, CLIENT),
        (413, CLIENT),
        (422, CLIENT),
        # The gateway's key or catalog is wrong, not the client's request.
        (401, UPSTREAM_AUTH),
        (402, UPSTREAM_AUTH),
        (403, UPSTREAM_AUTH),
        (404, MODEL_NOT_FOUND),
    ],
)
def test_status_classes(status: int, cls: str) -> None:
    assert classify_status(status) == cls
    assert Failure(cls).retryable == (cls in (RATE_LIMIT, SERVER))


def test_backoff_is_exponential_capped_and_jittered() -> None:
    assert [POLICY.backoff(n, one) for n in (1, 2, 3, 4, 5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    assert POLICY.backoff(3, lambda: 0.25) == pytest.approx(0.1)
    assert POLICY.backoff(3, lambda: 0.0) == 0.0


def test_retry_delay_rules() -> None:
    f = Failure(SERVER)
    assert POLICY.retry_delay(f, 1, 1, 10, one) == 0.1
    assert POLICY.retry_delay(f, 2, 2, 10, one) == 0.2
    assert POLICY.retry_delay(f, 3, 3, 10, one) is None  # per-model attempts used up
    assert POLICY.retry_delay(f, 1, 5, 10, one) is None  # total attempts used up
    assert POLICY.retry_delay(Failure(CLIENT, 400), 1, 1, 10, one) is None  # never retried
    assert POLICY.retry_delay(Failure(TIMEOUT), 1, 1, 10, one) == 0.1
    assert POLICY.retry_delay(Failure(CONNECTION), 1, 1, 0.05, one) is None  # beyond deadline


def test_retry_after_is_honoured_within_cap_and_deadline() -> None:
    assert POLICY.retry_delay(Failure(RATE_LIMIT, 429, 2.0), 1, 1, 10, one) == 2.0
    # Longer than the cap: fall back now rather than wait.
    assert POLICY.retry_delay(Failure(RATE_LIMIT, 429, 30.0), 1, 1, 100, one) is None
    # Does not fit in what is left of the deadline.
    assert POLICY.retry_delay(Failure(RATE_LIMIT, 429, 2.0), 1, 1, 1.5, one) is None


def test_parse_retry_after_forms() -> None:
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after": "0.5"}) == 0.5
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"retry-after": "-1"}) is None
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None
    date = email.utils.formatdate(1_000_010, usegmt=True)
    assert parse_retry_after({"retry-after": date}, now=1_000_000) == pytest.approx(10)


@pytest.mark.parametrize("value", ["inf", "Infinity", "-inf", "nan", "NaN", "1e400"])
def test_non_finite_retry_after_is_ignored(value: str) -> None:
    # L-2: "inf" reached math.ceil in the error path and answered 500.
    assert parse_retry_after({"retry-after": value}) is None
    assert parse_retry_after({"retry-after-ms": value}) is None
    # A bad retry-after-ms does not hide a good retry-after.
    assert parse_retry_after({"retry-after-ms": value, "retry-after": "2"}) == 2.0


def test_huge_retry_after_is_clamped_to_the_cap() -> None:
    assert MAX_RETRY_AFTER_SECONDS == 600
    assert parse_retry_after({"retry-after": "99999999999"}) == MAX_RETRY_AFTER_SECONDS
    assert parse_retry_after({"retry-after-ms": "1e15"}) == MAX_RETRY_AFTER_SECONDS
    far = email.utils.formatdate(4_000_000_000, usegmt=True)
    assert parse_retry_after({"retry-after": far}, now=1_000_000) == MAX_RETRY_AFTER_SECONDS
    # Beyond the policy's cap it is still not waited for: the request falls back.
    failure = Failure(RATE_LIMIT, 429, parse_retry_after({"retry-after": "99999999999"}))
    assert POLICY.retry_delay(failure, 1, 1, 10_000, one) is None


@pytest.mark.parametrize(
    ("retry_after", "header"),
    [
        (None, "1"),
        (0.2, "1"),
        (2.5, "3"),
        (float("inf"), "1"),
        (float("nan"), "1"),
        (99_999_999_999.0, "600"),
    ],
)
def test_exhausted_rate_limit_sends_a_finite_bounded_retry_after(
    retry_after: float | None, header: str
) -> None:
    err = exhausted(RATE_LIMIT, retry_after)
    assert err.status == 429 and err.headers["retry-after"] == header


def test_retry_budget_limits_retries_in_flight() -> None:
    b = RetryBudget(ratio=0.2, minimum=2)
    b.requests = 5
    assert b.allows()
    b.retries = 2
    assert not b.allows()  # max(2, 5 * 0.2) = 2
    b.requests = 20
    assert b.allows()  # 20 * 0.2 = 4
    b.retries = 4
    assert not b.allows()


@pytest.mark.parametrize("cls", [UPSTREAM_AUTH, MODEL_NOT_FOUND])
def test_gateway_side_failures_fall_back_and_count_against_the_breaker(cls: str) -> None:
    f = Failure(cls, 401)
    assert not f.retryable  # the same key will be refused again: move to the next model
    assert f.counts_against_breaker
    assert not Failure(CLIENT, 400).counts_against_breaker
