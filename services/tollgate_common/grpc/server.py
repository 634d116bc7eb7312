"""The one grpc.aio server bootstrap: caller checks, metrics, health, reflection (opt-in),
TLS, limits, graceful stop.

The shutdown sequence (NOT_SERVING, drain, stop) is ``tollgate_common.service.shutdown``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from tollgate_common.config import ConfigError, ServiceSettings
from tollgate_common.grpc.auth import CallerTable, Guard, guard_from_settings
from tollgate_common.grpc.metrics import ServerMetrics
from tollgate_common.metrics import Families

log = logging.getLogger(__name__)

SERVER_OPTIONS = [
    ("grpc.so_reuseport", 0),  # a busy port must fail loudly, not share traffic
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
]


class GrpcServer:
    """A started server plus its health servicer; ``stop`` drains it gracefully."""

    def __init__(
        self,
        server: grpc.aio.Server,
        health: health_aio.HealthServicer,
        port: int,
        services: Sequence[str],
    ) -> None:
        self.server = server
        self.health = health
        self.port = port
        self.services = services

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *self.services):
            await self.health.set(name, status)

    async def stop(self, grace: float) -> None:
        # Health first, so load balancers and probes stop sending new work.
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


def server_options(settings: ServiceSettings) -> list[tuple[str, int]]:
    """``SERVER_OPTIONS`` plus the connection age bounds of ``settings`` (L-11)."""
    return [
        *SERVER_OPTIONS,
        ("grpc.max_connection_age_ms", int(settings.grpc_max_connection_age_seconds * 1000)),
        (
            "grpc.max_connection_age_grace_ms",
            int(settings.grpc_max_connection_age_grace_seconds * 1000),
        ),
    ]


class _Wrapper:
    """Metrics around the caller check around the handler: a refused call is still
    counted in ``grpc_server_handled_total`` with its status code."""

    __slots__ = ("_guard", "_metrics")

    def __init__(self, metrics: ServerMetrics, guard: Guard | None) -> None:
        self._metrics = metrics
        self._guard = guard

    def __call__(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if self._guard is not None:
            handler = self._guard.wrap(method, handler)
        return self._metrics.wrap(method, handler)


class _MeteredGeneric(grpc.GenericRpcHandler):  # type: ignore[misc]
    """A generic handler whose answers carry the checks and metrics, wrapped once per
    method."""

    def __init__(self, inner: grpc.GenericRpcHandler, wrap: _Wrapper) -> None:
        self._inner = inner
        self._wrap = wrap
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method: str = details.method
        handler = self._wrapped.get(method)
        if handler is None:
            inner = self._inner.service(details)
            if inner is None:
                return None
            handler = self._wrapped[method] = self._wrap(method, inner)
        return handler


class MeteredRegistrar:
    """Stands in for the server while servicers register: every method handler gets
    its caller check (``auth.Guard``) and its metrics wrapped around it once, here,
    instead of through a server interceptor, which grpc.aio runs as extra coroutines
    on every RPC (measured: ~10 % of a small RPC's server CPU). Every method any
    servicer registers passes through here, so none escapes the check. Anything else
    is passed to the real server."""

    def __init__(
        self, server: grpc.aio.Server, metrics: ServerMetrics, guard: Guard | None = None
    ) -> None:
        self.server = server
        self._wrap = _Wrapper(metrics, guard)

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self.server.add_generic_rpc_handlers(
            tuple(_MeteredGeneric(h, self._wrap) for h in handlers)
        )

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        wrap = self._wrap
        self.server.add_registered_method_handlers(
            service, {name: wrap(f"/{service}/{name}", h) for name, h in handlers.items()}
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self.server, name)


def _credentials(settings: ServiceSettings) -> grpc.ServerCredentials | None:
    # ServiceSettings refuses partial TLS settings; this holds for settings built
    # without validation too: never plaintext when any TLS field is set (M-6).
    cert, key, ca = settings.grpc_tls_cert, settings.grpc_tls_key, settings.grpc_tls_client_ca
    if cert is None and key is None and ca is None:
        return None
    if cert is None or key is None:
        raise ConfigError("grpc_tls_cert, grpc_tls_key: set both (grpc_tls_client_ca needs them)")
    try:
        pair = (key.read_bytes(), cert.read_bytes())
        ca_pem = ca.read_bytes() if ca else None
    except OSError as exc:
        raise ConfigError(f"grpc_tls_cert/grpc_tls_key/grpc_tls_client_ca: {exc}") from exc
    return grpc.ssl_server_credentials(
        [pair], root_certificates=ca_pem, require_client_auth=ca_pem is not None
    )


async def start_grpc_server(
    *,
    settings: ServiceSettings,
    port: int,
    families: Families,
    register: Callable[[grpc.aio.Server], Sequence[str]],
    callers: CallerTable | None = None,
) -> GrpcServer:
    """Create, register and start a server on ``settings.host:port``.

    ``register`` adds the servicers and returns their full service names, which
    get health entries (and reflection, with ``grpc_reflection``). ``callers`` is the
    servicers' table of allowed callers per full method name (``auth.CallerTable``);
    a method missing from it allows nobody, health allows anyone. Raises
    ``ConfigError`` when no caller identity is configured (``grpc_callers_file``, or
    ``grpc_tls_client_ca``, or the test-only ``grpc_allow_unauthenticated``), before
    anything binds. ``port`` 0 picks a free port.
    """
    guard = guard_from_settings(settings, callers, families)
    creds = _credentials(settings)
    server = grpc.aio.server(
        options=server_options(settings),
        maximum_concurrent_rpcs=settings.grpc_max_concurrent_rpcs,
    )
    metered = MeteredRegistrar(server, ServerMetrics(families), guard)
    names = list(register(metered))
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, metered)
    if settings.grpc_reflection:
        # The real server: reflection picks its aio servicer by ``isinstance``; it goes
        # unmetered and unchecked (it tells schemas, nothing else). Off by default (L-11).
        reflection.enable_server_reflection(
            [
                *names,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            server,
        )
    address = f"{settings.host}:{port}"
    try:
        bound = (
            server.add_secure_port(address, creds) if creds else server.add_insecure_port(address)
        )
    except RuntimeError as exc:  # grpc reports a taken port as RuntimeError, or as 0
        raise OSError(f"cannot bind gRPC on {address}") from exc
    if bound == 0:
        raise OSError(f"cannot bind gRPC on {address}")
    await server.start()
    result = GrpcServer(server, health, bound, names)
    await result.set_serving(True)
    log.info(
        "grpc serving",
        extra={
            "address": f"{settings.host}:{bound}",
            "tls": creds is not None,
            "mutual_tls": settings.grpc_tls_client_ca is not None,
            "caller_checks": guard is not None,
            "reflection": settings.grpc_reflection,
        },
    )
    return result
