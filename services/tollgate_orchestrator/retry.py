"""Retry decisions: which failures retry, how long to wait, and a retry budget. Pure.

Backoff is exponential with full jitter (Envoy's default). A Retry-After from the
upstream is honoured when it is within the cap; a longer one is not waited for,
the request falls back to the next model at once. Every wait must also fit in
what is left of the request's deadline.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

# error classes, also the bounded values of the error_class / reason labels
RATE_LIMIT = "rate_limit"
SERVER = "server_error"
TIMEOUT = "timeout"
CONNECTION = "connection"
CLIENT = "client_error"
PROTOCOL = "protocol"
# The gateway's own credentials or catalog are wrong (401/402/403, 404): not the
# tenant's fault, so never passed through; another model may still serve.
UPSTREAM_AUTH = "upstream_auth"
MODEL_NOT_FOUND = "model_not_found"
CIRCUIT_OPEN = "circuit_open"
# The provider has no key in this deployment: skipped at once, no retry, no breaker.
NOT_CONFIGURED = "not_configured"
# This model's API cannot carry the request (temperature 1.5 to Anthropic): the next model
# in the chain may; when none can, the first refusal goes back as a 400.
UNSUPPORTED = "unsupported"
ERROR_CLASSES = (
    RATE_LIMIT,
    SERVER,
    TIMEOUT,
    CONNECTION,
    CLIENT,
    PROTOCOL,
    UPSTREAM_AUTH,
    MODEL_NOT_FOUND,
    NOT_CONFIGURED,
    UNSUPPORTED,
)
# Only these say the client's request itself is wrong: they reach the client as sent.
_REQUEST_SHAPE = frozenset({400, 413, 422})
# An upstream's Retry-After is clamped to this (L-2): "inf" or 99999999999 from a third-party
# upstream must neither crash the answer nor be relayed to clients as "wait forever".
MAX_RETRY_AFTER_SECONDS = 600.0


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed upstream attempt."""

    error_class: str
    status: int | None = None
    retry_after: float | None = None
    body: object = None  # the upstream's error body, for pass-through

    @property
    def retryable(self) -> bool:
        return self.error_class in (RATE_LIMIT, SERVER, TIMEOUT, CONNECTION, PROTOCOL)

    @property
    def counts_against_breaker(self) -> bool:
        # A client's bad request says nothing about the model's health; a refused key does.
        return self.error_class not in (CLIENT, NOT_CONFIGURED, UNSUPPORTED)


class AttemptFailed(Exception):
    """An upstream attempt failed; what the attempt loop decides on."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.error_class)
        self.failure = failure


def classify_status(status: int) -> str:
    if status == 429:
        return RATE_LIMIT
    if status in _REQUEST_SHAPE:
        return CLIENT
    if status in (401, 402, 403):
        return UPSTREAM_AUTH
    if status == 404:
        return MODEL_NOT_FOUND
    return SERVER  # 5xx, 408, 409 and any other status the provider should not send


def _seconds(value: float) -> float | None:
    """A finite, non-negative wait clamped to ``MAX_RETRY_AFTER_SECONDS``; else None."""
    if not math.isfinite(value) or value < 0:
        return None
    return min(value, MAX_RETRY_AFTER_SECONDS)


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date);
    non-finite or negative values are ignored, large ones clamped to the cap."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            value = _seconds(float(ms) / 1000)
            if value is not None:
                return value
        except ValueError:
            pass
    ra = headers.get("retry-after")
    if ra is None:
        return None
    try:
        return _seconds(float(ra))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(ra)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return _seconds(max(0.0, when.timestamp() - (time.time() if now is None else now)))


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts_per_model: int = 2
    total_attempts: int = 4
    base_backoff: float = 0.1
    max_backoff: float = 2.0
    retry_after_cap: float = 10.0

    def backoff(self, retry_number: int, rand: Callable[[], float]) -> float:
        """Full jitter: uniform in [0, min(max, base * 2^(n-1))] for the n-th retry (n >= 1)."""
        ceiling = min(self.max_backoff, self.base_backoff * 2.0 ** max(0, retry_number - 1))
        return ceiling * rand()

    def retry_delay(
        self,
        failure: Failure,
        attempts_on_model: int,
        attempts_total: int,
        remaining: float,
        rand: Callable[[], float],
    ) -> float | None:
        """Seconds to wait before trying the same model again, or None to move on.

        ``attempts_*`` count the attempts already made; ``remaining`` is what is
        left of the deadline. Moving on means: fall back, or give up at the end.
        """
        if not failure.retryable:
            return None
        if attempts_on_model >= self.max_attempts_per_model:
            return None
        if attempts_total >= self.total_attempts:
            return None
        if failure.retry_after is not None:
            if failure.retry_after > self.retry_after_cap:
                return None
            delay = failure.retry_after
        else:
            delay = self.backoff(attempts_on_model, rand)
        # Waiting is only worth it when an attempt still fits after the wait.
        if delay >= remaining:
            return None
        return delay


class RetryBudget:
    """Retries in flight may not exceed ``ratio`` of requests in flight (at least ``minimum``).

    Stops retry storms: when a model fails for everyone, most requests fall back
    instead of piling retries onto it.
    """

    def __init__(self, ratio: float, minimum: int) -> None:
        self.ratio = ratio
        self.minimum = minimum
        self.requests = 0
        self.retries = 0

    def allows(self) -> bool:
        return self.retries < max(self.minimum, int(self.requests * self.ratio))
