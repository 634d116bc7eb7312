"""tollgate_common.redis: a client with retries off, and one guarded, bounded call."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from tollgate_common.breaker import CLOSED, OPEN, BreakerConfig, BreakerOpen, CircuitBreaker
from tollgate_common.redis import guarded, make_client


def breaker(failures: int = 2) -> CircuitBreaker:
    return CircuitBreaker(BreakerConfig(consecutive_failures=failures, cooldown_seconds=60))


def raising(exc: BaseException) -> Callable[[], Awaitable[Any]]:
    async def call() -> Any:
        raise exc

    return call


async def test_make_client_has_no_retries_and_bounded_sockets() -> None:
    client = make_client("redis://127.0.0.1:1/0", 0.2, max_connections=7)
    try:
        kw = client.connection_pool.connection_kwargs
        assert kw["socket_timeout"] == 0.2 and kw["socket_connect_timeout"] == 0.2
        assert kw["retry"].get_retries() == 0
        assert client.connection_pool.max_connections == 7
    finally:
        await client.aclose()


async def test_a_hung_call_is_cut_at_the_bound_and_counts_as_a_failure() -> None:
    b = breaker()

    async def hang() -> None:
        await asyncio.sleep(30)

    for _ in range(2):
        with pytest.raises(TimeoutError):
            await guarded(b, 0.01, hang)
    assert b.state == OPEN
    called = False

    async def once() -> None:
        nonlocal called
        called = True

    with pytest.raises(BreakerOpen):
        await guarded(b, 0.01, once)
    assert not called  # refused without calling Redis


async def test_refused_connections_fail_and_error_replies_prove_redis_alive() -> None:
    b = breaker()
    with pytest.raises(RedisConnectionError):
        await guarded(b, 1, raising(RedisConnectionError("refused")))
    with pytest.raises(ResponseError):
        await guarded(b, 1, raising(ResponseError("OOM command not allowed")))  # resets
    with pytest.raises(RedisConnectionError):
        await guarded(b, 1, raising(RedisConnectionError("refused")))
    assert b.state == CLOSED
    assert await guarded(b, None, lambda: asyncio.sleep(0, result=3)) == 3


async def test_failure_types_can_be_widened() -> None:
    b = breaker(failures=1)
    with pytest.raises(ResponseError):
        await guarded(b, 1, raising(ResponseError("x")), failure=(Exception,), success=())
    assert b.state == OPEN


async def test_a_cancelled_call_is_released() -> None:
    b = breaker(failures=1)
    task = asyncio.create_task(guarded(b, 5, lambda: asyncio.sleep(30)))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert b.state == CLOSED
