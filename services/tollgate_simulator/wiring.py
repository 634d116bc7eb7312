"""The simulator's composition root: settings -> the ASGI app, served by uvicorn."""

from __future__ import annotations

import logging
import socket

import uvicorn

from tollgate_common.policy import load_policy
from tollgate_common.service import uvicorn_config
from tollgate_simulator.config import LatencyTable, SimSettings, load_latency_file
from tollgate_simulator.http_api import SimulatorApp, quiet_injected_disconnects

log = logging.getLogger("tollgate.simulator")


def build(settings: SimSettings) -> SimulatorApp:
    """The app; a bad latency file raises ``ConfigError``, a bad policy ``PolicyError``."""
    overrides = load_latency_file(settings.latency_file) if settings.latency_file else None
    return SimulatorApp(
        catalog=list(load_policy().models),
        latency=LatencyTable(overrides),
        latency_scale=settings.latency_scale,
        allowed_models=settings.models,
        max_body_bytes=settings.max_body_bytes,
        api_key=settings.api_key.get_secret_value() if settings.api_key else "",
    )


async def serve(settings: SimSettings) -> None:
    app = build(settings)
    quiet_injected_disconnects()
    # Bound here, not by uvicorn: a taken port is one "cannot start" line and exit 1.
    try:
        family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
        sock = socket.create_server((settings.host, settings.port), family=family, backlog=4096)
    except OSError as exc:
        raise OSError(f"HTTP {settings.host}:{settings.port}: {exc.strerror}") from None
    log.info(
        "simulator listening",
        extra={"host": settings.host, "port": settings.port, "scale": settings.latency_scale},
    )
    # uvicorn handles SIGTERM/SIGINT itself: no readiness or gRPC health to flip first.
    server = uvicorn.Server(
        uvicorn_config(app, settings.host, settings.port, grace_seconds=settings.grace_seconds)
    )
    try:
        await server.serve(sockets=[sock])
    finally:
        sock.close()
