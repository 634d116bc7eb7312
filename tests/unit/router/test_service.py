"""The servicer in process over real gRPC: proto mapping, status codes, recorded metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import grpc
import pytest
from prometheus_client import CollectorRegistry

from tollgate.router.v1 import router_pb2, router_pb2_grpc
from tollgate_common.config import ServiceSettings
from tollgate_common.grpc.channel import make_channel
from tollgate_common.grpc.server import start_grpc_server
from tollgate_common.metrics import create_families, specs_for
from tollgate_common.policy import DEFAULT_POLICY_FILE, PRICE_TABLE_FILE
from tollgate_router.metrics import RouterMetrics
from tollgate_router.policy_store import PolicyStore
from tollgate_router.service import RouterService


@dataclass
class Env:
    stub: router_pb2_grpc.RouterAsyncStub
    registry: CollectorRegistry

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        return self.registry.get_sample_value(name, labels or {}) or 0.0


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    registry = CollectorRegistry()
    metrics = RouterMetrics(create_families("router", registry))
    store = PolicyStore(
        policy_file=None, override_file=None, price_table_file=PRICE_TABLE_FILE, listener=metrics
    )
    service = RouterService(store, metrics)

    def register(server: grpc.aio.Server) -> Sequence[str]:
        router_pb2_grpc.add_RouterServicer_to_server(service, server)
        return ["tollgate.router.v1.Router"]

    srv = await start_grpc_server(
        settings=ServiceSettings(grpc_allow_unauthenticated=True),
        port=0,
        families=metrics.families,
        register=register,
    )
    channel = make_channel(f"127.0.0.1:{srv.port}", default_timeout=5)
    try:
        yield Env(router_pb2_grpc.RouterStub(channel), registry)  # type: ignore[arg-type]
    finally:
        await channel.close()
        await srv.stop(0)


def req(text: str, **kw: object) -> router_pb2.RouteRequest:
    return router_pb2.RouteRequest(
        model=str(kw.pop("model", "auto")),
        features=router_pb2.MessageFeatures(last_user_text=text, turns=1),
        **kw,  # type: ignore[arg-type]
    )


async def test_route_fills_targets_and_records_every_router_family(env: Env) -> None:
    resp = await env.stub.Route(req("Write a Python function that reverses a linked list."))
    assert (resp.intent, resp.tier) == ("code", "medium")
    primary = resp.chain[0]
    assert (primary.name, primary.provider, primary.upstream_model) == (
        "claude-sonnet-4-5",
        "anthropic",
        "claude-sonnet-4-5",
    )
    assert primary.price.input_per_mtok == 3.0
    assert primary.context_window == 200_000
    assert resp.baseline.name == "gpt-4o"
    assert resp.policy_version == "default-2026-12-03"
    assert resp.estimated_cost_usd > 0
    assert "chain claude-sonnet-4-5 > gpt-4.1 > gemini-2.5-pro" in resp.reason

    await env.stub.Route(req("What is the weather like?", has_tools=True, downgrade=True))
    labels = {"intent": "code", "tier": "medium", "model": "claude-sonnet-4-5"}
    assert env.value("tollgate_router_model_selections_total", labels) == 1
    assert env.value("tollgate_router_decision_duration_seconds_count") == 2
    assert env.value("tollgate_router_chain_length_count") == 2
    assert env.value("tollgate_router_complexity_score_count") == 2
    assert env.value("tollgate_router_classifier_confidence_count", {"intent": "code"}) == 1
    assert env.value("tollgate_router_estimated_cost_usd_count", {"tier": "medium"}) == 1
    exposed = {m.name for m in env.registry.collect()}
    for spec in specs_for("router"):
        assert spec.name.removesuffix("_total") in exposed, spec.name


async def test_unknown_model_is_not_found_naming_it(env: Env) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await env.stub.Route(req("hi", model="gpt-9-ultra"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "gpt-9-ultra" in (err.value.details() or "")
    assert env.value("tollgate_router_decision_duration_seconds_count") == 0


async def test_bad_field_is_invalid_argument(env: Env) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await env.stub.Route(req("hi", max_tokens=-1))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "max_tokens" in (err.value.details() or "")


async def test_update_and_get_policy(env: Env) -> None:
    text = DEFAULT_POLICY_FILE.read_text()
    bad = text.replace("baseline_model: gpt-4o", "baseline_model: gpt-0")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await env.stub.UpdatePolicy(router_pb2.UpdatePolicyRequest(policy_yaml=bad, source="t"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "baseline_model" in (err.value.details() or "")

    same = await env.stub.UpdatePolicy(router_pb2.UpdatePolicyRequest(policy_yaml=text))
    assert not same.changed

    new = text.replace(
        "small:  [gemini-2.5-flash-lite, gpt-4.1-nano, claude-haiku-4-5]",
        "small:  [gpt-4o-mini]",
        1,
    )
    resp = await env.stub.UpdatePolicy(
        router_pb2.UpdatePolicyRequest(policy_yaml=new, source="operator:team-a/default")
    )
    assert resp.changed
    got = await env.stub.GetPolicy(router_pb2.GetPolicyRequest())
    assert (got.version, got.source, got.policy_yaml) == (
        resp.version,
        "operator:team-a/default",
        new,
    )
    routed = await env.stub.Route(req("hi, how are you?"))
    assert [t.name for t in routed.chain] == ["gpt-4o-mini"]
    assert routed.policy_version == resp.version
