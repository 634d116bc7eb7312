"""The audit's control-plane attacks against real processes, now refused and counted.

H-1: router UpdatePolicy/GetPolicy without the operator's token (or with the
orchestrator's); H-2: cache Store/Lookup/Invalidate without a token; H-3: orchestrator
UpdateBudgets without a token. Each refusal leaves the state as it was and shows in
``tollgate_grpc_auth_denied_total`` on that service's /metrics. M-6: partial TLS
settings and a server without any caller identity stop at start (exit 2) naming the
fields.
"""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tollgate.cache.v1 import cache_pb2, cache_pb2_grpc
from tollgate.orchestrator.v1 import orchestrator_pb2, orchestrator_pb2_grpc
from tollgate.router.v1 import router_pb2, router_pb2_grpc
from tools.stack import ROOT, Stack, base_env, free_port

BUDGET = '[{"tenant": "team-a", "period": "day", "limit_usd": 5, "action": "reject"}]'
EVIL_POLICY = 'version: "pwned"\nmodels: {}\n'


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(
        log_dir=tmp_path_factory.mktemp("control-auth"),
        orch_env={
            "TOLLGATE_ORCHESTRATOR_API_KEYS": "team-a:sk-" + "a" * 40,
            "TOLLGATE_ORCHESTRATOR_BUDGETS": BUDGET,
        },
    )
    s.start()
    try:
        yield s
    finally:
        s.stop()


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return str(resp.read().decode())


def denied(text: str, grpc_method: str, reason: str) -> float:
    pattern = (
        r'^tollgate_grpc_auth_denied_total\{[^}]*grpc_method="'
        + re.escape(grpc_method)
        + r'"[^}]*reason="'
        + re.escape(reason)
        + r'"[^}]*\} (\S+)$'
    )
    m = re.search(pattern, text, re.MULTILINE)
    return float(m.group(1)) if m else 0.0


def refused(call: object, *args: object, **kwargs: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as err:
        call(*args, timeout=5, **kwargs)  # type: ignore[operator]
    code: grpc.StatusCode = err.value.code()
    return code


def test_h1_router_policy_takeover_is_refused_and_counted(stack: Stack) -> None:
    metrics = f"http://127.0.0.1:{stack.ports.router_metrics}/metrics"
    with grpc.insecure_channel(f"127.0.0.1:{stack.ports.router}") as ch:
        stub = router_pb2_grpc.RouterStub(ch)
        op = stack.caller_metadata("operator")
        before = stub.GetPolicy(router_pb2.GetPolicyRequest(), timeout=5, metadata=op)
        push = router_pb2.UpdatePolicyRequest(policy_yaml=EVIL_POLICY, source="operator:x")
        assert refused(stub.UpdatePolicy, push) == grpc.StatusCode.UNAUTHENTICATED
        bad_token = (("x-tollgate-caller-token", "guessed"),)
        assert refused(stub.UpdatePolicy, push, metadata=bad_token) == (
            grpc.StatusCode.UNAUTHENTICATED
        )
        orch = stack.caller_metadata("orchestrator")  # a real caller, not allowed to push
        assert refused(stub.UpdatePolicy, push, metadata=orch) == grpc.StatusCode.PERMISSION_DENIED
        assert refused(stub.GetPolicy, router_pb2.GetPolicyRequest()) == (
            grpc.StatusCode.UNAUTHENTICATED
        )
        route = router_pb2.RouteRequest(model="auto", tenant="team-a")
        assert refused(stub.Route, route) == grpc.StatusCode.UNAUTHENTICATED
        after = stub.GetPolicy(router_pb2.GetPolicyRequest(), timeout=5, metadata=op)
    assert (after.version, after.policy_yaml) == (before.version, before.policy_yaml)
    assert after.version != "pwned"
    text = scrape(metrics)
    assert denied(text, "UpdatePolicy", "unauthenticated") == 2
    assert denied(text, "UpdatePolicy", "permission_denied") == 1
    assert denied(text, "GetPolicy", "unauthenticated") == 1
    assert denied(text, "Route", "unauthenticated") == 1
    assert 'service="router"' in text


def test_h2_cache_poisoning_reads_and_flushes_are_refused_and_counted(stack: Stack) -> None:
    metrics = f"http://127.0.0.1:{stack.ports.cache_metrics}/metrics"
    key = "b" * 64
    evil = cache_pb2.Entry(body=b'{"content": "Send it to IBAN XX00 ATTACKER"}', cost_usd=1e12)
    with grpc.insecure_channel(f"127.0.0.1:{stack.ports.cache}") as ch:
        stub = cache_pb2_grpc.CacheStub(ch)
        store = cache_pb2.StoreRequest(key=key, entry=evil, ttl_seconds=2**31 - 1)
        assert refused(stub.Store, store) == grpc.StatusCode.UNAUTHENTICATED
        assert refused(stub.Lookup, cache_pb2.LookupRequest(key=key)) == (
            grpc.StatusCode.UNAUTHENTICATED
        )
        flush = cache_pb2.InvalidateRequest(all=True)
        assert refused(stub.Invalidate, flush) == grpc.StatusCode.UNAUTHENTICATED
        # The operator may flush and look, but not write entries.
        op = stack.caller_metadata("operator")
        assert refused(stub.Store, store, metadata=op) == grpc.StatusCode.PERMISSION_DENIED
        orch = stack.caller_metadata("orchestrator")
        assert not stub.Lookup(cache_pb2.LookupRequest(key=key), timeout=5, metadata=orch).hit
        stats = stub.Stats(cache_pb2.StatsRequest(), timeout=5, metadata=op)
    assert stats.entries == 0  # nothing was planted
    text = scrape(metrics)
    assert denied(text, "Store", "unauthenticated") == 1
    assert denied(text, "Store", "permission_denied") == 1
    assert denied(text, "Lookup", "unauthenticated") == 1
    assert denied(text, "Invalidate", "unauthenticated") == 1


def budget_limits(stack: Stack) -> str:
    text = scrape(stack.metrics_url())
    return "\n".join(ln for ln in text.splitlines() if ln.startswith("tollgate_budget_limit_usd"))


def test_h3_update_budgets_without_the_operator_is_refused_and_counted(stack: Stack) -> None:
    before = budget_limits(stack)
    assert 'tenant="team-a"' in before
    lift = orchestrator_pb2.UpdateBudgetsRequest(
        budgets=[orchestrator_pb2.Budget(tenant="team-a", period="day", limit_usd=1e300)],
        removed=[orchestrator_pb2.BudgetRef(tenant="team-a", period="day")],
    )
    with grpc.insecure_channel(f"127.0.0.1:{stack.ports.orch_grpc}") as ch:
        stub = orchestrator_pb2_grpc.OrchestratorStub(ch)
        assert refused(stub.UpdateBudgets, lift) == grpc.StatusCode.UNAUTHENTICATED
        orch = stack.caller_metadata("orchestrator")
        assert refused(stub.UpdateBudgets, lift, metadata=orch) == (
            grpc.StatusCode.PERMISSION_DENIED
        )
    assert budget_limits(stack) == before
    text = scrape(stack.metrics_url())
    assert denied(text, "UpdateBudgets", "unauthenticated") == 1
    assert denied(text, "UpdateBudgets", "permission_denied") == 1


def test_the_orchestrator_reaches_router_and_cache_with_its_token(stack: Stack) -> None:
    """The stack's own traffic still works: the orchestrator's calls carry its token."""
    import httpx

    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}
    headers = {"authorization": "Bearer sk-" + "a" * 40}
    r = httpx.post(f"{stack.base_url}/v1/chat/completions", json=body, headers=headers, timeout=30)
    assert r.status_code == 200
    assert r.headers.get("x-tollgate-degraded") in (None, "", "false")
    text = scrape(f"http://127.0.0.1:{stack.ports.router_metrics}/metrics")
    assert denied(text, "Route", "permission_denied") == 0


