"""H-4 against real processes: a tenant limited to some models gets a 403 for the others,
from the router and, with the router down, from the orchestrator's own copy of the policy;
the refusals are counted and never open the router's breaker."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tollgate_common.policy import DEFAULT_POLICY_FILE
from tools.stack import DEV_KEY, Stack

pytestmark = pytest.mark.integration

FRUGAL_KEY = "sk-frugal-" + "f" * 40
POLICY = DEFAULT_POLICY_FILE.read_text().replace(
    "models:\n", "tenants:\n  frugal: {allowed_models: [gpt-4o-mini]}\nmodels:\n", 1
)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    logs: Path = tmp_path_factory.mktemp("tenants")
    policy = logs / "policy.yaml"
    policy.write_text(POLICY)
    s = Stack(
        log_dir=logs,
        router_env={"TOLLGATE_ROUTER_POLICY_FILE": str(policy)},
        orch_env={
            "TOLLGATE_ORCHESTRATOR_POLICY_FILE": str(policy),
            "TOLLGATE_ORCHESTRATOR_API_KEYS": f"dev:{DEV_KEY},frugal:{FRUGAL_KEY}",
        },
    )
    s.start()
    try:
        yield s
    finally:
        s.stop()


def chat(stack: Stack, model: str) -> httpx2.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return httpx2.post(
        f"{stack.base_url}/v1/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {FRUGAL_KEY}"},
        timeout=10,
    )


def sample(stack: Stack, name: str, **labels: str) -> float:
    url = stack.orchestrator_metrics_url
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    return sum(
        s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def test_the_model_list_is_what_the_tenant_may_use(stack: Stack) -> None:
    r = httpx2.get(f"{stack.base_url}/v1/models", headers={"authorization": f"Bearer {FRUGAL_KEY}"})
    assert [m["id"] for m in r.json()["data"]] == ["auto", "gpt-4o-mini"]


def test_a_forbidden_model_is_refused_with_and_without_the_router(stack: Stack) -> None:
    assert chat(stack, "gpt-4o-mini").status_code == 200
    for _ in range(4):  # more than the router breaker's 3 consecutive failures
        r = chat(stack, "gpt-4o")
        assert r.status_code == 403, r.text
        assert r.json()["error"]["code"] == "model_not_allowed"
    assert sample(stack, "tollgate_http_rejections_total", reason="forbidden") == 4
    assert sample(stack, "tollgate_degraded_total", dependency="router") == 0
    assert chat(stack, "gpt-4o-mini").headers.get("x-tollgate-route") != "degraded"

    stack.procs["router"].stop()  # degraded from now on: the orchestrator's rules hold
    r = chat(stack, "gpt-4o")
    assert r.status_code == 403, r.text
    ok = chat(stack, "auto")
    assert ok.status_code == 200 and ok.headers["x-tollgate-route"] == "degraded"
    assert ok.headers["x-tollgate-model"] == "gpt-4o-mini"
    assert sample(stack, "tollgate_http_rejections_total", reason="forbidden") == 5
