"""Budget arithmetic: reserve, settle, actions, overshoot bound, unchecked policy."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from tollgate_common.budgets import NANO, to_nano
from tollgate_orchestrator.budget import (
    Budgets,
    MemoryCounters,
    StoreUnavailable,
    counter_key,
    decide,
    eviction_problem,
    period_key,
)
from tollgate_orchestrator.config import BudgetSpec, OrchestratorSettings
from tollgate_orchestrator.errors import ApiError

NOW = datetime(2026, 11, 27, 23, 59, tzinfo=UTC)


def spec(tenant: str = "a", period: str = "day", limit: float = 1.0, action: str = "reject"):
    return BudgetSpec.model_validate(
        {"tenant": tenant, "period": period, "limit_usd": limit, "action": action}
    )


class Hooks:
    def __init__(self) -> None:
        self.spent: dict[tuple[str, str], float] = {}
        self.limits: dict[tuple[str, str], float] = {}
        self.actions: list[tuple[str, str, str]] = []

    def reset(self) -> None:
        self.spent.clear()
        self.limits.clear()

    def limit(self, s: BudgetSpec) -> None:
        self.limits[(s.tenant, s.period)] = s.limit_usd

    def values(self, s: BudgetSpec, spent_nano: int) -> None:
        self.spent[(s.tenant, s.period)] = spent_nano / NANO

    def action(self, s: BudgetSpec, action: str) -> None:
        self.actions.append((s.tenant, s.period, action))


def test_keys_and_periods() -> None:
    assert period_key("day", NOW) == "2026-11-27"
    assert period_key("month", NOW) == "2026-11"
    assert counter_key(spec(), NOW) == "tollgate:budget:{a}:day:2026-11-27"
    assert to_nano(0.000_000_001) == 1
    assert to_nano(1.5) == 1_500_000_000


def test_decide_rejects_at_the_limit_and_downgrades() -> None:
    specs = [spec(limit=1.0), spec(period="month", limit=2.0, action="downgrade")]
    assert decide(specs, [0, 0]) == (None, False)
    assert decide(specs, [to_nano(0.99), to_nano(2.0)]) == (None, True)
    assert decide(specs, [to_nano(1.0), 0]) == (0, False)
    assert decide([spec(limit=0)], [0]) == (0, False)  # a zero budget admits nothing


async def test_reserve_then_settle_leaves_the_actual_cost() -> None:
    hooks = Hooks()
    store = MemoryCounters()
    b = Budgets([spec(limit=1.0)], store, "allow", hooks, clock=lambda: NOW)
    assert hooks.limits == {("a", "day"): 1.0}
    res = await b.reserve("a", 0.25)
    assert hooks.spent[("a", "day")] == 0.25  # the estimate is held
    await b.settle(res, 0.1)
    assert store.values[counter_key(spec(), NOW)] == to_nano(0.1)
    assert hooks.spent[("a", "day")] == pytest.approx(0.1)
    await b.settle(res, 0.1)  # settling twice changes nothing
    assert store.values[counter_key(spec(), NOW)] == to_nano(0.1)
    # A tenant without budgets never touches the store.
    assert (await b.reserve("nobody", 5.0)).empty


async def test_reject_is_429_insufficient_quota_without_retry() -> None:
    hooks = Hooks()
    b = Budgets([spec(limit=0.5)], MemoryCounters(), "allow", hooks, clock=lambda: NOW)
    await b.settle(await b.reserve("a", 0.4), 0.6)
    with pytest.raises(ApiError) as info:
        await b.reserve("a", 0.01)
    err = info.value
    assert err.status == 429
    assert err.code == "insufficient_quota"
    assert err.headers["x-should-retry"] == "false"
    assert err.message == "You exceeded your daily budget of $0.5."  # not "dayly" (L-12)
    assert hooks.actions == [("a", "day", "reject")]
    monthly = Budgets([spec(period="month", limit=0)], MemoryCounters(), "allow", clock=lambda: NOW)
    with pytest.raises(ApiError, match="your monthly budget"):
        await monthly.reserve("a", 0.01)


async def test_downgrade_admits_and_flags() -> None:
    hooks = Hooks()
    b = Budgets(
        [spec(limit=0.1, action="downgrade")], MemoryCounters(), "allow", hooks, clock=lambda: NOW
    )
    first = await b.reserve("a", 0.2)
    assert not first.downgrade
    await b.settle(first, 0.2)
    second = await b.reserve("a", 0.2)
    assert second.downgrade
    assert hooks.actions == [("a", "day", "downgrade")]


async def test_concurrent_requests_overshoot_by_at_most_one_estimate() -> None:
    limit, estimate = 1.0, 0.05
    store = MemoryCounters()
    b = Budgets([spec(limit=limit)], store, "allow", clock=lambda: NOW)
    admitted = 0

    async def one() -> None:
        nonlocal admitted
        try:
            res = await b.reserve("a", estimate)
        except ApiError:
            return
        admitted += 1
        await asyncio.sleep(0)  # the upstream call: others reserve meanwhile
        await b.settle(res, estimate * 0.8)

    await asyncio.gather(*(one() for _ in range(200)))
    spent = store.values[counter_key(spec(), NOW)] / NANO
    assert admitted < 200
    assert spent <= limit + estimate
    assert spent >= limit * 0.8 - estimate


class DownStore(MemoryCounters):
    async def reserve(self, keys: Sequence[str], specs: Sequence[BudgetSpec], amount: int):
        raise StoreUnavailable("down")


async def test_unreachable_store_follows_the_stated_policy() -> None:
    hooks = Hooks()
    allow = Budgets([spec()], DownStore(), "allow", hooks, clock=lambda: NOW)
    res = await allow.reserve("a", 0.1)
    assert res.empty  # admitted, nothing held
    assert hooks.actions == [("a", "day", "unchecked")]
    refuse = Budgets([spec()], DownStore(), "refuse", hooks, clock=lambda: NOW)
    with pytest.raises(ApiError) as info:
        await refuse.reserve("a", 0.1)
    # Fail closed as a quota refusal the SDKs do not retry (H-6), counted as unchecked.
    err = info.value
    assert (err.status, err.code, err.type) == (429, "budget_unavailable", "insufficient_quota")
    assert err.headers == {"x-should-retry": "false"}
    assert hooks.actions[-1] == ("a", "day", "unchecked")
    # A tenant without budgets is not affected by the store at all.
    assert (await refuse.reserve("other", 0.1)).empty


def test_refuse_is_the_default_unchecked_policy() -> None:
    assert OrchestratorSettings().budget_unchecked_policy == "refuse"


@pytest.mark.parametrize(
    ("policy", "ok"),
    [
        ("noeviction", True),
        (None, True),  # CONFIG GET refused: a warning, not a refusal
        ("allkeys-lru", False),
        ("allkeys-lfu", False),
        ("allkeys-random", False),
        # Budget counters carry a TTL, so volatile-* evicts them as well.
        ("volatile-lru", False),
        ("volatile-ttl", False),
    ],
)
def test_only_a_redis_that_never_evicts_may_keep_budgets(policy: str | None, ok: bool) -> None:
    problem = eviction_problem(policy)
    assert (problem is None) == ok
    if problem is not None:
        assert "budget_redis_url" in problem and str(policy) in problem
        assert "noeviction" in problem


async def test_update_replaces_and_removes_by_tenant_and_period() -> None:
    hooks = Hooks()
    b = Budgets([spec("a"), spec("b")], MemoryCounters(), "allow", hooks, clock=lambda: NOW)
    n = b.update([spec("a", limit=0.0), spec("c", period="month")], [("b", "day")])
    assert n == 3
    assert {(s.tenant, s.period, s.limit_usd) for s in b.specs} == {
        ("a", "day", 0.0),
        ("c", "month", 1.0),
    }
    assert set(hooks.limits) == {("a", "day"), ("c", "month")}
    with pytest.raises(ApiError):
        await b.reserve("a", 0.01)
    assert (await b.reserve("b", 0.01)).empty


async def test_a_new_period_starts_from_zero() -> None:
    day = [NOW]
    store = MemoryCounters()
    b = Budgets([spec(limit=0.1)], store, "allow", clock=lambda: day[0])
    await b.settle(await b.reserve("a", 0.1), 0.2)
    with pytest.raises(ApiError):
        await b.reserve("a", 0.01)
    day[0] = datetime(2026, 11, 28, 0, 1, tzinfo=UTC)
    assert not (await b.reserve("a", 0.01)).empty
