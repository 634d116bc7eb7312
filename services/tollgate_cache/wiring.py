"""The cache's composition root: settings -> backend, metrics, servicer, gRPC server,
/metrics, the upkeep loop; then serve until SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

import grpc

from tollgate.cache.v1 import cache_pb2_grpc
from tollgate_cache.backend import Backend, MemoryBackend
from tollgate_cache.config import CacheSettings
from tollgate_cache.metrics import CacheMetrics
from tollgate_cache.redis_backend import RedisBackend, log_breaker_change
from tollgate_cache.service import CALLERS, SERVICE_NAME, CacheService
from tollgate_cache.window import HitRateWindow
from tollgate_common.breaker import BreakerConfig, CircuitBreaker
from tollgate_common.grpc.server import start_grpc_server
from tollgate_common.metrics import Families, create_families
from tollgate_common.metrics.exposition import start_metrics_server
from tollgate_common.service import shutdown, wait_for_signal

log = logging.getLogger(__name__)


def build_service(settings: CacheSettings, families: Families) -> CacheService:
    window = HitRateWindow(settings.hit_rate_window)
    metrics = CacheMetrics(families, settings.backend, window)
    backend: Backend
    if settings.backend == "redis":
        assert settings.redis_url is not None  # checked by CacheSettings
        backend = RedisBackend(
            settings.redis_url.get_secret_value(),
            timeout_seconds=settings.redis_timeout_seconds,
            max_entry_bytes=settings.max_entry_bytes,
            fallback_capacity=settings.max_bytes,
            # Consecutive failures only: a ratio rule would add nothing for one Redis.
            breaker=CircuitBreaker(
                BreakerConfig(
                    consecutive_failures=settings.breaker_failures,
                    failure_ratio=1.0,
                    cooldown_seconds=settings.breaker_reset_seconds,
                ),
                on_change=log_breaker_change,
            ),
            on_evict=metrics.evicted,
        )
    else:
        backend = MemoryBackend(settings.max_bytes, settings.max_entry_bytes, metrics.evicted)
    metrics.watch(backend)
    return CacheService(
        backend, metrics, window, settings.default_ttl_seconds, settings.max_ttl_seconds
    )


async def _upkeep(service: CacheService, interval: float) -> None:
    while True:
        await service.maintain()
        await asyncio.sleep(interval)


async def serve(settings: CacheSettings) -> None:
    families = create_families("cache")
    service = build_service(settings, families)
    start_metrics_server(families.registry, settings.metrics_port, settings.host)

    def register(server: grpc.aio.Server) -> Sequence[str]:
        cache_pb2_grpc.add_CacheServicer_to_server(service, server)
        return [SERVICE_NAME]

    # Starts even when Redis is down: lookups are misses until it comes back.
    server = await start_grpc_server(
        settings=settings,
        port=settings.grpc_port,
        families=families,
        register=register,
        callers=CALLERS,
    )
    upkeep = asyncio.create_task(_upkeep(service, settings.maintenance_interval_seconds))
    log.info(
        "cache ready",
        extra={"backend": settings.backend, "metrics_port": settings.metrics_port},
    )
    try:
        await wait_for_signal()
        await shutdown(
            server, drain_seconds=settings.drain_seconds, grace_seconds=settings.grace_seconds
        )
    finally:
        upkeep.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await upkeep
        await service.backend.close()
