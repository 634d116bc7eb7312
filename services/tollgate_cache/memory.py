"""An in-process TTL + LRU store bounded in bytes. Pure: the clock is injected.

Entry size is ``len(key) + len(value)`` (the value is the serialized ``Entry``) plus
the per-entry overhead of Python's objects, so the bound is on what the cache really
holds. Every operation is O(1)
amortized: an ``OrderedDict`` keeps LRU order, and a heap of expiry times lets
the sweep drop expired entries without scanning everything.
"""

from __future__ import annotations

import heapq
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

# What Python holds per entry beside the key and value bytes (the dict slot, the _Item,
# two bytes objects' headers), measured at ~320 B: counted so that many small entries
# cannot take 5x the configured bytes (L-4).
ENTRY_OVERHEAD = 320
EvictionReason = Literal["lru", "ttl", "size"]
EVICTION_REASONS: tuple[EvictionReason, ...] = ("lru", "ttl", "size")
EvictionListener = Callable[[EvictionReason, int], None]


def _ignore(reason: EvictionReason, n: int) -> None:
    return None


@dataclass(slots=True)
class _Item:
    value: bytes
    size: int
    expires_at: float


@dataclass
class MemoryStore:
    """Bounded by ``max_bytes``; refuses any entry over ``max_entry_bytes``.

    ``on_evict(reason, n)`` is told about every eviction, so the adapter can count
    them without this module knowing about Prometheus.
    """

    max_bytes: int
    max_entry_bytes: int
    clock: Callable[[], float] = time.monotonic
    on_evict: EvictionListener = _ignore
    entry_overhead: int = ENTRY_OVERHEAD
    _items: OrderedDict[str, _Item] = field(default_factory=OrderedDict, init=False)
    _expiry: list[tuple[float, str]] = field(default_factory=list, init=False)
    _bytes: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.max_bytes <= 0 or self.max_entry_bytes <= 0:
            raise ValueError("max_bytes and max_entry_bytes must be positive")

    @property
    def entries(self) -> int:
        return len(self._items)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def get(self, key: str) -> bytes | None:
        item = self._items.get(key)
        if item is None:
            return None
        if item.expires_at <= self.clock():
            self._remove(key, item)
            self.on_evict("ttl", 1)
            return None
        self._items.move_to_end(key)
        return item.value

    def set(self, key: str, value: bytes, ttl_seconds: float) -> bool:
        """Store ``value``; False (and one ``size`` eviction) when it is too large."""
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive")
        size = self.entry_overhead + len(key) + len(value)
        old = self._items.get(key)
        if old is not None:
            self._remove(key, old)
        if size > self.max_entry_bytes or size > self.max_bytes:
            self.on_evict("size", 1)
            return False
        self._make_room(self.max_bytes - size, "lru")
        expires_at = self.clock() + ttl_seconds
        self._items[key] = _Item(value, size, expires_at)
        self._bytes += size
        heapq.heappush(self._expiry, (expires_at, key))
        self._compact_expiry()
        return True

    def delete(self, key: str) -> bool:
        item = self._items.get(key)
        if item is None:
            return False
        self._remove(key, item)
        return True

    def clear(self) -> int:
        n = len(self._items)
        self._items.clear()
        self._expiry.clear()
        self._bytes = 0
        return n

    def sweep(self) -> int:
        """Drop every expired entry; returns how many."""
        now = self.clock()
        dropped = 0
        while self._expiry and self._expiry[0][0] <= now:
            expires_at, key = heapq.heappop(self._expiry)
            item = self._items.get(key)
            # A stale heap record: the key was replaced or removed since.
            if item is not None and item.expires_at == expires_at:
                self._remove(key, item)
                dropped += 1
        if dropped:
            self.on_evict("ttl", dropped)
        return dropped

    def resize(self, max_bytes: int) -> int:
        """Change the capacity; entries dropped to fit count as ``size`` evictions."""
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.max_bytes = max_bytes
        return self._make_room(max_bytes, "size")

    def _make_room(self, limit: int, reason: EvictionReason) -> int:
        """Evict from the LRU end until at most ``limit`` bytes are held."""
        now = self.clock()
        counts: dict[EvictionReason, int] = {"ttl": 0, reason: 0}
        while self._bytes > limit and self._items:
            _, item = self._items.popitem(last=False)
            self._bytes -= item.size
            # An entry that had expired anyway is a TTL eviction, not a capacity one.
            counts["ttl" if item.expires_at <= now else reason] += 1
        for r, n in counts.items():
            if n:
                self.on_evict(r, n)
        return sum(counts.values())

    def _remove(self, key: str, item: _Item) -> None:
        del self._items[key]
        self._bytes -= item.size

    def _compact_expiry(self) -> None:
        # Replaced and deleted keys leave stale heap records; rebuild when they
        # outnumber live ones so the heap stays O(entries).
        if len(self._expiry) > 2 * len(self._items) + 64:
            self._expiry = [(it.expires_at, k) for k, it in self._items.items()]
            heapq.heapify(self._expiry)
