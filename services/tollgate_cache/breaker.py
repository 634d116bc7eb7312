"""A consecutive-failure circuit breaker with one half-open probe. Pure: the clock is injected.

Closed: calls pass; ``failures`` consecutive failures open it. Open: calls are
refused for ``reset_seconds``. Then one call is let through as a probe (half-open):
its success closes the breaker, its failure opens it for another period. So a
dead or frozen dependency costs at most one timeout per period.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

State = Literal["closed", "open", "half_open"]


class Breaker:
    def __init__(
        self,
        failures: int,
        reset_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[State, State], None] | None = None,
    ) -> None:
        if failures < 1 or reset_seconds <= 0:
            raise ValueError("breaker needs failures >= 1 and reset_seconds > 0")
        self.threshold = failures
        self.reset_seconds = reset_seconds
        self._clock = clock
        self._on_change = on_change
        self._state: State = "closed"
        self._failures = 0
        self._since = 0.0  # when it opened, or when the probe started

    @property
    def state(self) -> State:
        return self._state

    def allow(self) -> bool:
        """May a call go ahead now? In half-open, only the probe may."""
        if self._state == "closed":
            return True
        now = self._clock()
        if now - self._since < self.reset_seconds:
            return False
        # Open and the period is over, or a half-open probe that never reported
        # back (cancelled): let one call through as the probe.
        self._since = now
        self._set("half_open")
        return True

    def success(self) -> None:
        self._failures = 0
        self._set("closed")

    def failure(self) -> None:
        self._failures += 1
        if self._state == "half_open" or self._failures >= self.threshold:
            self._since = self._clock()
            self._set("open")

    def _set(self, state: State) -> None:
        old, self._state = self._state, state
        if old != state and self._on_change is not None:
            self._on_change(old, state)
