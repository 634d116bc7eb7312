"""Redis down under the cache service and the budget counters, through the orchestrator
(issue 4 §2), with a real redis-server.

``tests/integration/test_orchestrator_degraded.py`` already proves the budget policy
(allow counted, refuse 503) against a refused port and a silent listener. Here one
real Redis serves both the cache backend and the budget counters, and it is either
frozen with SIGSTOP (accepts, never answers) or absent from the start (refused):
requests still answer within a generous bound, the degraded counters move, ``/readyz``
names the dependency while ``/healthz`` stays 200, and everything recovers when Redis
comes back.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from openai import OpenAI

from tests.reliability.common import get, scrape, total
from tools.stack import DEV_KEY, Stack, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BOUND = 5.0  # seconds: a generous "does not hang" for one request
RECOVERY = 20.0  # breakers cool down (2 s, 5 s) and the gRPC channel reconnects (<= 2 s)
BUDGET = orjson.dumps([{"tenant": "dev", "period": "day", "limit_usd": 100}]).decode()
CACHED = "What is the tallest mountain in Europe?"


def launch_redis(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not installed: run `make system-deps`")
    args = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(
        [*args, "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    client = redis.Redis(port=port, socket_timeout=0.5)
    try:
        for _ in range(100):
            try:
                if client.ping():
                    return proc
            except redis.RedisError:
                time.sleep(0.05)
    finally:
        client.close()
    proc.kill()
    pytest.fail("redis-server did not start")


@pytest.fixture
def redis_port(tmp_path: Path) -> Iterator[tuple[int, list[subprocess.Popen[bytes]]]]:
    """A port for Redis and the list of redis-servers started on it; all are killed."""
    procs: list[subprocess.Popen[bytes]] = []
    yield free_port(), procs
    for p in procs:
        p.send_signal(signal.SIGCONT)  # a stopped process cannot act on SIGKILL's cleanup
        p.kill()
        p.wait(5)


def redis_stack(factory: Callable[..., Stack], port: int) -> Stack:
    url = f"redis://127.0.0.1:{port}/0"
    s = factory(
        cache_env={"TOLLGATE_CACHE_BACKEND": "redis", "TOLLGATE_CACHE_REDIS_URL": url},
        orch_env={
            "TOLLGATE_ORCHESTRATOR_BUDGET_REDIS_URL": url,
            # Budgets not enforced but counted while Redis is gone (refuse is the default).
            "TOLLGATE_ORCHESTRATOR_BUDGET_UNCHECKED_POLICY": "allow",
            "TOLLGATE_ORCHESTRATOR_BUDGETS": BUDGET,
            "TOLLGATE_ORCHESTRATOR_PROBE_INTERVAL_SECONDS": "0.2",
        },
    )
    s.start()
    return s


def ask(base: str, text: str = CACHED) -> tuple[Any, float]:
    started = time.monotonic()
    with OpenAI(base_url=base + "/v1", api_key=DEV_KEY, max_retries=0, timeout=30) as c:
        r = c.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": text}], temperature=0
        )
    assert r.parse().choices[0].message.content
    return r, time.monotonic() - started


def readiness(base: str) -> tuple[int, dict[str, str], int]:
    status, body = get(base + "/readyz")
    return status, orjson.loads(body)["dependencies"], get(base + "/healthz")[0]


def wait_for(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + RECOVERY
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    pytest.fail(f"not recovered within {RECOVERY} s: {what}")


def cache_metrics(stack: Stack) -> dict[Any, float]:
    return scrape(f"http://127.0.0.1:{stack.ports.cache_metrics}")


def unchecked(stack: Stack) -> float:
    m = scrape(stack.orchestrator_metrics_url)
    return total(m, "tollgate_budget_actions_total", action="unchecked")


def test_frozen_redis_costs_a_bounded_delay_and_recovers(
    stack_factory: Any, redis_port: tuple[int, list[subprocess.Popen[bytes]]], tmp_path: Path
) -> None:
    port, procs = redis_port
    procs.append(launch_redis(port, tmp_path))
    stack = redis_stack(stack_factory, port)
    base = stack.base_url
    ask(base)
    assert ask(base)[0].headers["x-tollgate-cache"] == "hit"  # Redis-backed cache works
    assert unchecked(stack) == 0
    cache_errors = total(cache_metrics(stack), "tollgate_cache_backend_errors_total")

    procs[0].send_signal(signal.SIGSTOP)
    try:
        for i in range(6):  # the first calls wait out a timeout; then the breakers skip
            r, took = ask(base)
            assert took < BOUND, f"request {i} took {took:.1f} s against a frozen Redis"
            assert r.headers["x-tollgate-cache"] in ("miss", "bypass")
        wait_for(lambda: readiness(base)[1]["budget_store"] == "down", "readyz budget_store")
        status, deps, live = readiness(base)
        assert status == 200 and live == 200  # degraded, not unready; and alive
        assert deps["cache"] == "up"  # the cache service answers; its Redis does not
        m = scrape(stack.orchestrator_metrics_url)
        assert total(m, "tollgate_budget_actions_total", action="unchecked") == 6
        assert total(m, "tollgate_dependency_up", dependency="budget_store") == 0
        assert total(m, "tollgate_degraded_total", dependency="cache", reason="timeout") >= 1
        # The cache service sees its Redis fail too (its periodic upkeep, at the latest).
        wait_for(
            lambda: (
                total(cache_metrics(stack), "tollgate_cache_backend_errors_total") > cache_errors
            ),
            "tollgate_cache_backend_errors_total",
        )
    finally:
        procs[0].send_signal(signal.SIGCONT)

    wait_for(lambda: readiness(base)[1]["budget_store"] == "up", "readyz budget_store up")
    wait_for(lambda: ask(base)[0].headers["x-tollgate-cache"] == "hit", "cache hits")
    before = unchecked(stack)
    ask(base, "A fresh question after the thaw.")
    assert unchecked(stack) == before  # budgets are checked again


def test_redis_absent_at_start_then_arriving(
    stack_factory: Any, redis_port: tuple[int, list[subprocess.Popen[bytes]]], tmp_path: Path
) -> None:
    port, procs = redis_port
    stack = redis_stack(stack_factory, port)  # nothing listens: every service still starts
    base = stack.base_url
    for _ in range(4):
        r, took = ask(base)
        assert took < BOUND
        assert r.headers["x-tollgate-cache"] in ("miss", "bypass")
    wait_for(lambda: readiness(base)[1]["budget_store"] == "down", "readyz budget_store")
    status, _, live = readiness(base)
    assert status == 200 and live == 200
    assert unchecked(stack) == 4  # allowed, and never silently
    assert total(cache_metrics(stack), "tollgate_cache_backend_errors_total") >= 1

    procs.append(launch_redis(port, tmp_path))
    wait_for(lambda: readiness(base)[1]["budget_store"] == "up", "readyz budget_store up")
    wait_for(lambda: ask(base)[0].headers["x-tollgate-cache"] == "hit", "cache hits")
    spent = total(scrape(stack.orchestrator_metrics_url), "tollgate_budget_spent_usd", tenant="dev")
    assert spent > 0  # the counters live in Redis again


def test_cache_service_counts_lookups_its_callers_abandon(
    stack_factory: Any, redis_port: tuple[int, list[subprocess.Popen[bytes]]], tmp_path: Path
) -> None:
    import grpc

    from tollgate.cache.v1 import cache_pb2, cache_pb2_grpc

    port, procs = redis_port
    procs.append(launch_redis(port, tmp_path))
    s: Stack = stack_factory(
        cache_env={
            "TOLLGATE_CACHE_BACKEND": "redis",
            "TOLLGATE_CACHE_REDIS_URL": f"redis://127.0.0.1:{port}/0",
            "TOLLGATE_CACHE_MAINTENANCE_INTERVAL_SECONDS": "600",  # only lookups count here
        }
    )
    s.start_cache()
    procs[0].send_signal(signal.SIGSTOP)
    with s.caller_channel(s.ports.cache, "orchestrator") as ch:
        stub = cache_pb2_grpc.CacheStub(ch)
        outcomes = []
        for _ in range(6):  # as the orchestrator calls it: a deadline shorter than Redis's
            try:
                resp = stub.Lookup(cache_pb2.LookupRequest(key="a" * 64, model="m"), timeout=0.1)
                outcomes.append("miss" if not resp.hit else "hit")
            except grpc.RpcError:
                outcomes.append("abandoned")
    # Abandoned lookups count as backend errors and feed the breaker; once it opens
    # (3 failures) the cache answers a miss at once instead of making callers wait.
    assert outcomes[:3] == ["abandoned"] * 3, outcomes
    assert outcomes[-1] == "miss", outcomes
    errors = total(cache_metrics(s), "tollgate_cache_backend_errors_total", operation="lookup")
    assert errors >= 3
