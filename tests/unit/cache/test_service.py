"""The servicer in-process on a real grpc.aio server: hits, misses, savings, bad input,
backend failures answered as misses, and the metrics each of them moves."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry

from tollgate.cache.v1 import cache_pb2, cache_pb2_grpc
from tollgate_cache.backend import BackendError, BackendName
from tollgate_cache.config import CacheSettings
from tollgate_cache.memory import ENTRY_OVERHEAD
from tollgate_cache.service import SERVICE_NAME, CacheService
from tollgate_cache.wiring import build_service
from tollgate_common.cachekey import cache_key
from tollgate_common.grpc.server import start_grpc_server
from tollgate_common.metrics import create_families

KEY = cache_key("gpt-4o-mini", {"messages": [{"role": "user", "content": "hi"}]}, "team-a")
KEY2 = cache_key("gpt-4o-mini", {"messages": [{"role": "user", "content": "yo"}]}, "team-a")


def entry(body: bytes = b'{"id":"x"}', cost: float = 0.002) -> cache_pb2.Entry:
    return cache_pb2.Entry(
        body=body,
        model="gpt-4o-mini",
        usage=cache_pb2.Usage(prompt_tokens=10, completion_tokens=5),
        cost_usd=cost,
    )


@dataclass
class Harness:
    stub: Any
    registry: CollectorRegistry
    service: CacheService

    def metric(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


async def _harness(service_factory: Any, **settings: Any) -> AsyncIterator[Harness]:
    registry = CollectorRegistry()
    families = create_families("cache", registry)
    service = service_factory(CacheSettings(**settings), families)

    def register(server: grpc.aio.Server) -> list[str]:
        cache_pb2_grpc.add_CacheServicer_to_server(service, server)
        return [SERVICE_NAME]

    srv = await start_grpc_server(
        settings=CacheSettings(grpc_allow_unauthenticated=True),
        port=0,
        families=families,
        register=register,
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
        yield Harness(cache_pb2_grpc.CacheStub(ch), registry, service)
    await srv.stop(0)


@pytest.fixture
async def cache() -> AsyncIterator[Harness]:
    async for h in _harness(build_service, hit_rate_window=4, max_entry_bytes=4096):
        yield h


async def test_store_then_lookup_hits_and_counts_savings(cache: Harness) -> None:
    miss = await cache.stub.Lookup(cache_pb2.LookupRequest(key=KEY), timeout=5)
    assert not miss.hit
    stored = await cache.stub.Store(cache_pb2.StoreRequest(key=KEY, entry=entry()), timeout=5)
    assert stored.stored
    hit = await cache.stub.Lookup(cache_pb2.LookupRequest(key=KEY), timeout=5)
    assert hit.hit
    assert hit.entry.body == b'{"id":"x"}'
    assert hit.entry.model == "gpt-4o-mini"
    assert hit.entry.created_unix > 0  # stamped by the server
    assert cache.metric("tollgate_cache_lookups_total", result="hit") == 1
    assert cache.metric("tollgate_cache_lookups_total", result="miss") == 1
    assert cache.metric("tollgate_prompt_cache_hit_rate") == 0.5
    assert cache.metric("tollgate_cache_saved_tokens_total") == 15
    assert cache.metric("tollgate_cache_saved_usd_total") == pytest.approx(0.002)
    assert cache.metric("tollgate_cache_stores_total", result="stored") == 1
    assert cache.metric("tollgate_cache_entries", backend="memory") == 1
    size = ENTRY_OVERHEAD + len(KEY) + len(hit.entry.SerializeToString())
    assert cache.metric("tollgate_cache_size_bytes", backend="memory") == size
    stats = await cache.stub.Stats(cache_pb2.StatsRequest(), timeout=5)
    assert (stats.backend, stats.entries, stats.bytes) == ("memory", 1, size)
    assert (stats.hits, stats.misses, stats.saved_tokens) == (1, 1, 15)
    assert stats.hit_rate == 0.5
    assert stats.capacity_bytes == 256 * 1024 * 1024


async def test_hit_rate_gauge_is_a_rolling_window(cache: Harness) -> None:
    await cache.stub.Store(cache_pb2.StoreRequest(key=KEY, entry=entry()), timeout=5)
    for _ in range(4):
        await cache.stub.Lookup(cache_pb2.LookupRequest(key=KEY2), timeout=5)
    assert cache.metric("tollgate_prompt_cache_hit_rate") == 0.0
    for _ in range(3):
        await cache.stub.Lookup(cache_pb2.LookupRequest(key=KEY), timeout=5)
    assert cache.metric("tollgate_prompt_cache_hit_rate") == 0.75  # window of 4


async def test_eviction_reasons_are_exposed_from_zero(cache: Harness) -> None:
    for reason in ("lru", "ttl", "size"):
        assert (
            cache.registry.get_sample_value("tollgate_cache_evictions_total", {"reason": reason})
            == 0
        )
    big = entry(body=b"x" * 5000)
    resp = await cache.stub.Store(cache_pb2.StoreRequest(key=KEY, entry=big), timeout=5)
    assert (resp.stored, resp.reason) == (False, "too_large")
    assert cache.metric("tollgate_cache_evictions_total", reason="size") == 1
    assert cache.metric("tollgate_cache_stores_total", result="too_large") == 1


async def test_invalidate_one_key_or_everything(cache: Harness) -> None:
    for k in (KEY, KEY2):
        await cache.stub.Store(cache_pb2.StoreRequest(key=k, entry=entry()), timeout=5)
    one = await cache.stub.Invalidate(cache_pb2.InvalidateRequest(key=KEY), timeout=5)
    assert one.removed == 1
    assert not (await cache.stub.Lookup(cache_pb2.LookupRequest(key=KEY), timeout=5)).hit
    rest = await cache.stub.Invalidate(cache_pb2.InvalidateRequest(all=True), timeout=5)
    assert rest.removed == 1
    assert cache.metric("tollgate_cache_invalidations_total") == 2
    assert cache.metric("tollgate_cache_entries", backend="memory") == 0


@pytest.mark.parametrize(
    ("call", "request_", "field"),
    [
        ("Lookup", cache_pb2.LookupRequest(key="not-a-sha"), "key"),
        ("Lookup", cache_pb2.LookupRequest(key=KEY.upper()), "key"),
        ("Store", cache_pb2.StoreRequest(key=KEY), "entry"),
        ("Store", cache_pb2.StoreRequest(key=KEY, entry=entry(body=b"")), "entry.body"),
        ("Store", cache_pb2.StoreRequest(key=KEY, entry=entry(cost=-1)), "entry.cost_usd"),
        ("Store", cache_pb2.StoreRequest(key=KEY, entry=entry(cost=1e6)), "entry.cost_usd"),
        ("Store", cache_pb2.StoreRequest(key=KEY, entry=entry(), ttl_seconds=-5), "ttl_seconds"),
        ("Invalidate", cache_pb2.InvalidateRequest(), "target"),
        ("Invalidate", cache_pb2.InvalidateRequest(all=False), "all"),
        ("Invalidate", cache_pb2.InvalidateRequest(key="x"), "key"),
    ],
)
async def test_bad_input_is_invalid_argument_naming_the_field(
    cache: Harness, call: str, request_: Any, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await getattr(cache.stub, call)(request_, timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (err.value.details() or "").startswith(f"{field}:")


class BrokenBackend:
    """Every operation fails the way an unreachable Redis does."""

    name: BackendName = "redis"

    async def get(self, key: str) -> bytes | None:
        raise BackendError("unavailable")

    async def set(self, key: str, value: bytes, ttl_seconds: int) -> bool:
        raise BackendError("breaker_open")

    async def delete(self, key: str) -> int:
        raise BackendError("timeout")

    async def clear(self) -> int:
        raise BackendError("timeout")

    async def maintain(self) -> None:
        raise BackendError("unavailable")

    def entries(self) -> int:
        return 0

    def size_bytes(self) -> int:
        return 0

    def capacity_bytes(self) -> int:
        return 1

    async def close(self) -> None:
        return None


def _broken(settings: CacheSettings, families: Any) -> CacheService:
    svc = build_service(settings, families)  # for its metrics and window
    return CacheService(BrokenBackend(), svc.metrics, svc.window, 60)


async def test_backend_failures_become_misses_and_refusals_and_are_counted() -> None:
    async for h in _harness(_broken):
        miss = await h.stub.Lookup(cache_pb2.LookupRequest(key=KEY), timeout=5)
        assert not miss.hit
        st = await h.stub.Store(cache_pb2.StoreRequest(key=KEY, entry=entry()), timeout=5)
        assert (st.stored, st.reason) == (False, "breaker_open")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await h.stub.Invalidate(cache_pb2.InvalidateRequest(key=KEY), timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        stats = await h.stub.Stats(cache_pb2.StatsRequest(), timeout=5)
        assert stats.misses == 1
        labels = {"backend": "memory"}  # the metrics were bound for the settings' backend
        for op in ("lookup", "store", "invalidate", "maintain"):
            assert (
                h.registry.get_sample_value(
                    "tollgate_cache_backend_errors_total", {**labels, "operation": op}
                )
                == 1
            ), op
        assert h.metric("tollgate_cache_stores_total", result="backend_error") == 1
        assert h.metric("tollgate_cache_lookups_total", result="miss") == 1


class RecordingBackend(BrokenBackend):
    ttls: list[int] = []

    async def set(self, key: str, value: bytes, ttl_seconds: int) -> bool:
        RecordingBackend.ttls.append(ttl_seconds)
        return True


def _recording(settings: Any, families: Any) -> CacheService:
    svc = build_service(settings, families)
    return CacheService(RecordingBackend(), svc.metrics, svc.window, 60, max_ttl_seconds=600)


async def test_a_store_ttl_is_capped_whatever_the_caller_asks() -> None:
    """L-6: an int32 TTL allowed ~68 years; max_ttl_seconds bounds every store."""
    async for h in _harness(_recording):
        for ttl in (2**31 - 1, 0, 30):
            req = cache_pb2.StoreRequest(key=KEY, entry=entry(), ttl_seconds=ttl)
            assert (await h.stub.Store(req, timeout=5)).stored
    assert RecordingBackend.ttls == [600, 60, 30]
