"""The router's composition root: metrics, policy store, servicer, gRPC until SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import grpc

from tollgate.router.v1 import router_pb2_grpc
from tollgate_common.grpc.server import GrpcServer, start_grpc_server
from tollgate_common.metrics import create_families
from tollgate_common.metrics.exposition import start_metrics_server
from tollgate_common.service import shutdown, wait_for_signal
from tollgate_router.config import RouterSettings
from tollgate_router.metrics import RouterMetrics
from tollgate_router.policy_store import PolicyStore
from tollgate_router.service import CALLERS, SERVICE_NAME, RouterService


def build_store(settings: RouterSettings, metrics: RouterMetrics) -> PolicyStore:
    """The policy store; a bad policy file raises ``PolicyError`` (exit 2)."""
    return PolicyStore(
        policy_file=settings.policy_file,
        override_file=settings.policy_override_file,
        price_table_file=settings.price_table_file,
        listener=metrics,
    )


async def start(settings: RouterSettings, store: PolicyStore, metrics: RouterMetrics) -> GrpcServer:
    service = RouterService(store, metrics)

    def register(server: grpc.aio.Server) -> Sequence[str]:
        router_pb2_grpc.add_RouterServicer_to_server(service, server)
        return [SERVICE_NAME]

    return await start_grpc_server(
        settings=settings,
        port=settings.grpc_port,
        families=metrics.families,
        register=register,
        callers=CALLERS,
    )


async def serve(settings: RouterSettings) -> None:
    metrics = RouterMetrics(create_families("router"))
    store = build_store(settings, metrics)
    start_metrics_server(metrics.families.registry, settings.metrics_port, settings.host)
    server = await start(settings, store, metrics)
    watcher = asyncio.create_task(store.run(settings.policy_poll_seconds))
    try:
        await wait_for_signal()
        await shutdown(
            server, drain_seconds=settings.drain_seconds, grace_seconds=settings.grace_seconds
        )
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
