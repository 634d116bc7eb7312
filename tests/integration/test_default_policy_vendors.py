"""The shipped default policy across two vendors, end to end: its models, routes and
price tables as they ship, with only its providers' URLs and key variables pointed at
tollgate's simulator (each vendor's own wire at its own path). Keys are set for OpenAI
and Anthropic, not Gemini, as an install with two vendors would be:

- ``model: auto`` sends small talk and math to OpenAI and code to Claude, and never
  tries a Gemini model (its key is missing: the router skips it);
- Claude answering 529 on every attempt moves the code request to OpenAI, and the
  client gets a plain 200;
- each answer's cost is its usage times the shipped tables' prices, to 1e-9.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
import yaml

from tests.integration.test_mixed_vendors import CODE, MATH, TALK, Answer, chat, client
from tests.reliability.common import Samples, delta, fault, reset_sim, scrape, total
from tollgate_common.policy import DEFAULT_POLICY_FILE, Policy, load_policy
from tools.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Where each default provider's wire is served by the simulator, and its test key variable.
PATHS = {"openai": "/v1", "anthropic": "/v1", "gemini": "/v1beta/openai/"}
CLAUDES = ("claude-haiku-4-5", "claude-sonnet-4-5", "claude-opus-4-1")


@dataclass
class Shipped:
    stack: Stack
    policy: Policy

    def metrics(self) -> Samples:
        return scrape(self.stack.orchestrator_metrics_url)

    def vendor(self, a: Answer) -> str:
        return self.policy.models[a.model].provider


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shipped]:
    logs: Path = tmp_path_factory.mktemp("default-policy-vendors")
    stack = Stack(log_dir=logs, simulator=False, sim_env={"TOLLGATE_SIM_LATENCY_SCALE": "0"})
    doc = yaml.safe_load(DEFAULT_POLICY_FILE.read_text())
    assert set(doc["providers"]) == set(PATHS), "a new default provider needs a path here"
    for name, p in doc["providers"].items():
        p["base_url"] = stack.sim_url + PATHS[name]
        p["api_key_env"] = f"DP_{name.upper()}_KEY"
    policy_file = logs / "policy.yaml"
    policy_file.write_text(orjson.dumps(doc).decode())  # JSON is YAML
    stack.router_env["TOLLGATE_ROUTER_POLICY_FILE"] = str(policy_file)
    stack.orch_env.update(
        {
            "TOLLGATE_ORCHESTRATOR_POLICY_FILE": str(policy_file),
            "TOLLGATE_ORCHESTRATOR_RETRY_BASE_BACKOFF_SECONDS": "0.01",
        }
    )
    try:
        stack.start_sim()
        stack.start_router()
        stack.start_cache()
        keys = {"DP_OPENAI_KEY": stack.sim_key, "DP_ANTHROPIC_KEY": stack.sim_key}
        stack.start_orchestrator("orchestrator", None, None, **keys)
        yield Shipped(stack, load_policy(policy_file))
    finally:
        stack.stop()


def test_auto_sends_code_to_claude_and_the_rest_to_openai(shipped: Shipped) -> None:
    before = shipped.metrics()
    with client(shipped.stack.base_url) as http:
        talk, code, math = (chat(http, t + " (two vendors)") for t in (TALK, CODE, MATH))
    assert [shipped.vendor(a) for a in (talk, code, math)] == ["openai", "anthropic", "openai"]
    after = shipped.metrics()
    # Gemini heads the small-talk chain; without its key it is never attempted.
    gemini = [m for m, e in shipped.policy.models.items() if e.provider == "gemini"]
    for m in gemini:
        assert delta(before, after, "tollgate_llm_upstream_errors_total", model=m) == 0
    assert total(after, "tollgate_llm_fallbacks_total") == total(
        before, "tollgate_llm_fallbacks_total"
    )
    for a in (talk, code, math):
        assert abs(a.cost - a.recount(shipped.policy)) < 1e-9
        assert a.cost > 0


def test_claude_overloaded_falls_back_to_openai(shipped: Shipped) -> None:
    before = shipped.metrics()
    attempts = 2  # retry_max_attempts: the model fails on each, then the chain moves on
    fault(
        shipped.stack,
        *({"model": m, "status": 529, "count": attempts} for m in CLAUDES),
    )
    try:
        with client(shipped.stack.base_url) as http:
            code = chat(http, CODE + " Handle quoted fields (Claude is overloaded).")
    finally:
        reset_sim(shipped.stack)
    assert shipped.vendor(code) == "openai"
    assert abs(code.cost - code.recount(shipped.policy)) < 1e-9
    after = shipped.metrics()
    moved = sum(
        delta(before, after, "tollgate_llm_fallbacks_total", from_model=m, reason="server_error")
        for m in CLAUDES
    )
    assert moved == 1
