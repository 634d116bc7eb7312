"""H-6 against real processes: budget counters can be neither evicted nor bypassed.

The audit's attack: budget counters shared the cache's Redis, which runs
``allkeys-lru``; a tenant's flood of distinct cached requests evicted every counter (other
tenants' spend reset to $0), and a full Redis under ``noeviction`` made budgets fail open.
Here, with two real redis-servers:

- the cache's Redis (allkeys-lru, tiny) is filled until it evicts: budget counters live in
  the budgets' own Redis and survive, spend intact;
- an orchestrator pointed at an evicting Redis for budgets refuses to start, naming it;
- a full budget Redis (noeviction) refuses a tenant with a budget with a 429 and
  ``x-should-retry: false``, counted as ``tollgate_budget_actions_total{action="unchecked"}``,
  while a tenant without a budget is still served.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest
import redis
from openai import OpenAI

from tests.conftest import start_redis
from tests.reliability.common import get, scrape, total
from tools.stack import DEV_KEY, Stack, spawn

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TEAM_B_KEY = "sk-team-b-" + "b" * 32  # a tenant without a budget: the one who floods
KEYS = f"dev:{DEV_KEY},team-b:{TEAM_B_KEY}"
BUDGET = orjson.dumps([{"tenant": "dev", "period": "day", "limit_usd": 100}]).decode()


class Redis:
    def __init__(self, proc: subprocess.Popen[bytes], port: int) -> None:
        self.proc, self.port = proc, port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.client = redis.Redis(port=port, socket_timeout=2)

    def info(self, name: str) -> Any:
        return self.client.info()[name]

    def budget_keys(self) -> list[bytes]:
        return sorted(self.client.scan_iter(match="tollgate:budget:*", count=1000))


@pytest.fixture
def redis_factory(tmp_path: Path) -> Iterator[Any]:
    made: list[Redis] = []

    def make(name: str, *args: str) -> Redis:
        work = tmp_path / name
        work.mkdir()
        server = start_redis(work, *args)
        r = Redis(server.proc, server.port)
        made.append(r)
        return r

    yield make
    for r in made:
        r.client.close()
        r.proc.kill()
        r.proc.wait(5)


def chat(base: str, key: str, text: str) -> Any:
    with OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=30) as c:
        return c.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": text}], temperature=0
        )


def spent(stack: Stack) -> float:
    return total(scrape(stack.orchestrator_metrics_url), "tollgate_budget_spent_usd", tenant="dev")


def test_filling_the_cache_redis_evicts_no_budget_counter(
    stack_factory: Any, redis_factory: Any
) -> None:
    cache_redis = redis_factory("cache", "--maxmemory", "2mb", "--maxmemory-policy", "allkeys-lru")
    budget_redis = redis_factory("budgets", "--maxmemory-policy", "noeviction")
    stack: Stack = stack_factory(
        cache_env={"TOLLGATE_CACHE_BACKEND": "redis", "TOLLGATE_CACHE_REDIS_URL": cache_redis.url},
        orch_env={
            "TOLLGATE_ORCHESTRATOR_API_KEYS": KEYS,
            "TOLLGATE_ORCHESTRATOR_BUDGETS": BUDGET,
            "TOLLGATE_ORCHESTRATOR_BUDGET_REDIS_URL": budget_redis.url,
        },
    )
    stack.start()
    base = stack.base_url
    status, body = get(base + "/readyz")
    assert status == 200 and orjson.loads(body)["budget_store"] == "redis"
    for i in range(3):
        assert chat(base, DEV_KEY, f"dev question {i}").parse().choices
    keys = budget_redis.budget_keys()
    assert keys and all(k.startswith(b"tollgate:budget:{dev}:") for k in keys)
    counters = {k: budget_redis.client.get(k) for k in keys}
    before = spent(stack)
    assert before > 0

    # team-b floods the cache through the gateway (distinct cacheable requests), then the
    # cache's Redis is pushed well past its maxmemory, as a longer flood would.
    for i in range(40):
        chat(base, TEAM_B_KEY, f"flood {i} " + "x" * 2000)
    filler = b"f" * 50_000
    pipe = cache_redis.client.pipeline(transaction=False)
    for i in range(200):
        pipe.set(f"flood:{i}", filler)
    pipe.execute()
    assert cache_redis.info("evicted_keys") > 0  # the cache's Redis did evict

    assert budget_redis.budget_keys() == keys  # ... but no budget counter was there
    assert {k: budget_redis.client.get(k) for k in keys} == counters
    assert budget_redis.info("evicted_keys") == 0
    assert spent(stack) == pytest.approx(before)
    assert chat(base, DEV_KEY, "after the flood").parse().choices
    assert spent(stack) > before  # still counting on top, not from $0


def test_an_evicting_budget_redis_stops_the_orchestrator_at_start(
    stack_factory: Any, redis_factory: Any
) -> None:
    shared = redis_factory("shared", "--maxmemory", "8mb", "--maxmemory-policy", "allkeys-lru")
    stack: Stack = stack_factory()
    service = stack.orchestrator_service(
        TOLLGATE_ORCHESTRATOR_BUDGETS=BUDGET, TOLLGATE_ORCHESTRATOR_BUDGET_REDIS_URL=shared.url
    )
    proc = spawn("orchestrator-evicting", service.args, service.env, stack.log_dir)
    try:
        code = proc.popen.wait(30)
    finally:
        proc.stop()
    log = proc.log_tail()
    assert code == 2, log  # bad configuration
    assert "budget_redis_url" in log and "allkeys-lru" in log and "noeviction" in log
    # The old setting name stops it too, instead of silently running per-replica budgets.
    old = dict(service.env)
    old.pop("TOLLGATE_ORCHESTRATOR_BUDGET_REDIS_URL")
    old["TOLLGATE_ORCHESTRATOR_REDIS_URL"] = shared.url
    proc = spawn("orchestrator-old-name", service.args, old, stack.log_dir)
    try:
        assert proc.popen.wait(30) == 2
    finally:
        proc.stop()
    assert "renamed to budget_redis_url" in proc.log_tail()


def test_a_full_budget_redis_refuses_tenants_with_budgets(
    stack_factory: Any, redis_factory: Any
) -> None:
    budget_redis = redis_factory("full", "--maxmemory-policy", "noeviction")
    stack: Stack = stack_factory(
        orch_env={
            "TOLLGATE_ORCHESTRATOR_API_KEYS": KEYS,
            "TOLLGATE_ORCHESTRATOR_BUDGETS": BUDGET,
            "TOLLGATE_ORCHESTRATOR_BUDGET_REDIS_URL": budget_redis.url,
        },
    )
    stack.start()
    base = stack.base_url
    assert chat(base, DEV_KEY, "before it fills").parse().choices

    # Fill it: 2 MB of other keys, then a maxmemory below what is used. Under noeviction
    # nothing can be freed, so every write is refused (OOM) for as long as it stays full.
    pipe = budget_redis.client.pipeline(transaction=False)
    for i in range(100):
        pipe.set(f"junk:{i}", b"f" * 20_000)
    pipe.execute()
    used = int(budget_redis.info("used_memory"))
    budget_redis.client.config_set("maxmemory", str(used - 1024 * 1024))
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        budget_redis.client.incrby(budget_redis.budget_keys()[0], 1)

    metrics = stack.orchestrator_metrics_url
    before = total(scrape(metrics), "tollgate_budget_actions_total", action="unchecked")
    for i in range(3):
        with pytest.raises(openai.RateLimitError) as info:
            chat(base, DEV_KEY, f"while full {i}")
        err = info.value
        assert err.status_code == 429 and err.code == "budget_unavailable"
        assert err.response.headers["x-should-retry"] == "false"
    samples = scrape(metrics)
    assert total(samples, "tollgate_budget_actions_total", action="unchecked") == before + 3
    assert (
        total(samples, "tollgate_budget_actions_total", tenant="dev", action="unchecked")
        == before + 3
    )
    # A tenant without a budget does not depend on the budget store.
    assert chat(base, TEAM_B_KEY, "no budget here").parse().choices

    # Room again: budgets are checked (and admit) again.
    budget_redis.client.flushall()
    budget_redis.client.config_set("maxmemory", "0")
    deadline = time.monotonic() + 20  # the store's breaker cools down
    while True:
        try:
            assert chat(base, DEV_KEY, "after").parse().choices
            break
        except openai.RateLimitError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
