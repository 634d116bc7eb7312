"""Two orchestrator replicas over one Redis: they share cache hits (through the cache
service's Redis backend) and budget counters (through their own ``budget_redis_url``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import openai
import pytest
import redis
from openai import OpenAI

from tests.conftest import RedisServer, start_redis
from tollgate.orchestrator.v1 import orchestrator_pb2, orchestrator_pb2_grpc
from tools.stack import DEV_KEY, Stack, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SHARED_KEY = "sk-shared-" + "0" * 27
KEYS = f"dev:{DEV_KEY},shared:{SHARED_KEY}"


@pytest.fixture(scope="module")
def redis_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.proc.kill()
    server.proc.wait(5)


@pytest.fixture(scope="module")
def replicas(
    tmp_path_factory: pytest.TempPathFactory, redis_srv: RedisServer
) -> Iterator[tuple[Stack, str, str, int, int]]:
    logs: Path = tmp_path_factory.mktemp("orch-replicas")
    s = Stack(
        log_dir=logs,
        cache_env={"TOLLGATE_CACHE_BACKEND": "redis", "TOLLGATE_CACHE_REDIS_URL": redis_srv.url},
        orch_env={
            "TOLLGATE_ORCHESTRATOR_API_KEYS": KEYS,
            "TOLLGATE_ORCHESTRATOR_BUDGET_REDIS_URL": redis_srv.url,
        },
    )
    try:
        s.start()
        http2, grpc2 = free_port(), free_port()
        s.start_orchestrator(name="orchestrator2", http_port=http2, grpc_port=grpc2)
        yield s, s.base_url, f"http://127.0.0.1:{http2}", s.ports.orch_grpc, grpc2
    finally:
        s.stop()


def ask(base: str, key: str, text: str, **extra: Any) -> Any:
    with OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=30) as c:
        return c.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": text}], **extra
        )


def test_two_orchestrators_share_cache_hits(replicas: tuple[Stack, str, str, int, int]) -> None:
    _, one, two, _, _ = replicas
    text = "What is the capital of France?"
    first = ask(one, DEV_KEY, text, temperature=0)
    assert first.headers["x-tollgate-cache"] == "miss"
    second = ask(two, DEV_KEY, text, temperature=0)
    assert second.headers["x-tollgate-cache"] == "hit"
    assert second.headers["x-tollgate-cost-usd"] == "0"
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content


def test_budget_counters_are_shared_across_replicas(
    replicas: tuple[Stack, str, str, int, int], redis_srv: RedisServer
) -> None:
    stack, one, two, grpc1, grpc2 = replicas
    text = "Tell me something about budgets."
    cost = float(ask(one, DEV_KEY, text).headers["x-tollgate-cost-usd"])  # unbudgeted probe
    assert cost > 0
    budget = orchestrator_pb2.Budget(
        tenant="shared", period="day", limit_usd=cost * 2.5, action="reject"
    )
    for port in (grpc1, grpc2):  # as the operator pushes to every replica
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            orchestrator_pb2_grpc.OrchestratorStub(ch).UpdateBudgets(
                orchestrator_pb2.UpdateBudgetsRequest(budgets=[budget]),
                timeout=5,
                metadata=stack.caller_metadata("operator"),
            )
    costs = [
        float(ask(base, SHARED_KEY, text).headers["x-tollgate-cost-usd"])
        for base in (one, two, one)
    ]
    assert costs == [cost] * 3
    # 3 x cost is past the limit on the shared counter, whichever replica is asked.
    for base in (two, one):
        with pytest.raises(openai.RateLimitError) as info:
            ask(base, SHARED_KEY, text)
        assert info.value.code == "insufficient_quota"
    r = redis.Redis.from_url(redis_srv.url)
    keys = r.keys("tollgate:budget:{shared}:day:*")
    assert len(keys) == 1
    spent_nano = int(r.get(keys[0]) or 0)  # every reservation settled to the real cost
    assert abs(spent_nano - round(3 * cost * 1e9)) <= 3
    assert r.ttl(keys[0]) > 0
    r.close()
