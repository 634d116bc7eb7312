"""The metrics server bounds every connection's time and how many it serves (L-11)."""

from __future__ import annotations

import socket
import time
import urllib.request

from prometheus_client import CollectorRegistry, Counter

from tollgate_common.metrics.exposition import start_metrics_server


def test_scrapes_work_and_silent_or_surplus_connections_are_closed() -> None:
    registry = CollectorRegistry()
    Counter("probe", "a probe", registry=registry).inc()
    server, _ = start_metrics_server(registry, 0, "127.0.0.1", timeout=0.5, max_connections=2)
    port = server.server_port
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            assert b"probe_total 1.0" in r.read()
        silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
        time.sleep(0.1)
        surplus = socket.create_connection(("127.0.0.1", port))  # both slots are taken
        surplus.settimeout(2)
        assert surplus.recv(1) == b""  # closed at once, no thread waits on it
        for s in silent:
            s.settimeout(3)  # the server's 0.5 s timeout closes it well before this one
            assert s.recv(1) == b""
            s.close()
        surplus.close()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            assert r.status == 200  # the slots came back
    finally:
        server.shutdown()
        server.server_close()
