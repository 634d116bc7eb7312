"""Routing across vendors: the vision filter, providers the caller cannot reach
(``skip_providers``) and their fallback reason, in decide() and over the Route RPC."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from prometheus_client import CollectorRegistry

from tollgate.router.v1 import router_pb2, router_pb2_grpc
from tollgate_common.config import ServiceSettings
from tollgate_common.grpc.channel import make_channel
from tollgate_common.grpc.server import start_grpc_server
from tollgate_common.metrics import create_families
from tollgate_common.policy import INTENTS, PRICE_TABLE_FILE, Policy, parse_policy
from tollgate_router.classifier import Features
from tollgate_router.metrics import RouterMetrics
from tollgate_router.policy_store import PolicyStore
from tollgate_router.routing import FALLBACK_REASONS, Decision, RouteInput, decide
from tollgate_router.service import MAX_SKIP_PROVIDERS, RouterService

TALK = "hi, how are you?"
CODE = "Write a Python function that merges two sorted lists."


def _model(provider: str, price: float, caps: list[str]) -> dict[str, Any]:
    return {
        "provider": provider,
        "input_per_mtok": price,
        "cached_input_per_mtok": price / 10,
        "output_per_mtok": price * 4,
        "capabilities": caps,
    }


def policy_doc() -> dict[str, Any]:
    text = ["tools", "json", "streaming"]
    return {
        "version": "vendors-1",
        "providers": {
            "openai": {"base_url": "https://api.openai.com/v1", "api_key_env": "OPENAI_API_KEY"},
            "gemini": {
                "type": "gemini",
                "base_url": "https://generativelanguage.googleapis.com/v1beta/openai/",
                "api_key_env": "GEMINI_API_KEY",
            },
            "local": {"type": "compatible", "base_url": "http://127.0.0.1:8000/v1"},
        },
        "models": {
            "flash": _model("gemini", 0.1, [*text, "vision"]),
            "mini": _model("openai", 0.4, text),
            "eye": _model("openai", 2.5, [*text, "vision"]),
            "llama": _model("local", 0.0, ["streaming"]),
        },
        "routes": {
            i: {"small": ["flash", "mini"], "medium": ["mini", "eye"], "large": ["eye", "flash"]}
            for i in INTENTS
        },
        "default_model": "mini",
        "baseline_model": "eye",
        "tenants": {"textonly": {"allowed_models": ["mini", "llama"]}},
    }


@pytest.fixture(scope="module")
def policy() -> Policy:
    return parse_policy(yaml.safe_dump(policy_doc()), prices={})


def route(
    policy: Policy, text: str = TALK, skip: frozenset[str] = frozenset(), **kw: Any
) -> Decision:
    fkeys = {"has_tools", "has_images", "max_tokens", "estimated_prompt_tokens"}
    f = Features(last_user_text=text, **{k: v for k, v in kw.items() if k in fkeys})
    rest = {k: v for k, v in kw.items() if k not in fkeys}
    return decide(policy, RouteInput(features=f, skip_providers=skip, **rest))


def test_images_keep_only_vision_models(policy: Policy) -> None:
    assert route(policy, CODE).chain == ("mini", "eye")
    d = route(policy, CODE, has_images=True)
    assert d.chain == ("eye",)  # mini has no vision
    assert d.fallbacks == ("capability",)
    assert "dropped mini (capability)" in d.reason
    # Small talk's chain starts with a vision model: nothing to drop, nothing counted.
    d = route(policy, TALK, has_images=True)
    assert (d.chain, d.fallbacks) == (("flash",), ())


def test_images_and_tools_need_both(policy: Policy) -> None:
    d = route(policy, CODE, has_images=True, has_tools=True)
    assert d.chain == ("eye",)
    # No chain model fits at all: the cheapest catalog model that does.
    d = route(policy, CODE, has_images=True, skip=frozenset({"openai"}))
    assert d.chain == ("flash",)
    assert "no chain model fits; cheapest that do" in d.reason


def test_skipped_provider_drops_its_models_with_its_own_reason(policy: Policy) -> None:
    d = route(policy, TALK, skip=frozenset({"gemini"}))
    assert d.chain == ("mini",)
    assert d.fallbacks == ("provider_unavailable",)
    assert "dropped flash (provider_unavailable)" in d.reason
    assert "provider_unavailable" in FALLBACK_REASONS
    # A dropped fallback is no change of primary: noted in the reason, not counted.
    d = route(policy, CODE, skip=frozenset({"gemini"}))
    assert (d.chain, d.fallbacks) == (("mini", "eye"), ())
    d = route(
        policy,
        "Explain this. " * 50,
        skip=frozenset({"gemini"}),
        has_tools=True,
        estimated_prompt_tokens=4000,
    )
    assert d.tier == "large" and d.chain == ("eye",)
    assert "dropped flash (provider_unavailable)" in d.reason and d.fallbacks == ()


def test_every_chain_model_skipped_substitutes_from_other_providers(policy: Policy) -> None:
    d = route(policy, TALK, skip=frozenset({"gemini", "openai"}))
    assert d.chain == ("llama",)  # the keyless local server
    assert d.fallbacks[0] == "provider_unavailable"
    assert d.estimated_cost_usd == 0.0


def test_the_skip_list_is_dropped_last_when_nothing_else_is_left(policy: Policy) -> None:
    # textonly may use mini and llama; llama lacks tools and openai is skipped: first the
    # capability is relaxed (llama), then nothing at all is on a reachable provider.
    d = route(policy, CODE, tenant="textonly", has_tools=True, skip=frozenset({"openai"}))
    assert d.chain == ("llama",)
    assert "no_eligible_model" in d.fallbacks
    d = route(policy, CODE, tenant="textonly", skip=frozenset({"openai", "local"}))
    # Every allowed model, cheapest first: their attempts fail over at once (not_configured).
    assert d.chain == ("llama", "mini")
    assert d.fallbacks == ("provider_unavailable", "no_eligible_model")


def test_explicit_model_of_a_skipped_provider_stays_primary(policy: Policy) -> None:
    # The orchestrator refuses such a request itself; the router only filters fallbacks.
    d = route(policy, TALK, model="flash", skip=frozenset({"gemini"}))
    assert d.chain == ("flash", "mini")
    d = route(policy, TALK, model="mini", skip=frozenset({"gemini"}))
    assert d.chain == ("mini",)


@pytest.fixture
async def stub(
    tmp_path: Path,
) -> AsyncIterator[tuple[router_pb2_grpc.RouterAsyncStub, CollectorRegistry]]:
    registry = CollectorRegistry()
    metrics = RouterMetrics(create_families("router", registry))
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(policy_doc()))
    store = PolicyStore(
        policy_file=policy_file,
        override_file=None,
        price_table_file=PRICE_TABLE_FILE,
        listener=metrics,
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
        yield router_pb2_grpc.RouterStub(channel), registry  # type: ignore[misc]
    finally:
        await channel.close()
        await srv.stop(0)


def _req(text: str, **kw: Any) -> router_pb2.RouteRequest:
    return router_pb2.RouteRequest(
        model="auto", features=router_pb2.MessageFeatures(last_user_text=text, turns=1), **kw
    )


async def test_route_rpc_reads_images_and_skip_list_and_counts_the_reason(stub: Any) -> None:
    client, registry = stub
    resp = await client.Route(_req(CODE, has_images=True))
    assert [t.name for t in resp.chain] == ["eye"]
    resp = await client.Route(_req(TALK, skip_providers=["gemini"]))
    assert [(t.name, t.provider) for t in resp.chain] == [("mini", "openai")]
    assert "dropped flash (provider_unavailable)" in resp.reason
    count = registry.get_sample_value(
        "tollgate_router_fallbacks_total", {"reason": "provider_unavailable"}
    )
    assert count == 1
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.Route(_req(TALK, skip_providers=["p"] * (MAX_SKIP_PROVIDERS + 1)))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "skip_providers" in (err.value.details() or "")


def test_a_policy_that_declares_no_vision_keeps_its_chains_for_images() -> None:
    doc = policy_doc()
    for m in doc["models"].values():
        m["capabilities"] = [c for c in m["capabilities"] if c != "vision"]
    old = parse_policy(yaml.safe_dump(doc), prices={})
    d = route(old, CODE, has_images=True)
    assert (d.chain, d.fallbacks) == (("mini", "eye"), ())
    assert "no model declares vision" in d.reason
