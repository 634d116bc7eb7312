"""The cache's metric children, bound once from the catalog families.

Entries, bytes, capacity and the hit rate are read at scrape time
(``set_function``), so the request path only increments counters.
"""

from __future__ import annotations

from typing import Literal

from prometheus_client import Counter, Histogram

from tollgate_cache.backend import Backend
from tollgate_cache.memory import EVICTION_REASONS, EvictionReason
from tollgate_cache.window import HitRateWindow
from tollgate_common.metrics import Children, Families

Operation = Literal["lookup", "store", "invalidate", "maintain"]
OPERATIONS: tuple[Operation, ...] = ("lookup", "store", "invalidate", "maintain")
StoreResult = Literal["stored", "too_large", "backend_error", "invalid"]
STORE_RESULTS: tuple[StoreResult, ...] = ("stored", "too_large", "backend_error", "invalid")


class CacheMetrics:
    def __init__(self, families: Families, backend_name: str, window: HitRateWindow) -> None:
        f = families
        lookups = f.counter("tollgate_cache_lookups_total")
        self.hits: Counter = lookups.labels(result="hit")
        self.misses: Counter = lookups.labels(result="miss")
        self.evictions = Children(
            f.counter("tollgate_cache_evictions_total"), bind=[(r,) for r in EVICTION_REASONS]
        )
        self.stores = Children(
            f.counter("tollgate_cache_stores_total"), bind=[(r,) for r in STORE_RESULTS]
        )
        self.invalidations: Counter = f.counter("tollgate_cache_invalidations_total")
        # The backend label is fixed for the process: plain per-operation maps.
        duration = f.histogram("tollgate_cache_operation_duration_seconds")
        self.duration: dict[Operation, Histogram] = {
            op: duration.labels(backend=backend_name, operation=op) for op in OPERATIONS
        }
        errors = f.counter("tollgate_cache_backend_errors_total")
        self.errors: dict[Operation, Counter] = {
            op: errors.labels(backend=backend_name, operation=op) for op in OPERATIONS
        }
        self.saved_tokens: Counter = f.counter("tollgate_cache_saved_tokens_total")
        self.saved_usd: Counter = f.counter("tollgate_cache_saved_usd_total")
        f.gauge("tollgate_prompt_cache_hit_rate").set_function(window.rate)
        self._f = f
        self._backend_name = backend_name
        # Process-local totals for the Stats RPC (prometheus_client has no cheap read).
        self.hit_count = 0
        self.miss_count = 0
        self.eviction_count = 0
        self.saved_token_count = 0
        self.saved_usd_total = 0.0

    def watch(self, backend: Backend) -> None:
        """Expose the backend's size numbers, read at scrape time."""
        name = self._backend_name
        self._f.gauge("tollgate_cache_entries").labels(backend=name).set_function(backend.entries)
        self._f.gauge("tollgate_cache_size_bytes").labels(backend=name).set_function(
            backend.size_bytes
        )
        self._f.gauge("tollgate_cache_capacity_bytes").labels(backend=name).set_function(
            backend.capacity_bytes
        )

    def evicted(self, reason: EvictionReason, n: int) -> None:
        self.evictions(reason).inc(n)
        self.eviction_count += n

    def hit(self, tokens: int, usd: float) -> None:
        self.hits.inc()
        self.hit_count += 1
        if tokens > 0:
            self.saved_tokens.inc(tokens)
            self.saved_token_count += tokens
        if usd > 0:
            self.saved_usd.inc(usd)
            self.saved_usd_total += usd

    def miss(self) -> None:
        self.misses.inc()
        self.miss_count += 1
