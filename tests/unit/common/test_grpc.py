"""Server bootstrap and per-method metrics: health, codes of aborted RPCs, client deadlines."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from tollgate_common.config import ServiceSettings
from tollgate_common.grpc.channel import make_channel
from tollgate_common.grpc.server import start_grpc_server
from tollgate_common.metrics import create_families

SLOW = "tollgate.test.v1.Slow"


async def _slow(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    await asyncio.sleep(5)
    return request


def _register(server: grpc.aio.Server) -> Sequence[str]:
    handler = grpc.unary_unary_rpc_method_handler(_slow)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SLOW, {"Echo": handler}),)
    )
    return [SLOW]


async def _started() -> tuple[Any, CollectorRegistry]:
    registry = CollectorRegistry()
    fams = create_families("router", registry)
    srv = await start_grpc_server(
        settings=ServiceSettings(grpc_allow_unauthenticated=True),
        port=0,
        families=fams,
        register=_register,
    )
    return srv, registry


async def test_health_serving_then_not_serving_on_stop() -> None:
    srv, _ = await _started()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        for name in ("", SLOW):
            resp = await stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=2)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
        await srv.health.enter_graceful_shutdown()
        resp = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
        assert resp.status == health_pb2.HealthCheckResponse.NOT_SERVING
    await srv.stop(0)


async def test_aborted_rpc_is_counted_with_its_code() -> None:
    srv, registry = await _started()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=2)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    labels = {"grpc_type": "unary", "grpc_service": "grpc.health.v1.Health", "grpc_method": "Check"}
    assert registry.get_sample_value("grpc_server_started_total", labels) == 1
    assert (
        registry.get_sample_value("grpc_server_handled_total", {**labels, "grpc_code": "NOT_FOUND"})
        == 1
    )
    assert registry.get_sample_value("grpc_server_handling_seconds_count", labels) == 1
    await srv.stop(0)


async def test_client_sets_a_default_deadline_and_records_the_code() -> None:
    srv, _ = await _started()
    client_registry = CollectorRegistry()
    fams = create_families("orchestrator", client_registry)
    ch = make_channel(f"127.0.0.1:{srv.port}", default_timeout=0.2, families=fams)
    echo = ch.unary_unary(f"/{SLOW}/Echo")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await asyncio.wait_for(echo(b"x"), timeout=3)  # would hang 5 s without a deadline
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    labels = {"grpc_type": "unary", "grpc_service": SLOW, "grpc_method": "Echo"}
    assert (
        client_registry.get_sample_value(
            "grpc_client_handled_total", {**labels, "grpc_code": "DEADLINE_EXCEEDED"}
        )
        == 1
    )
    await ch.close()
    await srv.stop(0)
