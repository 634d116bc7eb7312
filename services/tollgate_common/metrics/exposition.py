"""The metrics HTTP server of every service: prometheus_client's WSGI app, bounded.

prometheus_client's own server gives each connection a thread with no timeout, so a
client that opens connections and sends nothing holds threads forever (L-11). This one
gives every connection ``timeout`` seconds to send its request and take its answer, and
serves at most ``max_connections`` at once; more are closed at once.
"""

from __future__ import annotations

import socket
import threading
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

SCRAPE_TIMEOUT_SECONDS = 10.0
MAX_CONNECTIONS = 16


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return None


class _Bounded(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True
    slots: threading.BoundedSemaphore
    conn_timeout: float

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            self.shutdown_request(request)  # full: refuse at once, never queue a thread
            return
        request.settimeout(self.conn_timeout)
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


def start_metrics_server(
    registry: CollectorRegistry,
    port: int,
    host: str = "0.0.0.0",
    *,
    timeout: float = SCRAPE_TIMEOUT_SECONDS,
    max_connections: int = MAX_CONNECTIONS,
) -> tuple[WSGIServer, threading.Thread]:
    """Serve ``registry`` on http://host:port/metrics from a daemon thread (port 0: a
    free one, in ``server.server_port``).

    A thread rather than the event loop: scrapes keep working while the loop is busy.
    """

    class Server(_Bounded):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    Server.slots = threading.BoundedSemaphore(max_connections)
    Server.conn_timeout = timeout
    httpd = make_server(host, port, make_wsgi_app(registry), Server, handler_class=_Quiet)
    thread = threading.Thread(target=httpd.serve_forever, name="metrics", daemon=True)
    thread.start()
    return httpd, thread
