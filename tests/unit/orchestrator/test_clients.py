"""Router and cache clients against in-process fake gRPC servicers: answers, 404s,
slow and dead peers (degraded, counted, breaker), and mutual TLS from settings."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry

from tollgate.cache.v1 import cache_pb2, cache_pb2_grpc
from tollgate.router.v1 import router_pb2, router_pb2_grpc
from tollgate_common.breaker import BreakerConfig, CircuitBreaker
from tollgate_common.config import ServiceSettings, load_settings
from tollgate_common.grpc.channel import make_channel
from tollgate_common.grpc.server import GrpcServer, start_grpc_server
from tollgate_common.metrics import create_families
from tollgate_orchestrator.catalog import Catalog
from tollgate_orchestrator.clients import CacheClient, RouterClient
from tollgate_orchestrator.config import OrchestratorSettings
from tollgate_orchestrator.errors import ApiError
from tollgate_orchestrator.validation import Limits, parse_chat_request
from tollgate_orchestrator.wiring import Gateway
from tools.stack import free_port

from .fakes import POLICY


def price(name: str) -> router_pb2.Price:
    m = POLICY.models[name]
    return router_pb2.Price(
        input_per_mtok=m.input_per_mtok or 0,
        cached_input_per_mtok=m.cached_input_per_mtok or 0,
        output_per_mtok=m.output_per_mtok or 0,
    )


def model_target(name: str) -> router_pb2.ModelTarget:
    return router_pb2.ModelTarget(
        name=name, provider="openai", upstream_model=name, price=price(name), context_window=1
    )


class FakeRouterServicer(router_pb2_grpc.RouterServicer):
    def __init__(self) -> None:
        self.delay = 0.0
        self.requests: list[router_pb2.RouteRequest] = []

    async def Route(
        self, request: router_pb2.RouteRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.RouteResponse:
        self.requests.append(request)
        await asyncio.sleep(self.delay)
        if request.model not in ("auto", *POLICY.models):
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model {request.model}")
        return router_pb2.RouteResponse(
            intent="code",
            tier="medium",
            chain=[model_target("gpt-4.1"), model_target("gpt-4.1-mini")],
            baseline=model_target("gpt-4o"),
            reason="fake",
        )

    async def UpdatePolicy(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "fake")

    async def GetPolicy(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "fake")


class FakeCacheServicer(cache_pb2_grpc.CacheServicer):
    def __init__(self) -> None:
        self.entries: dict[str, cache_pb2.Entry] = {}

    async def Lookup(
        self, request: cache_pb2.LookupRequest, context: grpc.aio.ServicerContext
    ) -> cache_pb2.LookupResponse:
        e = self.entries.get(request.key)
        return cache_pb2.LookupResponse(hit=e is not None, entry=e)

    async def Store(
        self, request: cache_pb2.StoreRequest, context: grpc.aio.ServicerContext
    ) -> cache_pb2.StoreResponse:
        self.entries[request.key] = request.entry
        return cache_pb2.StoreResponse(stored=True)

    async def Invalidate(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "fake")

    async def Stats(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "fake")


async def serve_fakes(
    router: FakeRouterServicer, cache: FakeCacheServicer, settings: ServiceSettings | None = None
) -> GrpcServer:
    def register(server: grpc.aio.Server) -> Sequence[str]:
        router_pb2_grpc.add_RouterServicer_to_server(router, server)
        cache_pb2_grpc.add_CacheServicer_to_server(cache, server)
        return ["tollgate.router.v1.Router", "tollgate.cache.v1.Cache"]

    return await start_grpc_server(
        settings=settings or ServiceSettings(grpc_allow_unauthenticated=True),
        port=0,
        families=create_families("router", CollectorRegistry()),
        register=register,
    )


class Rig:
    def __init__(self, port: int) -> None:
        from tollgate_orchestrator.metrics import OrchestratorMetrics

        self.registry = CollectorRegistry()
        fam = create_families("orchestrator", self.registry)
        models = {n: m.provider for n, m in POLICY.models.items()}
        self.metrics = OrchestratorMetrics(
            fam, models=models, tenants=["t"], routes=[], budget_store=False
        )
        self.channel = make_channel(f"127.0.0.1:{port}", default_timeout=0.2, families=fam)
        cfg = BreakerConfig(consecutive_failures=2, cooldown_seconds=60)
        self.router = RouterClient(
            router_pb2_grpc.RouterStub(self.channel),
            Catalog(POLICY),
            0.2,
            CircuitBreaker(cfg),
            self.metrics,
        )
        self.cache = CacheClient(
            cache_pb2_grpc.CacheStub(self.channel), 0.2, CircuitBreaker(cfg), self.metrics
        )

    def value(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeRouterServicer, FakeCacheServicer, Rig]]:
    router, cache = FakeRouterServicer(), FakeCacheServicer()
    server = await serve_fakes(router, cache)
    rig = Rig(server.port)
    yield router, cache, rig
    await rig.channel.close()
    await server.stop(0)


def req(model: str = "auto") -> Any:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "write code"}],
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "max_tokens": 99,
    }
    return parse_chat_request(body, Limits())


async def test_route_passes_features_and_builds_targets(fakes: Any) -> None:
    router, _, rig = fakes
    d = await rig.router.route(req(), "t", "rid-9", downgrade=True)
    assert (d.intent, d.tier, d.degraded) == ("code", "medium", False)
    assert [t.name for t in d.chain] == ["gpt-4.1", "gpt-4.1-mini"]
    assert d.chain[0].entry.output_per_mtok == POLICY.models["gpt-4.1"].output_per_mtok
    assert d.baseline is not None and d.baseline.name == "gpt-4o"
    sent = router.requests[-1]
    assert sent.features.last_user_text == "write code" and sent.has_tools
    assert (sent.max_tokens, sent.request_id, sent.downgrade, sent.tenant) == (
        99,
        "rid-9",
        True,
        "t",
    )
    again = await rig.router.route(req(), "t", "r", downgrade=False)
    assert again.chain[0] is d.chain[0]  # one Target per model and price, not per request


async def test_unknown_model_is_404_and_not_a_router_failure(fakes: Any) -> None:
    _, _, rig = fakes
    for _ in range(3):
        with pytest.raises(ApiError) as info:
            await rig.router.route(req("gpt-17"), "t", "r", False)
        assert (info.value.status, info.value.code) == (404, "model_not_found")
    assert rig.value("tollgate_degraded_total", dependency="router", reason="timeout") == 0


async def test_slow_router_degrades_then_the_breaker_skips_it(fakes: Any) -> None:
    router, _, rig = fakes
    router.delay = 1.0
    for _ in range(2):
        d = await asyncio.wait_for(rig.router.route(req(), "t", "r", False), 2)
        assert d.degraded and d.chain[0].name == POLICY.default_model
        assert d.intent == "other"
    assert rig.value("tollgate_degraded_total", dependency="router", reason="timeout") == 2
    d = await rig.router.route(req("gpt-4.1-nano"), "t", "r", False)  # circuit open: no call
    assert d.degraded and d.chain[0].name == "gpt-4.1-nano"
    assert rig.value("tollgate_degraded_total", dependency="router", reason="circuit_open") == 1
    assert len(router.requests) == 2
    with pytest.raises(ApiError):  # unknown to the local catalog either
        await rig.router.route(req("gpt-17"), "t", "r", False)


async def test_cache_hit_miss_and_down(fakes: Any) -> None:
    _, _, rig = fakes
    assert await rig.cache.lookup("k", "m") == ("miss", None)
    usage = cache_pb2.Usage(prompt_tokens=3)
    assert await rig.cache.store("k", b"{}", "m", usage, 0.5)
    result, entry = await rig.cache.lookup("k", "m")
    assert result == "hit" and entry is not None and entry.cost_usd == 0.5
    dead = Rig(free_port())
    for _ in range(3):
        assert await dead.cache.lookup("k", "m") == ("error", None)
    assert dead.value("tollgate_degraded_total", dependency="cache", reason="circuit_open") == 1
    assert dead.value("tollgate_dependency_up", dependency="cache") == 0
    await dead.channel.close()


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certs(d: Path) -> None:
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(
        "req",
        "-x509",
        *ec,
        "-subj",
        "/CN=test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "1",
        cwd=d,
    )
    (d / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name in ("server", "client"):
        _openssl(
            "req",
            *ec,
            "-subj",
            f"/CN={name}",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            cwd=d,
        )
        _openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.crt",
            "-days",
            "1",
            "-extfile",
            "san.ext",
            cwd=d,
        )


async def test_mutual_tls_to_peers_from_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    for k in list(os.environ):
        if k.startswith("TOLLGATE_"):
            monkeypatch.delenv(k)
    make_certs(tmp_path)
    server_settings = ServiceSettings(
        grpc_tls_cert=tmp_path / "server.crt",
        grpc_tls_key=tmp_path / "server.key",
        grpc_tls_client_ca=tmp_path / "ca.crt",
        grpc_allow_unauthenticated=True,  # the fakes declare no callers: TLS only here
    )
    router = FakeRouterServicer()
    server = await serve_fakes(router, FakeCacheServicer(), server_settings)
    addr = f"127.0.0.1:{server.port}"
    common: dict[str, Any] = {
        "router_addr": addr,
        "cache_addr": addr,
        "upstream_base_url": "http://127.0.0.1:9/v1",
        "router_timeout_seconds": 2,
    }
    with_tls = load_settings(
        OrchestratorSettings,
        "orchestrator",
        peer_tls_ca=tmp_path / "ca.crt",
        peer_tls_cert=tmp_path / "client.crt",
        peer_tls_key=tmp_path / "client.key",
        **common,
    )
    gw = Gateway(with_tls, CollectorRegistry())
    d = await gw.router.route(req(), "t", "r", False)
    assert not d.degraded and len(router.requests) == 1
    await gw.close()
    plain = Gateway(
        load_settings(OrchestratorSettings, "orchestrator", **common), CollectorRegistry()
    )
    d = await plain.router.route(req(), "t", "r", False)
    assert d.degraded  # a plaintext client cannot talk to the TLS router
    assert len(router.requests) == 1
    await plain.close()
    await server.stop(0)
