"""Process lifecycle with real processes: SIGTERM drains in-flight work; the concurrency
cap refuses at once instead of queueing."""

from __future__ import annotations

import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import grpc
import httpx2
import orjson
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tools.stack import DEV_KEY, Stack, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

AUTH = {"authorization": f"Bearer {DEV_KEY}"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(log_dir=tmp_path_factory.mktemp("orch-lifecycle"))
    try:
        s.start_sim()
        s.start_router()
        s.start_cache()
        yield s
    finally:
        s.stop()


def fault(stack: Stack, body: dict[str, Any]) -> None:
    req = urllib.request.Request(
        stack.sim_url + "/_sim/faults",
        data=orjson.dumps(body),
        method="POST",
        headers={"content-type": "application/json"},
    )
    urllib.request.urlopen(req, timeout=5).close()


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def in_thread(fn: Any) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = fn()
        except Exception as exc:  # reported by the assertions below
            out["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    return t, out


def post(base: str, body: dict[str, Any]) -> httpx2.Response:
    with httpx2.Client(timeout=30) as c:
        return c.post(base + "/v1/chat/completions", json=body, headers=AUTH)


BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}


def test_sigterm_drains_in_flight_requests_and_streams(stack: Stack) -> None:
    http, grpc_port = free_port(), free_port()
    proc = stack.start_orchestrator(
        "draining",
        http,
        grpc_port,
        TOLLGATE_ORCHESTRATOR_DRAIN_SECONDS="1",
        TOLLGATE_ORCHESTRATOR_GRACE_SECONDS="10",
    )
    base = f"http://127.0.0.1:{http}"
    fault(stack, {"model": "gpt-4o-mini", "status": 200, "delay_ms": 2500, "count": 2})
    plain, plain_out = in_thread(lambda: post(base, BODY))
    streamed, stream_out = in_thread(lambda: post(base, {**BODY, "stream": True}))
    time.sleep(0.5)  # both are waiting on the slow upstream
    proc.signal(signal.SIGTERM)
    time.sleep(0.3)
    assert status_of(base + "/readyz") == 503  # endpoints are being removed
    assert status_of(base + "/healthz") == 200
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as ch:
        resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=2)
        assert resp.status == health_pb2.HealthCheckResponse.NOT_SERVING
    plain.join(30)
    streamed.join(30)
    assert "error" not in plain_out and "error" not in stream_out
    assert plain_out["result"].status_code == 200
    assert plain_out["result"].json()["choices"]
    assert stream_out["result"].status_code == 200
    assert stream_out["result"].text.rstrip().endswith("data: [DONE]")
    assert proc.popen.wait(15) == 0


def test_concurrency_cap_refuses_at_once(stack: Stack) -> None:
    http = free_port()
    stack.start_orchestrator("capped", http, free_port(), TOLLGATE_ORCHESTRATOR_MAX_CONCURRENCY="1")
    base = f"http://127.0.0.1:{http}"
    fault(stack, {"model": "gpt-4o-mini", "status": 200, "delay_ms": 2000, "count": 1})
    slow, slow_out = in_thread(lambda: post(base, BODY))
    time.sleep(0.4)
    refused = post(base, BODY)
    assert slow.is_alive()  # refused while the slow one still holds the slot: not queued
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["code"] == "overloaded"
    slow.join(30)
    assert slow_out["result"].status_code == 200
    assert post(base, BODY).status_code == 200  # the slot came back
