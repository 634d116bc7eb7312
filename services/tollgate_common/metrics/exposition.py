"""The metrics HTTP server for services that have no HTTP app of their own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, start_http_server


def start_metrics_server(registry: CollectorRegistry, port: int, host: str = "0.0.0.0") -> None:
    """Serve ``registry`` on http://host:port/metrics from a daemon thread.

    A thread rather than the event loop: scrapes keep working while the loop is busy.
    """
    start_http_server(port, addr=host, registry=registry)
