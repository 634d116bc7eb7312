"""The Redis backend: bounded time per call, no client retries, and a circuit breaker.

redis-py's default ``Retry`` turns a 0.2 s socket timeout into seconds of blocking
against a frozen Redis, so retries are off; the breaker then makes a dead Redis
cost at most one timeout per reset period, after which calls fail at once and
the cache answers misses. Entries and bytes come from a periodic ``DBSIZE`` +
``INFO memory``, never from the request path. They describe the whole Redis
database: give the cache its own database index for exact numbers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tollgate_cache.backend import BackendError, BackendName
from tollgate_cache.memory import EvictionListener
from tollgate_common.breaker import OPEN, STATE_NAMES, CircuitBreaker

log = logging.getLogger(__name__)

PREFIX = "tollgate:cache:v1:"
MAX_CONNECTIONS = 128  # beyond this a call fails fast ("Too many connections"): a miss
CLEAR_BATCH = 500
T = TypeVar("T")


class RedisBackend:
    name: BackendName = "redis"

    def __init__(
        self,
        url: str,
        *,
        timeout_seconds: float,
        max_entry_bytes: int,
        fallback_capacity: int,
        breaker: CircuitBreaker,
        on_evict: EvictionListener,
        client: aioredis.Redis | None = None,
    ) -> None:
        self._timeout = timeout_seconds
        self._max_entry_bytes = max_entry_bytes
        self._fallback_capacity = fallback_capacity
        self._on_evict = on_evict
        self.breaker = breaker
        self._client = client or aioredis.Redis.from_url(
            url,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            retry=Retry(NoBackoff(), 0),
            max_connections=MAX_CONNECTIONS,
        )
        self._entries = 0
        self._bytes = 0
        self._capacity = fallback_capacity

    async def _call(self, op: Callable[[], Awaitable[T]], bounded: bool = True) -> T:
        if not self.breaker.allow():
            raise BackendError("breaker_open")
        try:
            if bounded:
                # Socket timeouts bound each read; this bounds connect + handshake + command
                # together, so one call never costs more than one timeout.
                async with asyncio.timeout(self._timeout):
                    result = await op()
            else:
                result = await op()
        except (RedisTimeoutError, TimeoutError) as exc:
            self.breaker.record_failure()
            raise BackendError("timeout") from exc
        except (RedisConnectionError, OSError) as exc:
            self.breaker.record_failure()
            raise BackendError("unavailable", type(exc).__name__) from exc
        except asyncio.CancelledError:
            # The caller gave up first (its deadline is shorter than ours): Redis was too
            # slow for it, so the breaker hears of it, or a frozen Redis would never trip it.
            self.breaker.record_failure()
            raise
        except RedisError as exc:
            # Redis answered (e.g. OOM under noeviction): it is alive, the call failed.
            self.breaker.record_success()
            raise BackendError("error", type(exc).__name__) from exc
        self.breaker.record_success()
        return result

    async def get(self, key: str) -> bytes | None:
        value: Any = await self._call(lambda: self._client.get(PREFIX + key))
        return bytes(value) if value is not None else None

    async def set(self, key: str, value: bytes, ttl_seconds: int) -> bool:
        if len(key) + len(value) > self._max_entry_bytes:
            self._on_evict("size", 1)
            return False
        await self._call(lambda: self._client.set(PREFIX + key, value, px=ttl_seconds * 1000))
        return True

    async def delete(self, key: str) -> int:
        return int(await self._call(lambda: self._client.unlink(PREFIX + key)))

    async def clear(self) -> int:
        async def op() -> int:
            removed = 0
            batch: list[str] = []
            async for k in self._client.scan_iter(match=PREFIX + "*", count=1000):
                batch.append(k)
                if len(batch) >= CLEAR_BATCH:
                    removed += int(await self._client.unlink(*batch))
                    batch.clear()
            if batch:
                removed += int(await self._client.unlink(*batch))
            return removed

        # Many commands: each is bounded by the socket timeout, the whole is not.
        return await self._call(op, bounded=False)

    async def maintain(self) -> None:
        async def op() -> tuple[int, dict[str, Any]]:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.dbsize()
                pipe.info("memory")
                n, mem = await pipe.execute()
            return int(n), mem

        n, mem = await self._call(op)
        self._entries = n
        self._bytes = int(mem.get("used_memory", 0))
        maxmemory = int(mem.get("maxmemory", 0))
        self._capacity = maxmemory if maxmemory > 0 else self._fallback_capacity

    def entries(self) -> int:
        return self._entries

    def size_bytes(self) -> int:
        return self._bytes

    def capacity_bytes(self) -> int:
        return self._capacity

    async def close(self) -> None:
        await self._client.aclose()


def log_breaker_change(old: int, new: int) -> None:
    """State changes only (not every failure), so a dead Redis logs a few lines, not a flood."""
    level = logging.WARNING if new == OPEN else logging.INFO
    old_name, new_name = STATE_NAMES[old], STATE_NAMES[new]
    log.log(
        level,
        "redis circuit breaker %s",
        new_name,
        extra={"from_state": old_name, "to_state": new_name},
    )
