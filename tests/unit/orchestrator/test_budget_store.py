"""Where budget counters live, as the orchestrator reports and checks it (H-6, M-2).

The budget Redis' ``maxmemory-policy`` is faked here (the real Redis is in
tests/integration/test_budget_store.py): an evicting one stops the process at start, is
refused when found later, and one whose policy cannot be read is a warning.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from tollgate_common.config import ConfigError, load_settings
from tollgate_orchestrator.budget import StoreUnavailable
from tollgate_orchestrator.config import OrchestratorSettings
from tollgate_orchestrator.errors import ApiError
from tollgate_orchestrator.wiring import Gateway
from tools.stack import free_port

BUDGET = '[{"tenant": "dev", "period": "day", "limit_usd": 1}]'


@pytest.fixture
async def gateway(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Callable[..., Gateway]]:
    for k in list(os.environ):
        if k.startswith("TOLLGATE_"):
            monkeypatch.delenv(k)
    made: list[Gateway] = []

    def make(**overrides: Any) -> Gateway:
        dead = f"127.0.0.1:{free_port()}"
        monkeypatch.setenv("TOLLGATE_ORCHESTRATOR_BUDGETS", BUDGET)
        s = load_settings(
            OrchestratorSettings, "orchestrator", router_addr=dead, cache_addr=dead, **overrides
        )
        gw = Gateway(s, CollectorRegistry())
        made.append(gw)
        return gw

    yield make
    for gw in made:
        await gw.close()


def fake_policy(gw: Gateway, answer: str | Exception | None) -> None:
    async def policy() -> str | None:
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert gw.redis_counters is not None
    gw.redis_counters.eviction_policy = policy  # type: ignore[method-assign]


async def test_without_a_budget_redis_readyz_says_per_replica(
    gateway: Callable[..., Gateway],
) -> None:
    gw = gateway()
    gw.ready = True
    ok, body = gw.readiness()
    assert ok and body["budget_store"] == "per-replica"
    deps = body["dependencies"]
    assert isinstance(deps, dict) and "budget_store" not in deps  # nothing to be down
    await gw.check_budget_store(at_start=True)  # nothing to check


async def test_an_evicting_budget_redis_stops_the_process_at_start(
    gateway: Callable[..., Gateway],
) -> None:
    gw = gateway(budget_redis_url=f"redis://127.0.0.1:{free_port()}/0")
    assert gw.readiness()[1]["budget_store"] == "redis"
    fake_policy(gw, "allkeys-lru")
    with pytest.raises(ConfigError, match=r"budget_redis_url: .*allkeys-lru.*noeviction"):
        await gw.check_budget_store(at_start=True)
    fake_policy(gw, "noeviction")
    await gw.check_budget_store(at_start=True)


async def test_an_unreadable_policy_warns_once_and_an_unreachable_one_waits(
    gateway: Callable[..., Gateway], caplog: pytest.LogCaptureFixture
) -> None:
    gw = gateway(budget_redis_url=f"redis://127.0.0.1:{free_port()}/0")
    fake_policy(gw, StoreUnavailable("down"))
    await gw.check_budget_store(at_start=True)  # unreachable at start: no verdict yet
    fake_policy(gw, None)
    with caplog.at_level(logging.WARNING):
        await gw.check_budget_store(at_start=True)
        await gw.check_budget_store(at_start=False)
    warnings = [r for r in caplog.records if "maxmemory-policy" in r.getMessage()]
    assert len(warnings) == 1 and "noeviction" in warnings[0].getMessage()


async def test_an_evicting_policy_found_later_fails_budget_checks_closed(
    gateway: Callable[..., Gateway],
) -> None:
    gw = gateway(budget_redis_url=f"redis://127.0.0.1:{free_port()}/0")
    fake_policy(gw, "volatile-lru")  # counters carry a TTL: volatile-* evicts them too
    await gw.check_budget_store(at_start=False)
    with pytest.raises(ApiError) as info:
        await gw.budgets.reserve("dev", 0.01)
    assert info.value.status == 429 and info.value.code == "budget_unavailable"
    assert not await gw.store.ping()  # /readyz shows the budget store down
    fake_policy(gw, "noeviction")  # fixed with CONFIG SET: accepted again
    await gw.check_budget_store(at_start=False)
    assert gw.redis_counters is not None and gw.redis_counters.refused is None
