"""The Cache gRPC servicer: proto <-> backend adaptation, validation and metrics only.

A backend failure never fails a Lookup or Store: Lookup answers a miss and Store
answers ``stored=false`` with the reason, and both are counted. Only bad input
(INVALID_ARGUMENT) and a failed Invalidate (UNAVAILABLE) are errors to the caller.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time

import grpc
from google.protobuf.message import DecodeError

from tollgate.cache.v1 import cache_pb2, cache_pb2_grpc
from tollgate_cache.backend import Backend, BackendError
from tollgate_cache.metrics import CacheMetrics
from tollgate_cache.window import HitRateWindow
from tollgate_common import tracing
from tollgate_common.grpc.auth import Allowed

log = logging.getLogger(__name__)

SERVICE_NAME = cache_pb2.DESCRIPTOR.services_by_name["Cache"].full_name

# Who may call each method (checked by tollgate_common.grpc.auth; docs/security.md H-2):
# only orchestrators read and write entries; the operator may also flush and look.
CALLERS: dict[str, Allowed] = {
    f"/{SERVICE_NAME}/Lookup": frozenset({"orchestrator"}),
    f"/{SERVICE_NAME}/Store": frozenset({"orchestrator"}),
    f"/{SERVICE_NAME}/Invalidate": frozenset({"operator", "orchestrator"}),
    f"/{SERVICE_NAME}/Stats": frozenset({"operator", "orchestrator"}),
}

KEY_RE = re.compile(r"[0-9a-f]{64}")
KEY_HELP = "key: must be the 64-character lowercase sha256 hex from tollgate_common.cachekey"


class InvalidInput(ValueError):
    """A request field is wrong; the message names it."""


def check_key(key: str) -> None:
    if not KEY_RE.fullmatch(key):
        raise InvalidInput(KEY_HELP)


MAX_ENTRY_COST_USD = 1000.0  # one answer's cost; a bigger one is a bug or a forgery


def check_store(request: cache_pb2.StoreRequest) -> None:
    check_key(request.key)
    if not request.HasField("entry"):
        raise InvalidInput("entry: required")
    entry = request.entry
    if not entry.body:
        raise InvalidInput("entry.body: required (the upstream response)")
    if not math.isfinite(entry.cost_usd) or not 0 <= entry.cost_usd <= MAX_ENTRY_COST_USD:
        raise InvalidInput(f"entry.cost_usd: must be a number in [0, {MAX_ENTRY_COST_USD:g}]")
    if request.ttl_seconds < 0:
        raise InvalidInput("ttl_seconds: must be >= 0 (0 means the server default)")


class CacheService(cache_pb2_grpc.CacheServicer):
    def __init__(
        self,
        backend: Backend,
        metrics: CacheMetrics,
        window: HitRateWindow,
        default_ttl_seconds: int,
        max_ttl_seconds: int = 2_592_000,
    ) -> None:
        self.backend = backend
        self.metrics = metrics
        self.window = window
        self.default_ttl = min(default_ttl_seconds, max_ttl_seconds)
        self.max_ttl = max_ttl_seconds
        self._lookup_time = metrics.duration["lookup"]
        self._store_time = metrics.duration["store"]

    async def Lookup(
        self, request: cache_pb2.LookupRequest, context: grpc.aio.ServicerContext
    ) -> cache_pb2.LookupResponse:
        try:
            check_key(request.key)
        except InvalidInput as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        start = time.perf_counter()
        try:
            raw = await self.backend.get(request.key)
        except BackendError as exc:
            self.metrics.errors["lookup"].inc()
            log.debug("lookup failed", extra={"reason": exc.reason})
            raw = None
        except asyncio.CancelledError:
            # The caller's deadline ran out while the backend was still busy: a slow
            # backend as far as the caller is concerned, so it counts as an error.
            self.metrics.errors["lookup"].inc()
            raise
        finally:
            self._lookup_time.observe(time.perf_counter() - start)
        response = cache_pb2.LookupResponse()
        if raw is not None:
            try:
                response.entry.MergeFromString(raw)
                response.hit = True
            except DecodeError:
                self.metrics.errors["lookup"].inc()
                log.warning("unreadable cache entry; answered a miss")
                response = cache_pb2.LookupResponse()
        self.window.record(response.hit)
        result = "hit" if response.hit else "miss"
        if tracing.on:
            tracing.annotate({"tollgate.cache": result})
        log.debug("looked up", extra={"result": result})
        if response.hit:
            usage = response.entry.usage
            tokens = usage.prompt_tokens + usage.completion_tokens
            self.metrics.hit(tokens, response.entry.cost_usd)
        else:
            self.metrics.miss()
        return response

    async def Store(
        self, request: cache_pb2.StoreRequest, context: grpc.aio.ServicerContext
    ) -> cache_pb2.StoreResponse:
        try:
            check_store(request)
        except InvalidInput as exc:
            self.metrics.stores("invalid").inc()
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        entry = request.entry
        if entry.created_unix == 0:
            entry.created_unix = int(time.time())
        value = entry.SerializeToString()
        # Never longer than this service allows, whatever the caller asks (L-6).
        ttl = min(request.ttl_seconds or self.default_ttl, self.max_ttl)
        start = time.perf_counter()
        try:
            stored = await self.backend.set(request.key, value, ttl)
        except BackendError as exc:
            self.metrics.errors["store"].inc()
            self.metrics.stores("backend_error").inc()
            log.debug("store failed", extra={"reason": exc.reason})
            return cache_pb2.StoreResponse(stored=False, reason=exc.reason)
        finally:
            self._store_time.observe(time.perf_counter() - start)
        if tracing.on:
            tracing.annotate({"tollgate.cache.stored": stored, "tollgate.cache.ttl_seconds": ttl})
        if not stored:
            self.metrics.stores("too_large").inc()
            return cache_pb2.StoreResponse(stored=False, reason="too_large")
        self.metrics.stores("stored").inc()
        return cache_pb2.StoreResponse(stored=True)

    async def Invalidate(
        self, request: cache_pb2.InvalidateRequest, context: grpc.aio.ServicerContext
    ) -> cache_pb2.InvalidateResponse:
        target = request.WhichOneof("target")
        try:
            if target is None:
                raise InvalidInput("target: set either key or all")
            if target == "key":
                check_key(request.key)
            elif not request.all:
                raise InvalidInput("all: must be true to remove every entry")
        except InvalidInput as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        start = time.perf_counter()
        try:
            if target == "key":
                removed = await self.backend.delete(request.key)
            else:
                removed = await self.backend.clear()
        except BackendError as exc:
            self.metrics.errors["invalidate"].inc()
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, f"cache backend unavailable: {exc.reason}"
            )
        finally:
            self.metrics.duration["invalidate"].observe(time.perf_counter() - start)
        self.metrics.invalidations.inc(removed)
        log.info("invalidated", extra={"removed": removed, "all": target == "all"})
        return cache_pb2.InvalidateResponse(removed=removed)

    async def Stats(
        self, request: cache_pb2.StatsRequest, context: grpc.aio.ServicerContext
    ) -> cache_pb2.StatsResponse:
        if self.backend.name == "redis":
            await self.maintain()  # fresh numbers; bounded and breaker-guarded
        m = self.metrics
        return cache_pb2.StatsResponse(
            backend=self.backend.name,
            entries=self.backend.entries(),
            bytes=self.backend.size_bytes(),
            capacity_bytes=self.backend.capacity_bytes(),
            hits=m.hit_count,
            misses=m.miss_count,
            evictions=m.eviction_count,
            hit_rate=self.window.rate(),
            saved_usd=m.saved_usd_total,
            saved_tokens=m.saved_token_count,
        )

    async def maintain(self) -> None:
        """Periodic upkeep (TTL sweep or Redis size refresh); failures are counted, not raised."""
        start = time.perf_counter()
        try:
            await self.backend.maintain()
        except BackendError as exc:
            self.metrics.errors["maintain"].inc()
            log.debug("maintenance failed", extra={"reason": exc.reason})
        finally:
            self.metrics.duration["maintain"].observe(time.perf_counter() - start)
