"""``python -m tollgate_simulator``: serve the simulator with uvicorn (uvloop, httptools)."""

from __future__ import annotations

import logging
import sys

import uvicorn

from tollgate_common.config import ConfigError, load_settings
from tollgate_common.logging import setup_logging
from tollgate_common.policy import PolicyError, load_policy
from tollgate_simulator.app import SimulatorApp, quiet_injected_disconnects
from tollgate_simulator.config import LatencyTable, SimSettings, load_latency_file


def build(settings: SimSettings) -> SimulatorApp:
    overrides = load_latency_file(settings.latency_file) if settings.latency_file else None
    return SimulatorApp(
        catalog=list(load_policy().models),
        latency=LatencyTable(overrides),
        latency_scale=settings.latency_scale,
        allowed_models=settings.models,
        max_body_bytes=settings.max_body_bytes,
        api_key=settings.api_key.get_secret_value() if settings.api_key else "",
    )


def main() -> int:
    try:
        settings = load_settings(SimSettings, "simulator")
        app = build(settings)
    except (ConfigError, PolicyError) as exc:
        print(f"tollgate-simulator: configuration error: {exc}", file=sys.stderr)
        return 2
    setup_logging("simulator", settings.log_level)
    quiet_injected_disconnects()
    logging.getLogger("tollgate.simulator").info(
        "simulator listening",
        extra={"host": settings.host, "port": settings.port, "scale": settings.latency_scale},
    )
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_config=None,
        server_header=False,
        timeout_graceful_shutdown=max(1, round(settings.grace_seconds)),
        backlog=4096,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
