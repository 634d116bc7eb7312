"""The orchestrator follows the router's policy: a model added through the router (as the
operator's RoutingPolicy does) is priced, counted under its own name, listed and served
while the router is down; the policy's cache settings take effect.

Fails on 433e75e: the orchestrator's policy was frozen at start, so the added model was
counted as ``model="other"``, missing from ``/v1/models`` and 404 without the router.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Iterator

import grpc
import httpx2
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tollgate.router.v1 import router_pb2, router_pb2_grpc
from tollgate_common.policy import DEFAULT_POLICY_FILE
from tools.stack import DEV_KEY, Stack

pytestmark = pytest.mark.integration

ADDED = "acme-small"
# The operator's policy: one more model, at its own price, first for small chat; no cache.
PUSHED = (
    DEFAULT_POLICY_FILE.read_text()
    .replace('version: "default-2026-12-03"', 'version: "operator-1"')
    .replace(
        "models:\n",
        "models:\n  acme-small:   {provider: openai, upstream_model: gpt-4o-mini, "
        "input_per_mtok: 0.5, cached_input_per_mtok: 0.25, output_per_mtok: 3.0}\n",
        1,
    )
    .replace("cache:\n  enabled: true", "cache:\n  enabled: false", 1)
)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(
        log_dir=tmp_path_factory.mktemp("follow"),
        orch_env={"TOLLGATE_ORCHESTRATOR_PROBE_INTERVAL_SECONDS": "0.3"},
    )
    s.start()
    try:
        yield s
    finally:
        s.stop()


def models(stack: Stack) -> list[str]:
    resp = httpx2.get(f"{stack.base_url}/v1/models", headers={"authorization": f"Bearer {DEV_KEY}"})
    return [m["id"] for m in resp.json()["data"]]


def cost_by_model(stack: Stack) -> dict[str, float]:
    with urllib.request.urlopen(stack.orchestrator_metrics_url, timeout=5) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "tollgate_llm_cost_usd_total":
                out[s.labels["model"]] = out.get(s.labels["model"], 0.0) + s.value
    return out


def chat(stack: Stack, model: str) -> httpx2.Response:
    body = {"model": model, "temperature": 0, "messages": [{"role": "user", "content": "hi"}]}
    return httpx2.post(
        f"{stack.base_url}/v1/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {DEV_KEY}"},
        timeout=10,
    )


def test_an_added_model_is_priced_listed_and_served_without_the_router(stack: Stack) -> None:
    async def push() -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.ports.router}") as ch:
            resp = await router_pb2_grpc.RouterStub(ch).UpdatePolicy(
                router_pb2.UpdatePolicyRequest(policy_yaml=PUSHED, source="operator:ns/p"),
                metadata=stack.caller_metadata("operator"),
            )
            assert resp.changed

    assert ADDED not in models(stack)
    asyncio.run(push())
    deadline = time.monotonic() + 15
    while ADDED not in models(stack):  # the probe fetches the router's newer policy
        assert time.monotonic() < deadline, "the orchestrator never followed the router"
        time.sleep(0.1)

    costs = []
    for _ in range(2):
        r = chat(stack, ADDED)
        assert r.status_code == 200, r.text
        assert r.headers["x-tollgate-model"] == ADDED
        assert r.headers["x-tollgate-cache"] == "bypass"  # cache.enabled: false
        usage = r.json()["usage"]
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
        expected = (
            (usage["prompt_tokens"] - cached) * 0.5 + cached * 0.25 + usage["completion_tokens"] * 3
        ) / 1e6
        assert float(r.headers["x-tollgate-cost-usd"]) == pytest.approx(expected, rel=1e-9)
        costs.append(float(r.headers["x-tollgate-cost-usd"]))
    recorded = cost_by_model(stack)
    assert recorded[ADDED] == pytest.approx(sum(costs), abs=1e-9)
    assert recorded.get("other", 0.0) == 0.0

    # The router goes away: the last policy followed still serves the added model.
    stack.procs["router"].stop()
    r = chat(stack, ADDED)
    assert r.status_code == 200, r.text
    assert r.headers["x-tollgate-route"] == "degraded"
    assert r.headers["x-tollgate-model"] == ADDED
