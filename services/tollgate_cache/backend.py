"""The storage interface the servicer uses, and the in-memory implementation of it.

Values are serialized ``Entry`` bytes; the servicer does the (de)serialization,
so a backend only moves bytes around.
"""

from __future__ import annotations

from typing import Literal, Protocol

from tollgate_cache.memory import EvictionListener, MemoryStore

BackendName = Literal["memory", "redis"]
# Why a store or lookup could not reach the backend: bounded, used in replies and logs.
FailureReason = Literal["breaker_open", "timeout", "unavailable", "error"]


class BackendError(Exception):
    def __init__(self, reason: FailureReason, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason: FailureReason = reason


class Backend(Protocol):
    name: BackendName

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_seconds: int) -> bool:
        """True when stored; False when refused as too large. Raises BackendError."""

    async def delete(self, key: str) -> int: ...

    async def clear(self) -> int: ...

    async def maintain(self) -> None:
        """Periodic upkeep: the TTL sweep, or refreshing the numbers below."""

    def entries(self) -> int: ...

    def size_bytes(self) -> int: ...

    def capacity_bytes(self) -> int: ...

    async def close(self) -> None: ...


class MemoryBackend:
    """``MemoryStore`` behind the async interface; nothing here can fail or block."""

    name: BackendName = "memory"

    def __init__(self, max_bytes: int, max_entry_bytes: int, on_evict: EvictionListener) -> None:
        self.store = MemoryStore(max_bytes, max_entry_bytes, on_evict=on_evict)

    async def get(self, key: str) -> bytes | None:
        return self.store.get(key)

    async def set(self, key: str, value: bytes, ttl_seconds: int) -> bool:
        return self.store.set(key, value, ttl_seconds)

    async def delete(self, key: str) -> int:
        return int(self.store.delete(key))

    async def clear(self) -> int:
        return self.store.clear()

    async def maintain(self) -> None:
        self.store.sweep()

    def entries(self) -> int:
        return self.store.entries

    def size_bytes(self) -> int:
        return self.store.size_bytes

    def capacity_bytes(self) -> int:
        return self.store.max_bytes

    async def close(self) -> None:
        return None