def run_router(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = base_env(
        {
            "TOLLGATE_ROUTER_GRPC_PORT": str(free_port()),
            "TOLLGATE_ROUTER_METRICS_PORT": str(free_port()),
            **env,
        }
    )
    return subprocess.run(
        [sys.executable, "-m", "tollgate_router"],
        env=full,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"TOLLGATE_ROUTER_GRPC_TLS_CERT": "server.crt"}, "grpc_tls_key"),
        ({"TOLLGATE_ROUTER_GRPC_TLS_KEY": "server.key"}, "grpc_tls_cert"),
        ({"TOLLGATE_ROUTER_GRPC_TLS_CLIENT_CA": "ca.crt"}, "grpc_tls_client_ca"),
    ],
)
def test_m6_partial_tls_settings_exit_2_naming_the_fields(
    tmp_path: Path, env: dict[str, str], named: str
) -> None:
    callers = tmp_path / "callers.yaml"
    callers.write_text("operator: " + "0" * 64 + "\n")
    done = run_router(tmp_path, TOLLGATE_ROUTER_GRPC_CALLERS_FILE=str(callers), **env)
    assert done.returncode == 2, done.stderr
    assert "bad configuration" in done.stderr and named in done.stderr


def test_a_server_without_callers_config_exits_2(tmp_path: Path) -> None:
    done = run_router(tmp_path)
    assert done.returncode == 2, done.stderr
    assert "grpc_callers_file" in done.stderr
    assert "TOLLGATE_ROUTER_GRPC_CALLERS_FILE" in done.stderr


def test_an_entry_planted_with_a_stolen_token_is_never_answered(stack: Stack) -> None:
    """H-2, the layer behind authentication: even a caller with the orchestrator's token
    (or direct access to the cache's Redis) cannot make the gateway answer its entry,
    because only the orchestrators hold the key that signs entries."""
    import httpx2

    from tollgate_common.cachekey import cache_key
    from tollgate_orchestrator.validation import Limits, parse_chat_request

    body = {
        "model": "gpt-4o-mini",
        "temperature": 0,
        "messages": [{"role": "user", "content": "How do I reset my password?"}],
    }
    req = parse_chat_request(dict(body), Limits())
    key = cache_key("gpt-4o-mini", req.body, "team-a")
    phish = (
        b'{"choices":[{"index":0,"message":{"role":"assistant","content":"Visit evil.example"}}]}'
    )
    planted = cache_pb2.Entry(body=phish, model="gpt-4o-mini", cost_usd=0.0, created_unix=1)
    with grpc.insecure_channel(f"127.0.0.1:{stack.ports.cache}") as ch:
        resp = cache_pb2_grpc.CacheStub(ch).Store(
            cache_pb2.StoreRequest(key=key, entry=planted, ttl_seconds=3600),
            metadata=stack.caller_metadata("orchestrator"),
            timeout=5,
        )
        assert resp.stored  # the cache took it: the orchestrator must not believe it
    r = httpx2.post(
        f"{stack.base_url}/v1/chat/completions",
        json=body,
        headers={"authorization": "Bearer sk-" + "a" * 40},
        timeout=10,
    )
    assert r.status_code == 200
    assert "evil.example" not in r.text and r.headers["x-tollgate-cache"] == "miss"
    text = scrape(stack.orchestrator_metrics_url)
    assert re.search(
        r'^tollgate_cache_results_total\{api="chat",result="invalid"\} 1\.0$', text, re.M
    )
