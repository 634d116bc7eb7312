"""``python -m tollgate_router``: settings, logging, metrics, policy, gRPC until SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Sequence

import grpc
import uvloop

from tollgate.router.v1 import router_pb2, router_pb2_grpc
from tollgate_common.config import ConfigError, load_settings
from tollgate_common.grpc.server import run_until_signal, start_grpc_server
from tollgate_common.logging import setup_logging
from tollgate_common.metrics import create_families
from tollgate_common.metrics.exposition import start_metrics_server
from tollgate_common.policy import PolicyError
from tollgate_router.config import RouterSettings
from tollgate_router.metrics import RouterMetrics
from tollgate_router.policy_store import PolicyStore
from tollgate_router.service import RouterService

SERVICE_NAME = router_pb2.DESCRIPTOR.services_by_name["Router"].full_name


async def serve(settings: RouterSettings, store: PolicyStore, metrics: RouterMetrics) -> None:
    service = RouterService(store, metrics)

    def register(server: grpc.aio.Server) -> Sequence[str]:
        router_pb2_grpc.add_RouterServicer_to_server(service, server)
        return [SERVICE_NAME]

    server = await start_grpc_server(
        settings=settings, port=settings.grpc_port, families=metrics.families, register=register
    )
    watcher = asyncio.create_task(store.run(settings.policy_poll_seconds))

    async def on_stop() -> None:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher

    await run_until_signal(server, settings.grace_seconds, on_stop)


def main() -> int:
    try:
        settings = load_settings(RouterSettings, "router")
    except ConfigError as exc:
        print(f"tollgate-router: bad configuration: {exc}", file=sys.stderr)
        return 2
    setup_logging("router", settings.log_level)
    metrics = RouterMetrics(create_families("router"))
    try:
        store = PolicyStore(
            policy_file=settings.policy_file,
            override_file=settings.policy_override_file,
            price_table_file=settings.price_table_file,
            listener=metrics,
        )
    except PolicyError as exc:
        print(f"tollgate-router: bad policy: {exc}", file=sys.stderr)
        return 2
    start_metrics_server(metrics.families.registry, settings.metrics_port, settings.host)
    uvloop.run(serve(settings, store, metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
