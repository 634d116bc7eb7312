"""MemoryStore: TTL, LRU bounded in bytes, eviction reasons, oversize refusal."""

from __future__ import annotations

from collections import Counter

import pytest

from tollgate_cache.memory import ENTRY_OVERHEAD, EvictionReason, MemoryStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(max_bytes: int = 100, max_entry: int = 50) -> tuple[MemoryStore, Clock, Counter[str]]:
    clock = Clock()
    evicted: Counter[str] = Counter()

    def on_evict(reason: EvictionReason, n: int) -> None:
        evicted[reason] += n

    store = MemoryStore(max_bytes, max_entry, clock=clock, on_evict=on_evict, entry_overhead=0)
    return store, clock, evicted


def test_get_returns_what_set_stored_and_size_is_key_plus_value() -> None:
    store, _, _ = make()
    assert store.set("k1", b"x" * 8, 60)
    assert store.get("k1") == b"x" * 8
    assert store.entries == 1
    assert store.size_bytes == 2 + 8
    assert store.get("nope") is None


def test_expired_entry_is_a_miss_counted_as_ttl() -> None:
    store, clock, evicted = make()
    store.set("k1", b"v", 10)
    clock.now += 9.9
    assert store.get("k1") == b"v"
    clock.now += 0.2
    assert store.get("k1") is None
    assert evicted == {"ttl": 1}
    assert store.entries == 0 and store.size_bytes == 0


def test_sweep_drops_only_expired_entries() -> None:
    store, clock, evicted = make()
    store.set("short", b"v", 5)
    store.set("long", b"v", 50)
    clock.now += 10
    assert store.sweep() == 1
    assert evicted == {"ttl": 1}
    assert store.get("long") == b"v"
    assert store.entries == 1


def test_sweep_ignores_the_old_expiry_of_a_replaced_key() -> None:
    store, clock, _ = make()
    store.set("k", b"v", 5)
    store.set("k", b"w", 50)  # replaced with a longer TTL
    clock.now += 10
    assert store.sweep() == 0
    assert store.get("k") == b"w"


def test_lru_evicts_least_recently_used_by_bytes() -> None:
    store, _, evicted = make(max_bytes=30)
    for k in ("a", "b", "c"):
        store.set(k, b"x" * 9, 60)  # 10 bytes each: full
    assert store.get("a") == b"x" * 9  # "a" is now the most recent; "b" is the LRU
    store.set("d", b"x" * 9, 60)
    assert store.get("b") is None
    assert {k for k in "acd" if store.get(k) is not None} == {"a", "c", "d"}
    assert evicted == {"lru": 1}
    assert store.size_bytes == 30


def test_one_big_entry_evicts_several_small_ones() -> None:
    store, _, evicted = make(max_bytes=40, max_entry=40)
    for k in ("a", "b", "c", "d"):
        store.set(k, b"x" * 9, 60)
    store.set("big", b"x" * 22, 60)  # 25 bytes: needs three 10-byte entries gone
    assert evicted == {"lru": 3}
    assert store.entries == 2
    assert store.size_bytes == 35


def test_expired_entries_evicted_for_room_count_as_ttl() -> None:
    store, clock, evicted = make(max_bytes=20)
    store.set("old", b"x" * 7, 1)
    store.set("new", b"x" * 7, 100)
    clock.now += 5
    store.set("more", b"x" * 6, 100)
    assert evicted == {"ttl": 1}


def test_oversize_entry_is_refused_and_counted() -> None:
    store, _, evicted = make(max_bytes=100, max_entry=50)
    assert store.set("k", b"x" * 49, 60)  # 1 + 49 = 50: exactly the limit
    assert not store.set("k", b"x" * 50, 60)  # 51
    assert not store.set("other", b"x" * 60, 60)
    assert evicted == {"size": 2}
    # A refused replacement removes the old value rather than serving a stale one.
    assert store.get("k") is None
    assert store.size_bytes == 0


def test_replacing_a_key_keeps_byte_accounting_exact() -> None:
    store, _, _ = make()
    store.set("k", b"x" * 20, 60)
    store.set("k", b"x" * 5, 60)
    assert store.entries == 1
    assert store.size_bytes == 6


def test_shrinking_capacity_drops_entries_counted_as_size() -> None:
    store, _, evicted = make(max_bytes=100)
    for k in "abcde":
        store.set(k, b"x" * 9, 60)
    assert store.resize(25) == 3
    assert evicted == {"size": 3}
    assert store.size_bytes == 20
    assert store.get("d") is not None and store.get("e") is not None


def test_delete_and_clear() -> None:
    store, _, evicted = make()
    store.set("a", b"1", 60)
    store.set("b", b"2", 60)
    assert store.delete("a") is True
    assert store.delete("a") is False
    assert store.clear() == 1
    assert store.entries == 0 and store.size_bytes == 0
    assert not evicted  # removals are invalidations, not evictions


def test_expiry_heap_stays_bounded_under_rewrites() -> None:
    store, _, _ = make(max_bytes=10_000, max_entry=100)
    for i in range(5000):
        store.set(f"k{i % 10}", b"v", 60)
    assert store.entries == 10
    assert len(store._expiry) <= 2 * store.entries + 64 + 1


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        MemoryStore(0, 10)
    store, _, _ = make()
    with pytest.raises(ValueError, match="ttl_seconds"):
        store.set("k", b"v", 0)


def test_the_per_entry_overhead_is_counted() -> None:
    """100k tiny entries took 4.8x their accounted bytes before (L-4)."""
    store = MemoryStore(10_000, 1_000)
    assert store.set("k", b"v" * 20, 60)
    assert store.size_bytes == ENTRY_OVERHEAD + 21
    for i in range(100):
        store.set(f"k{i}", b"v" * 20, 60)
    assert store.size_bytes <= 10_000 and store.entries < 100
