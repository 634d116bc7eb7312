"""The router as a real process: routing, policy updates by RPC and by file, health, metrics."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from tollgate.router.v1 import router_pb2, router_pb2_grpc
from tollgate_common.grpc.channel import make_channel
from tollgate_common.policy import DEFAULT_POLICY_FILE
from tools.stack import ROOT, Stack, base_env

pytestmark = pytest.mark.integration

DEFAULT = DEFAULT_POLICY_FILE.read_text()
CODE = "Write a Python function that merges two sorted lists and add unit tests."
TALK = "hi, how are you?"
CHAT_SMALL = "small:  [gemini-2.5-flash-lite, gpt-4.1-nano, claude-haiku-4-5]"  # chat's first


@dataclass
class Router:
    stack: Stack
    policy_file: Path
    channel: grpc.aio.Channel
    stub: router_pb2_grpc.RouterAsyncStub

    async def route(self, text: str) -> router_pb2.RouteResponse:
        resp: router_pb2.RouteResponse = await self.stub.Route(
            router_pb2.RouteRequest(
                model="auto",
                tenant="team-a",
                features=router_pb2.MessageFeatures(
                    last_user_text=text, turns=1, prompt_chars=len(text)
                ),
                request_id="req-1",
            )
        )
        return resp


@pytest.fixture
async def router(tmp_path: Path, stack_factory: Callable[..., Stack]) -> AsyncIterator[Router]:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(DEFAULT)
    stack = stack_factory(
        router_env={
            "TOLLGATE_ROUTER_POLICY_FILE": str(policy_file),
            "TOLLGATE_ROUTER_POLICY_OVERRIDE_FILE": str(tmp_path / "override" / "policy.yaml"),
            "TOLLGATE_ROUTER_POLICY_POLL_SECONDS": "0.2",
        }
    )
    stack.start_router()
    channel = make_channel(
        f"127.0.0.1:{stack.ports.router}",
        default_timeout=5,
        token_file=stack.token_file("orchestrator"),  # Route is for orchestrators
    )
    stub: Any = router_pb2_grpc.RouterStub(channel)
    try:
        yield Router(stack, policy_file, channel, stub)
    finally:
        await channel.close()
        stack.stop()


async def test_routes_code_and_small_talk_apart_and_serves_health_and_metrics(
    router: Router,
) -> None:
    code = await router.route(CODE)
    talk = await router.route(TALK)
    assert (code.intent, talk.intent) == ("code", "chat")
    assert code.tier != talk.tier
    assert code.chain[0].name != talk.chain[0].name
    assert code.reason and code.policy_version == "default-2026-12-03"

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await router.stub.Route(router_pb2.RouteRequest(model="gpt-9-ultra"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "gpt-9-ultra" in (err.value.details() or "")

    health: Any = health_pb2_grpc.HealthStub(router.channel)
    for service in ("", "tollgate.router.v1.Router"):
        resp = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert resp.status == health_pb2.HealthCheckResponse.SERVING

    body = await asyncio.to_thread(metrics_text, router)
    assert "tollgate_router_model_selections_total{" in body
    assert 'tollgate_build_info{service="router"' in body
    not_found = {
        "grpc_type": "unary",
        "grpc_service": "tollgate.router.v1.Router",
        "grpc_method": "Route",
        "grpc_code": "NOT_FOUND",
    }
    assert sample(body, "grpc_server_handled_total", not_found) == 1
    assert TALK not in body and "team-a" not in body

    # SIGTERM: NOT_SERVING, drain, stop the policy watcher, exit 0.
    assert router.stack.procs["router"].stop() == 0


async def test_update_policy_rpc_refuses_bad_and_applies_good(router: Router) -> None:
    before = await router.route(TALK)
    bad = DEFAULT.replace(CHAT_SMALL, "small:  [gpt-4.1-nano, gpt-6]", 1)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await router.stub.UpdatePolicy(
            router_pb2.UpdatePolicyRequest(policy_yaml=bad, source="operator:ns/p"),
            metadata=router.stack.caller_metadata("operator"),
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "routes.chat.small[1]" in (err.value.details() or "")
    after_bad = await router.route(TALK)
    assert [t.name for t in after_bad.chain] == [t.name for t in before.chain]

    good = DEFAULT.replace(CHAT_SMALL, "small:  [gpt-5-nano]", 1).replace(
        'version: "default-2026-12-03"', 'version: "pushed-1"'
    )
    resp = await router.stub.UpdatePolicy(
        router_pb2.UpdatePolicyRequest(policy_yaml=good, source="operator:ns/p"),
        metadata=router.stack.caller_metadata("operator"),
    )
    assert (resp.version, resp.changed) == ("pushed-1", True)
    after = await router.route(TALK)
    assert [t.name for t in after.chain] == ["gpt-5-nano"]
    assert after.policy_version == "pushed-1"
    got = await router.stub.GetPolicy(router_pb2.GetPolicyRequest())
    assert (got.version, got.source) == ("pushed-1", "operator:ns/p")


async def test_editing_the_policy_file_changes_decisions(router: Router) -> None:
    assert (await router.route(TALK)).chain[0].name == "gemini-2.5-flash-lite"
    router.policy_file.write_text(
        DEFAULT.replace("default_model: gpt-4o-mini", "default_model: nope")
    )
    failure = {"trigger": "file", "result": "failure"}
    await wait_for(
        lambda: sample(metrics_text(router), "tollgate_router_policy_reloads_total", failure) == 1,
        "the bad file to be refused",
    )
    assert (await router.route(TALK)).chain[0].name == "gemini-2.5-flash-lite"
    assert "default_model" in router.stack.procs["router"].log_tail()

    router.policy_file.write_text(DEFAULT.replace(CHAT_SMALL, "small:  [gpt-4o-mini]", 1))
    await wait_for_route(router, "gpt-4o-mini")


def metrics_text(router: Router) -> str:
    url = f"http://127.0.0.1:{router.stack.ports.router_metrics}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        return str(resp.read().decode())


def sample(text: str, name: str, labels: dict[str, str]) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return None


WAIT_SECONDS = 15.0  # generous: it only keeps a broken build from hanging


async def wait_for(check: Callable[[], bool], what: str) -> None:
    """Poll ``check`` until it holds."""
    deadline = time.monotonic() + WAIT_SECONDS
    while not await asyncio.to_thread(check):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def wait_for_route(router: Router, model: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while (await router.route(TALK)).chain[0].name != model:
        if time.monotonic() > deadline:
            raise AssertionError(f"small talk not routed to {model} after the file edit")
        await asyncio.sleep(0.1)


def _run_router(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tollgate_router"],
        env=base_env(env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_bad_settings_or_policy_exit_2_with_one_line(tmp_path: Path) -> None:
    r = _run_router({"TOLLGATE_ROUTER_POLICY_POLL_SECONDS": "-1"})
    assert r.returncode == 2
    assert "TOLLGATE_ROUTER_POLICY_POLL_SECONDS" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1

    bad = tmp_path / "bad.yaml"
    bad.write_text(DEFAULT.replace("baseline_model: gpt-4o", "baseline_model: gpt-0"))
    r = _run_router({"TOLLGATE_ROUTER_POLICY_FILE": str(bad)})
    assert r.returncode == 2
    assert "baseline_model" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
