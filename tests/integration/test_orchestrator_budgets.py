"""Budgets with real processes: reject, downgrade, runtime updates over gRPC."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from typing import Any

import grpc
import openai
import orjson
import pytest
from openai import OpenAI
from prometheus_client.parser import text_string_to_metric_families

from tollgate.orchestrator.v1 import orchestrator_pb2, orchestrator_pb2_grpc
from tollgate_common.policy import load_policy
from tools.stack import DEV_KEY, Stack

pytestmark = pytest.mark.integration

POLICY = load_policy()
REJECT, DOWN, FREE = (f"sk-{name}-" + "0" * 25 for name in ("reject", "down", "free"))
KEYS = f"reject-team:{REJECT},down-team:{DOWN},free-team:{FREE}"
TINY = 0.000001  # one request spends it
BUDGETS = [
    {"tenant": "reject-team", "period": "day", "limit_usd": TINY, "action": "reject"},
    {"tenant": "down-team", "period": "month", "limit_usd": TINY, "action": "downgrade"},
]
CODE = "Implement a thread-safe LRU cache class in Python with unit tests and type hints."


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(
        log_dir=tmp_path_factory.mktemp("orch-budgets"),
        orch_env={
            "TOLLGATE_ORCHESTRATOR_API_KEYS": KEYS,
            "TOLLGATE_ORCHESTRATOR_BUDGETS": orjson.dumps(BUDGETS).decode(),
        },
    )
    s.start()
    try:
        yield s
    finally:
        s.stop()


def client(stack: Stack, key: str) -> OpenAI:
    return OpenAI(base_url=stack.base_url + "/v1", api_key=key, max_retries=0, timeout=30)


def ask(stack: Stack, key: str, text: str = "hello") -> Any:
    with client(stack, key) as c:
        return c.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": text}]
        )


def metric(stack: Stack, name: str, **labels: str) -> float | None:
    with urllib.request.urlopen(stack.orchestrator_metrics_url, timeout=5) as resp:
        text = resp.read().decode()
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return None


def test_over_budget_is_rejected_with_insufficient_quota(stack: Stack) -> None:
    assert ask(stack, REJECT).parse().choices  # under the limit: admitted
    with pytest.raises(openai.RateLimitError) as info:
        ask(stack, REJECT)
    err = info.value
    assert err.code == "insufficient_quota"
    assert err.response.headers["x-should-retry"] == "false"
    assert err.body["type"] == "insufficient_quota"  # type: ignore[index]
    assert (
        metric(
            stack,
            "tollgate_budget_actions_total",
            tenant="reject-team",
            period="day",
            action="reject",
        )
        == 1
    )
    assert metric(stack, "tollgate_budget_limit_usd", tenant="reject-team", period="day") == TINY
    spent = metric(stack, "tollgate_budget_spent_usd", tenant="reject-team", period="day")
    assert spent is not None and spent > TINY
    assert metric(stack, "tollgate_budget_remaining_usd", tenant="reject-team", period="day") == 0
    assert ask(stack, FREE).parse().choices  # other tenants are not affected


def test_over_budget_downgrades_to_the_cheapest_tier(stack: Stack) -> None:
    first = ask(stack, DOWN, CODE)
    assert first.headers["x-tollgate-tier"] != "small"
    second = ask(stack, DOWN, CODE)
    assert second.headers["x-tollgate-tier"] == "small"
    assert second.headers["x-tollgate-model"] == POLICY.routes["code"]["small"][0]
    assert (
        metric(
            stack,
            "tollgate_budget_actions_total",
            tenant="down-team",
            period="month",
            action="downgrade",
        )
        == 1
    )


def test_update_budgets_applies_at_runtime(stack: Stack) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{stack.ports.orch_grpc}") as ch:
        stub = orchestrator_pb2_grpc.OrchestratorStub(ch)
        md = stack.caller_metadata("operator")
        bad = orchestrator_pb2.Budget(tenant="free-team", period="week", limit_usd=1)
        with pytest.raises(grpc.RpcError) as info:
            stub.UpdateBudgets(
                orchestrator_pb2.UpdateBudgetsRequest(budgets=[bad]), timeout=5, metadata=md
            )
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "budgets[0].period" in (info.value.details() or "")

        zero = orchestrator_pb2.Budget(
            tenant="free-team", period="day", limit_usd=0, action="reject", source="test"
        )
        resp = stub.UpdateBudgets(
            orchestrator_pb2.UpdateBudgetsRequest(budgets=[zero]), timeout=5, metadata=md
        )
        assert resp.applied == 1
        with pytest.raises(openai.RateLimitError):
            ask(stack, FREE)
        ref = orchestrator_pb2.BudgetRef(tenant="free-team", period="day")
        resp = stub.UpdateBudgets(
            orchestrator_pb2.UpdateBudgetsRequest(removed=[ref]), timeout=5, metadata=md
        )
        assert resp.applied == 1
    assert ask(stack, FREE).parse().choices
    assert metric(stack, "tollgate_budget_limit_usd", tenant="free-team", period="day") is None
    # The configured budgets are still in force.
    with pytest.raises(openai.RateLimitError):
        ask(stack, REJECT)


def test_unknown_tenant_key_is_401_not_a_budget(stack: Stack) -> None:
    with pytest.raises(openai.AuthenticationError):
        ask(stack, DEV_KEY)  # keys are configured: the dev key is gone
