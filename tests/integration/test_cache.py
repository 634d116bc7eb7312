"""The cache as a real process with the memory backend: health, the RPCs, /metrics."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from tollgate.cache.v1 import cache_pb2, cache_pb2_grpc
from tollgate_common.cachekey import cache_key
from tools.stack import Stack

pytestmark = pytest.mark.integration
CALL_TIMEOUT = 10.0  # a "does not hang" bound, not a latency assertion


def key(text: str, tenant: str = "team-a") -> str:
    return cache_key("gpt-4o-mini", {"messages": [{"role": "user", "content": text}]}, tenant)


def entry(text: str = "hello", cost: float = 0.001) -> cache_pb2.Entry:
    body = b'{"object":"chat.completion","choices":[{"message":{"content":"%s"}}]}' % (
        text.encode()
    )
    return cache_pb2.Entry(
        body=body,
        model="gpt-4o-mini",
        usage=cache_pb2.Usage(prompt_tokens=12, completion_tokens=8),
        cost_usd=cost,
    )


class CacheClient:
    """A blocking client for one cache process; every call carries a deadline."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        # Lookup and Store are the orchestrator's (tollgate_cache.service.CALLERS).
        self.channel = stack.caller_channel(stack.ports.cache, "orchestrator")
        self.stub: Any = cache_pb2_grpc.CacheStub(self.channel)

    def lookup(self, k: str) -> Any:
        return self.stub.Lookup(cache_pb2.LookupRequest(key=k), timeout=CALL_TIMEOUT)

    def store(self, k: str, e: cache_pb2.Entry, ttl: int = 0) -> Any:
        req = cache_pb2.StoreRequest(key=k, entry=e, ttl_seconds=ttl)
        return self.stub.Store(req, timeout=CALL_TIMEOUT)

    def stats(self) -> Any:
        return self.stub.Stats(cache_pb2.StatsRequest(), timeout=CALL_TIMEOUT)

    def metrics_text(self) -> str:
        url = f"http://127.0.0.1:{self.stack.ports.cache_metrics}/metrics"
        with urllib.request.urlopen(url, timeout=CALL_TIMEOUT) as resp:
            return str(resp.read().decode())

    def metric(self, name: str, **labels: str) -> float:
        """One sample's value from /metrics (0 when absent)."""
        for family in text_string_to_metric_families(self.metrics_text()):
            for s in family.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    return float(s.value)
        return 0.0

    def close(self) -> None:
        self.channel.close()


def start_cache(stack: Stack) -> CacheClient:
    stack.start_cache()
    return CacheClient(stack)


@pytest.fixture
def memory_cache(tmp_path: Path) -> Iterator[CacheClient]:
    stack = Stack(log_dir=tmp_path, cache_env={"TOLLGATE_CACHE_HIT_RATE_WINDOW": "10"})
    try:
        client = start_cache(stack)
        yield client
        client.close()
    finally:
        stack.stop()


def test_health_serving_for_server_and_cache_service(memory_cache: CacheClient) -> None:
    stub = health_pb2_grpc.HealthStub(memory_cache.channel)
    for service in ("", "tollgate.cache.v1.Cache"):
        resp = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=CALL_TIMEOUT)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING


def test_store_lookup_invalidate_and_metrics(memory_cache: CacheClient) -> None:
    c = memory_cache
    k = key("what is a gateway")
    assert not c.lookup(k).hit
    assert c.store(k, entry("a gateway")).stored
    hit = c.lookup(k)
    assert hit.hit and b"a gateway" in hit.entry.body
    assert hit.entry.usage.prompt_tokens == 12
    # Another tenant's identical prompt has another key: no cross-tenant hit.
    assert not c.lookup(key("what is a gateway", tenant="team-b")).hit

    text = c.metrics_text()
    assert "cache_hit_rate" in text  # the seed's documented grep
    assert "tollgate_prompt_cache_hit_rate" in text
    assert 'tollgate_build_info{service="cache"' in text
    assert c.metric("tollgate_prompt_cache_hit_rate") == pytest.approx(1 / 3)
    assert c.metric("tollgate_cache_lookups_total", result="hit") == 1
    assert c.metric("tollgate_cache_saved_tokens_total") == 20
    assert c.metric("tollgate_cache_saved_usd_total") == pytest.approx(0.001)
    assert c.metric("tollgate_cache_entries", backend="memory") == 1
    assert c.metric("tollgate_cache_capacity_bytes", backend="memory") == 256 * 1024 * 1024
    assert c.metric("grpc_server_handled_total", grpc_method="Lookup", grpc_code="OK") == 3

    removed = c.stub.Invalidate(cache_pb2.InvalidateRequest(all=True), timeout=CALL_TIMEOUT)
    assert removed.removed == 1
    assert not c.lookup(k).hit
    assert c.stats().entries == 0
