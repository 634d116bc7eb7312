"""The tenant's model rules hold with the router answering, refusing or away (H-4), and a
route is priced from the orchestrator's own catalog, never from the answer."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from tollgate.router.v1 import router_pb2
from tollgate_common.policy import DEFAULT_POLICY_FILE, parse_policy
from tollgate_orchestrator.clients import degraded_model
from tollgate_orchestrator.errors import ApiError

from .fakes import POLICY
from .test_clients import FakeCacheServicer as _Cache
from .test_clients import FakeRouterServicer, Rig, model_target, req, serve_fakes

FRUGAL = parse_policy(
    DEFAULT_POLICY_FILE.read_text().replace(
        "models:\n",
        "tenants:\n  frugal: {allowed_models: [gpt-4.1-nano, gpt-4o-mini]}\n"
        "  nano: {allowed_models: [gpt-4.1-nano]}\nmodels:\n",
        1,
    )
)


class Refusing(FakeRouterServicer):
    async def Route(
        self, request: router_pb2.RouteRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.RouteResponse:
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, "not for you")
        raise AssertionError


class Lying(FakeRouterServicer):
    """Answers with free prices and a model the catalog does not have."""

    async def Route(
        self, request: router_pb2.RouteRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.RouteResponse:
        free = model_target("gpt-4.1")
        free.price.CopyFrom(router_pb2.Price())
        return router_pb2.RouteResponse(
            intent="code",
            tier="small",
            chain=[router_pb2.ModelTarget(name="evil-model", provider="openai"), free],
        )


@pytest.fixture
async def served(request: pytest.FixtureRequest) -> Any:
    server = await serve_fakes(request.param(), _Cache())
    rig = Rig(server.port)
    yield rig
    await rig.channel.close()
    await server.stop(0)


@pytest.mark.parametrize("served", [Refusing], indirect=True)
async def test_a_refusal_is_403_and_never_degraded_or_a_router_failure(served: Any) -> None:
    for _ in range(5):
        with pytest.raises(ApiError) as info:
            await served.router.route(req("gpt-4o"), "frugal", "r", False)
        assert (info.value.status, info.value.code) == (403, "model_not_allowed")
        assert info.value.reason == "forbidden"
    assert served.value("tollgate_degraded_total", dependency="router", reason="unavailable") == 0
    assert served.value("tollgate_dependency_up", dependency="router") != 0


@pytest.mark.parametrize("served", [Lying], indirect=True)
async def test_a_route_is_priced_from_the_catalog_and_unknown_models_dropped(served: Any) -> None:
    d = await served.router.route(req(), "t", "r", False)
    assert [t.name for t in d.chain] == ["gpt-4.1"]
    price = POLICY.models["gpt-4.1"].output_per_mtok
    assert price and d.chain[0].entry.output_per_mtok == price


def test_without_the_router_the_tenant_rules_still_hold() -> None:
    assert degraded_model(FRUGAL, "gpt-4.1-nano", "frugal") == "gpt-4.1-nano"
    with pytest.raises(ApiError) as info:
        degraded_model(FRUGAL, "gpt-4o", "frugal")  # served degraded before the fix
    assert (info.value.status, info.value.code) == (403, "model_not_allowed")
    assert degraded_model(FRUGAL, "auto", "frugal") == FRUGAL.default_model  # it is allowed
    assert degraded_model(FRUGAL, "auto", "nano") == "gpt-4.1-nano"  # default not allowed
    assert degraded_model(FRUGAL, "gpt-4o", "someone-else") == "gpt-4o"
    with pytest.raises(ApiError) as info:
        degraded_model(FRUGAL, "gpt-17", "frugal")
    assert info.value.status == 404
