"""The circuit breaker of every service: per upstream model and per dependency (router,
cache, Redis) in the orchestrator, and around Redis in the cache.

Closed: every call goes through; the breaker opens after ``consecutive_failures``
failures in a row, or when failures reach ``failure_ratio`` of at least
``min_requests`` calls in the last ``window_seconds``. Open: calls are refused at
once for ``cooldown_seconds``. Half-open: one probe goes through; its success
closes the circuit, its failure opens it again. Pure logic with an injected clock.

``guard()`` is the protocol every caller follows (allow, call, then record a verdict
or release), written once::

    with breaker.guard():          # or ``async with``; BreakerOpen when refused
        await call_the_dependency()
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

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


class BreakerOpen(Exception):
    """``CircuitBreaker.guard`` refused the call: the circuit is open (or half-open with
    its probe already out). Nothing was called."""


ExceptionTypes = tuple[type[BaseException], ...]


class Guard:
    """One guarded call; see ``CircuitBreaker.guard``. A sync and an async context manager."""

    __slots__ = ("_breaker", "_cancel_fails", "_failure", "_success")

    def __init__(
        self,
        breaker: CircuitBreaker,
        failure: ExceptionTypes,
        success: ExceptionTypes,
        cancel_fails: bool = False,
    ) -> None:
        self._breaker = breaker
        self._failure = failure
        self._success = success
        self._cancel_fails = cancel_fails

    def __enter__(self) -> None:
        if not self._breaker.allow():
            raise BreakerOpen(STATE_NAMES[self._breaker.state])

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        b = self._breaker
        if exc is None:
            b.record_success()
        elif isinstance(exc, asyncio.CancelledError):
            if self._cancel_fails:
                b.record_failure()
            else:
                b.release()
        elif isinstance(exc, self._failure):
            b.record_failure()
        elif isinstance(exc, self._success):
            b.record_success()
        else:
            b.release()

    async def __aenter__(self) -> None:
        self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


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

    def guard(
        self,
        *,
        failure: ExceptionTypes = (Exception,),
        success: ExceptionTypes = (),
        cancel_fails: bool = False,
    ) -> Guard:
        """Guard one call: ``BreakerOpen`` at once if ``allow()`` says no, else a verdict
        when the block exits. The exception is never swallowed.

        - normal exit: success;
        - an exception in ``failure`` (default: any ``Exception``): failure;
        - an exception in ``success``, checked after ``failure``: success. For errors
          that prove the dependency answered (Redis's OOM reply, an HTTP 400);
        - anything else, and ``asyncio.CancelledError``: release, no verdict.

        Cancellation releases, whatever the tuples say: it is the caller's decision
        (its client left, its own deadline passed, the process is stopping), not news
        about the dependency, and counting it would let a wave of client disconnects
        open a healthy circuit. A slow dependency is seen through the owner's own
        bound instead (``asyncio.timeout`` inside the guard raises ``TimeoutError``,
        a failure), so that bound must be shorter than the callers' deadlines.
        ``cancel_fails=True`` is for a server whose callers' deadlines are shorter than
        any bound it can keep (the cache: a frozen Redis shows up there only as lookups
        its callers abandon): a cancelled call then counts as a failure.
        """
        return Guard(self, failure, success, cancel_fails)

    def _trip(self, now: float) -> None:
        self._opened_at = now
        self._probe_since = None
        self._consecutive = 0
        self._buckets.clear()
        self._set(OPEN)
