"""Redis as every tollgate service uses it: no client retries, bounded time, a breaker.

redis-py's default ``Retry`` turns a 0.2 s socket timeout into seconds of blocking
against a frozen Redis (retries with backoff, each waiting out its timeout), so
``make_client`` turns retries off. The caller's circuit breaker handles repeats
instead: ``guarded`` runs one call through ``CircuitBreaker.guard`` inside
``asyncio.timeout``, so a dead Redis costs at most one timeout per cooldown and then
calls fail at once (``BreakerOpen``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tollgate_common.breaker import CircuitBreaker, ExceptionTypes

T = TypeVar("T")

# Redis did not answer: these count against the breaker. (Python's TimeoutError is an
# OSError; it is listed for the reader.)
UNAVAILABLE: ExceptionTypes = (RedisTimeoutError, RedisConnectionError, TimeoutError, OSError)
# Redis answered with an error (OOM under noeviction, a script error): it is alive.
ANSWERED: ExceptionTypes = (RedisError,)


def make_client(url: str, timeout: float, **kwargs: Any) -> aioredis.Redis:
    """A client for ``url`` whose connect and each read wait at most ``timeout`` seconds,
    with retries off. ``kwargs`` go to ``Redis.from_url`` (e.g. ``max_connections``)."""
    return aioredis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        retry_on_timeout=False,
        health_check_interval=0,
        **kwargs,
    )


async def guarded(
    breaker: CircuitBreaker,
    seconds: float | None,
    call: Callable[[], Awaitable[T]],
    *,
    failure: ExceptionTypes = UNAVAILABLE,
    success: ExceptionTypes = ANSWERED,
    cancel_fails: bool = False,
) -> T:
    """``await call()`` behind ``breaker``, cut after ``seconds`` (None: no bound).

    The socket timeouts bound each read; ``seconds`` bounds connect, handshake and
    command(s) together: pick it shorter than the callers' deadlines, or a frozen Redis
    shows up only as cancelled calls, which the breaker does not count. Raises
    ``BreakerOpen`` without calling when the circuit is open, and otherwise whatever the
    call raised (``TimeoutError`` when cut); callers map these to their own errors.
    Verdicts follow ``CircuitBreaker.guard``: errors in ``failure`` count, errors in
    ``success`` prove Redis alive, a cancelled call is released (counted with
    ``cancel_fails``).
    """
    with breaker.guard(failure=failure, success=success, cancel_fails=cancel_fails):
        if seconds is None:
            return await call()
        async with asyncio.timeout(seconds):
            return await call()
