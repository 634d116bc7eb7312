"""The cache as a real process on a real redis-server: shared hits, TTL, and what
happens when Redis refuses connections or freezes (SIGSTOP) and comes back."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RedisServer
from tests.integration.test_cache import CALL_TIMEOUT, CacheClient, entry, key, start_cache
from tollgate.cache.v1 import cache_pb2
from tools.stack import Stack, free_port

pytestmark = pytest.mark.integration

Factory = Callable[..., CacheClient]


@pytest.fixture
def redis_cache(tmp_path: Path) -> Iterator[Factory]:
    """Start cache processes with the Redis backend; all are stopped at teardown."""
    stacks: list[Stack] = []
    clients: list[CacheClient] = []

    def make(redis_url: str, **env: str) -> CacheClient:
        cache_env = {
            "TOLLGATE_CACHE_BACKEND": "redis",
            "TOLLGATE_CACHE_REDIS_URL": redis_url,
            **{f"TOLLGATE_CACHE_{k.upper()}": v for k, v in env.items()},
        }
        stack = Stack(log_dir=tmp_path / f"cache{len(stacks)}", cache_env=cache_env)
        stacks.append(stack)
        client = start_cache(stack)
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.close()
    for s in stacks:
        s.stop()


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.monotonic()
    result = fn()
    return result, time.monotonic() - start


def test_two_processes_share_hits_through_redis(
    redis_server: RedisServer, redis_cache: Factory
) -> None:
    a = redis_cache(redis_server.url)
    b = redis_cache(redis_server.url)
    k = key("shared question")
    assert not b.lookup(k).hit
    assert a.store(k, entry("shared answer", cost=0.004)).stored
    hit = b.lookup(k)
    assert hit.hit and b"shared answer" in hit.entry.body
    assert hit.entry.cost_usd == pytest.approx(0.004)
    assert b.metric("tollgate_cache_saved_usd_total") == pytest.approx(0.004)
    assert b.metric("tollgate_prompt_cache_hit_rate") == pytest.approx(0.5)
    assert b.metric("tollgate_cache_lookups_total", result="hit") == 1
    assert a.metric("tollgate_cache_stores_total", result="stored") == 1
    stats = a.stats()
    assert (stats.backend, stats.entries) == ("redis", 1)
    assert stats.bytes > 0 and stats.capacity_bytes > 0
    # Invalidate through one process removes the entry for both.
    removed = b.stub.Invalidate(cache_pb2.InvalidateRequest(all=True), timeout=CALL_TIMEOUT)
    assert removed.removed == 1
    assert not a.lookup(k).hit


def test_entries_expire_after_their_ttl(redis_server: RedisServer, redis_cache: Factory) -> None:
    c = redis_cache(redis_server.url)
    short, long = key("short-lived"), key("long-lived")
    assert c.store(short, entry(), ttl=1).stored
    assert c.store(long, entry()).stored  # the default TTL: an hour
    assert c.lookup(short).hit
    deadline = time.monotonic() + CALL_TIMEOUT
    while c.lookup(short).hit and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not c.lookup(short).hit
    assert c.lookup(long).hit


def test_refused_redis_gives_misses_and_refusals_without_hanging(redis_cache: Factory) -> None:
    # Nothing listens on this port: the cache must still start and answer.
    c = redis_cache(f"redis://127.0.0.1:{free_port()}/0")
    k = key("anything")
    for _ in range(5):
        resp, took = timed(lambda: c.lookup(k))
        assert not resp.hit
        assert took < CALL_TIMEOUT
    stored = c.store(k, entry())
    assert not stored.stored and stored.reason in ("unavailable", "breaker_open")
    assert c.metric("tollgate_cache_backend_errors_total", backend="redis", operation="lookup") == 5
    assert c.metric("tollgate_cache_backend_errors_total", backend="redis", operation="store") == 1
    assert c.metric("tollgate_cache_stores_total", result="backend_error") == 1
    assert c.metric("tollgate_cache_lookups_total", result="miss") == 5
    assert c.metric("tollgate_prompt_cache_hit_rate") == 0


def test_frozen_redis_trips_the_breaker_then_hits_resume(
    redis_server: RedisServer, redis_cache: Factory
) -> None:
    c = redis_cache(
        redis_server.url,
        redis_timeout_seconds="0.2",
        breaker_failures="3",
        breaker_reset_seconds="2",
    )
    k = key("survives a freeze")
    assert c.store(k, entry("kept")).stored
    assert c.lookup(k).hit
    os.kill(redis_server.proc.pid, signal.SIGSTOP)
    try:
        # Redis accepts nothing and answers nothing: each call is cut at its timeout.
        for _ in range(3):
            resp, took = timed(lambda: c.lookup(k))
            assert not resp.hit
            assert took < CALL_TIMEOUT
        # The breaker is open now: the store is refused without touching Redis.
        refused, took = timed(lambda: c.store(key("during the freeze"), entry()))
        assert (refused.stored, refused.reason) == (False, "breaker_open")
        assert took < CALL_TIMEOUT
        errors = c.metric(
            "tollgate_cache_backend_errors_total", backend="redis", operation="lookup"
        )
        assert errors >= 3
    finally:
        os.kill(redis_server.proc.pid, signal.SIGCONT)
    # Back: after the reset period one probe goes through, succeeds, and hits resume.
    deadline = time.monotonic() + CALL_TIMEOUT
    while not c.lookup(k).hit:
        assert time.monotonic() < deadline, "hits did not resume after Redis came back"
        time.sleep(0.2)
    # Replies queued while frozen must not be read as answers to later calls.
    assert b'"kept"' in c.lookup(k).entry.body
    assert c.store(key("after the freeze"), entry("later")).stored
    assert b'"later"' in c.lookup(key("after the freeze")).entry.body
