"""The circuit breaker of every service: per upstream model and per dependency (router,
cache, Redis) in the orchestrator, and around Redis in the cache.

Closed: every call goes through; the breaker opens after ``consecutive_failures``
failures in a row, or when failures reach ``failure_ratio`` of at least
``min_requests`` calls in the last ``window_seconds``. Open: calls are refused at
once for ``cooldown_seconds``. Half-open: one probe goes through; its success
closes the circuit, its failure opens it again. Pure logic with an injected clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

CLOSED = 0
HALF_OPEN = 1
OPEN = 2
STATE_NAMES = {CLOSED: "closed", HALF_OPEN: "half_open", OPEN: "open"}
_BUCKETS = 10


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    consecutive_failures: int = 5
    failure_ratio: float = 0.5
    window_seconds: float = 30.0
    min_requests: int = 10
    cooldown_seconds: float = 10.0


class CircuitBreaker:
    def __init__(
        self,
        config: BreakerConfig,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[int, int], None] | None = None,
    ) -> None:
        self.config = config
        self._clock = clock
        self._on_change = on_change  # (old state, new state)
        self.state = CLOSED
        self._consecutive = 0
        self._opened_at = 0.0
        self._probe_since: float | None = None
        self._width = config.window_seconds / _BUCKETS
        self._buckets: dict[int, list[int]] = {}  # bucket index -> [successes, failures]

    def _set(self, state: int) -> None:
        old, self.state = self.state, state
        if old != state and self._on_change is not None:
            self._on_change(old, state)

    def _bucket(self, now: float) -> list[int]:
        idx = int(now / self._width)
        b = self._buckets.get(idx)
        if b is None:
            oldest = idx - _BUCKETS + 1
            for k in [k for k in self._buckets if k < oldest]:
                del self._buckets[k]
            b = self._buckets[idx] = [0, 0]
        return b

    def _window(self, now: float) -> tuple[int, int]:
        oldest = int(now / self._width) - _BUCKETS + 1
        ok = fail = 0
        for k, (s, f) in self._buckets.items():
            if k >= oldest:
                ok += s
                fail += f
        return ok, fail

    def allow(self) -> bool:
        """May a call go through now? In half-open, only the one probe may."""
        if self.state == CLOSED:
            return True
        now = self._clock()
        if self.state == OPEN:
            if now - self._opened_at < self.config.cooldown_seconds:
                return False
            self._set(HALF_OPEN)
            self._probe_since = now
            return True
        # Half-open: a probe whose caller vanished without a verdict must not wedge it.
        if self._probe_since is None or now - self._probe_since >= self.config.cooldown_seconds:
            self._probe_since = now
            return True
        return False

    def record_success(self) -> None:
        if self.state == OPEN:
            return  # a call let through before the circuit opened; it proves nothing now
        self._consecutive = 0
        if self.state == HALF_OPEN:
            self._buckets.clear()
            self._probe_since = None
            self._set(CLOSED)
            return
        self._bucket(self._clock())[0] += 1

    def record_failure(self) -> None:
        now = self._clock()
        if self.state == OPEN:
            return
        if self.state == HALF_OPEN:
            self._trip(now)
            return
        self._consecutive += 1
        self._bucket(now)[1] += 1
        if self._consecutive >= self.config.consecutive_failures:
            self._trip(now)
            return
        ok, fail = self._window(now)
        total = ok + fail
        if total >= self.config.min_requests and fail / total >= self.config.failure_ratio:
            self._trip(now)

    def release(self) -> None:
        """The call ended without saying anything about health (cancelled, client error)."""
        if self.state == HALF_OPEN:
            self._probe_since = None

    def _trip(self, now: float) -> None:
        self._opened_at = now
        self._probe_since = None
        self._consecutive = 0
        self._buckets.clear()
        self._set(OPEN)
