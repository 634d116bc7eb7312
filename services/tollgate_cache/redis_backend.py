"""The Redis backend: bounded time per call, no client retries, and a circuit breaker.

The client and the guarded call are ``tollgate_common.redis``'s (why retries are off
is written there): a dead Redis costs at most one timeout per reset period, after
which calls fail at once and the cache answers misses. A Redis that answers with an
error (OOM under noeviction) is alive and counts as a success; a call cancelled by
its caller (its deadline is shorter than ``redis_timeout_seconds``) is released,
neither success nor failure: see ``CircuitBreaker.guard``. Entries and bytes come
from a periodic ``DBSIZE`` + ``INFO memory``, never from the request path. They
describe the whole Redis database: give the cache its own database index for exact
numbers.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tollgate_cache.backend import BackendError, BackendName
from tollgate_cache.memory import EvictionListener
from tollgate_common.breaker import OPEN, STATE_NAMES, BreakerOpen, CircuitBreaker
from tollgate_common.redis import guarded, make_client

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
        self._client = client or make_client(url, timeout_seconds, max_connections=MAX_CONNECTIONS)
        self._entries = 0
        self._bytes = 0
        self._capacity = fallback_capacity

    async def _call(self, op: Callable[[], Awaitable[T]], bounded: bool = True) -> T:
        # Unbounded calls are many commands, each bounded by the socket timeout.
        try:
            # The orchestrator's lookup deadline (0.1 s) is shorter than a Redis timeout
            # can safely be: a frozen Redis is seen here only as abandoned calls, so
            # they count, and the breaker opens instead of every lookup waiting.
            return await guarded(
                self.breaker, self._timeout if bounded else None, op, cancel_fails=True
            )
        except BreakerOpen:
            raise BackendError("breaker_open") from None
        except (RedisTimeoutError, TimeoutError) as exc:
            raise BackendError("timeout") from exc
        except (RedisConnectionError, OSError) as exc:
            raise BackendError("unavailable", type(exc).__name__) from exc
        except RedisError as exc:
            raise BackendError("error", type(exc).__name__) from exc

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
