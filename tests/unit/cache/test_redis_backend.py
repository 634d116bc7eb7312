"""RedisBackend against a scripted client: each failure mode maps to a reason, a hung
call is cut at the timeout, and an open breaker stops calling Redis at all."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from tollgate_cache.backend import BackendError
from tollgate_cache.redis_backend import PREFIX, RedisBackend
from tollgate_common.breaker import CLOSED, OPEN, BreakerConfig, CircuitBreaker


class ScriptedClient:
    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.calls = 0
        self.data: dict[str, bytes] = {}

    async def _act(self) -> None:
        self.calls += 1
        if self.behaviour == "hang":
            await asyncio.sleep(30)
        if self.behaviour == "refused":
            raise RedisConnectionError("Connection refused")
        if self.behaviour == "oom":
            raise ResponseError("OOM command not allowed")

    async def get(self, key: str) -> bytes | None:
        await self._act()
        return self.data.get(key)

    async def set(self, key: str, value: bytes, px: int) -> bool:
        await self._act()
        self.data[key] = value
        return True

    async def aclose(self) -> None:
        return None


def backend(client: ScriptedClient, clock: Any = time.monotonic) -> RedisBackend:
    evicted: list[str] = []
    return RedisBackend(
        "redis://unused",
        timeout_seconds=0.05,
        max_entry_bytes=100,
        fallback_capacity=1000,
        breaker=CircuitBreaker(
            BreakerConfig(consecutive_failures=3, cooldown_seconds=60), clock=clock
        ),
        on_evict=lambda reason, n: evicted.append(reason),
        client=client,  # type: ignore[arg-type]
    )


async def test_values_live_under_the_prefix() -> None:
    client = ScriptedClient("ok")
    b = backend(client)
    assert await b.set("k", b"v", 5)
    assert client.data == {PREFIX + "k": b"v"}
    assert await b.get("k") == b"v"
    assert not await b.set("k", b"x" * 200, 5)  # over max_entry_bytes: refused locally
    assert client.calls == 2


async def test_hung_calls_time_out_then_the_breaker_stops_calling() -> None:
    client = ScriptedClient("hang")
    b = backend(client)
    start = time.monotonic()
    for _ in range(3):
        with pytest.raises(BackendError) as err:
            await b.get("k")
        assert err.value.reason == "timeout"
    assert time.monotonic() - start < 10  # bounded, not 3 x 30 s
    assert b.breaker.state == OPEN
    with pytest.raises(BackendError) as err:
        await b.set("k", b"v", 5)
    assert err.value.reason == "breaker_open"
    assert client.calls == 3


async def test_refused_connection_is_unavailable() -> None:
    b = backend(ScriptedClient("refused"))
    with pytest.raises(BackendError) as err:
        await b.get("k")
    assert err.value.reason == "unavailable"


async def test_an_error_reply_fails_the_call_but_not_the_breaker() -> None:
    b = backend(ScriptedClient("oom"))
    for _ in range(5):
        with pytest.raises(BackendError) as err:
            await b.set("k", b"v", 5)
        assert err.value.reason == "error"
    assert b.breaker.state == CLOSED


async def test_half_open_probe_success_closes_the_breaker() -> None:
    now = [0.0]
    client = ScriptedClient("refused")
    b = backend(client, clock=lambda: now[0])
    for _ in range(3):
        with pytest.raises(BackendError):
            await b.get("k")
    client.behaviour = "ok"
    with pytest.raises(BackendError):
        await b.get("k")  # still open
    now[0] = 61
    assert await b.get("k") is None  # the probe reaches Redis
    assert b.breaker.state == CLOSED
