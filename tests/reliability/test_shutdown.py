"""Graceful shutdown under load (issue 4 §6): SIGTERM while 16 clients keep sending
plain and streamed requests to an orchestrator whose upstream takes ~0.7 s per answer.

Every request must end in one of three ways: a complete answer, a well-formed error,
or a connection the server never accepted (refused once the listener closed, or dropped
unread from the listen backlog after the SIGTERM). A request sent before the SIGTERM
must be answered in full, streams included: those were in flight. Nothing may vanish.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import httpx2
import orjson
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.reliability.common import AUTH, CHAT, error_problems
from tools.stack import Stack, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLIENTS = 16
LOAD_BEFORE_TERM = 1.5  # seconds of load before the SIGTERM: every client has work in flight
DRAIN = 1.0
GRACE = 10.0
BOUND = 30.0  # generous "does not hang"


@dataclass
class Result:
    sent: float
    stream: bool
    outcome: str  # completed | error | refused | unaccepted | vanished
    detail: str = ""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("shutdown")
    latency = logs / "latency.yaml"
    latency.write_text('"*": {fixed_ms: 200, per_token_ms: 4}\n')  # ~0.7 s per answer
    s = Stack(log_dir=logs, sim_env={"TOLLGATE_SIM_LATENCY_FILE": str(latency)})
    try:
        s.start_sim()
        s.start_router()
        s.start_cache()
        yield s
    finally:
        s.stop()


def classify(stream: bool, status: int, raw: bytes) -> tuple[str, str]:
    if status == 200 and not stream:
        body = orjson.loads(raw)
        return ("completed", "") if body.get("choices") else ("vanished", "200 without choices")
    if status == 200:
        events = [e[6:] for e in raw.decode().split("\n\n") if e.startswith("data: ")]
        if events and events[-1] == "[DONE]":
            return "completed", ""
        if events and not error_problems(orjson.loads(events[-1])):
            return "error", "stream error event"
        return "vanished", f"stream cut after {len(events)} events"
    try:
        problems = error_problems(orjson.loads(raw))
    except orjson.JSONDecodeError:
        problems = ["not JSON"]
    return ("error", str(status)) if not problems else ("vanished", f"{status} {problems}")


async def one(
    client: httpx2.AsyncClient, url: str, i: int, stream: bool, term: list[float]
) -> Result:
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": f"Tell me about shutdown number {i}."}],
        "stream": stream,
    }
    sent = time.monotonic()
    try:
        resp = await client.post(url + CHAT, json=body, headers=AUTH)
    except httpx2.ConnectError as exc:
        return Result(sent, stream, "refused", str(exc))
    except (httpx2.RemoteProtocolError, httpx2.ReadError) as exc:
        # Closed with no response byte. After the SIGTERM this is a connection that sat
        # in the listen backlog when the listener closed: never accepted, never read.
        after_term = bool(term) and sent >= term[0]
        return Result(sent, stream, "unaccepted" if after_term else "vanished", repr(exc))
    except httpx2.HTTPError as exc:
        return Result(sent, stream, "vanished", repr(exc))
    outcome, detail = classify(stream, resp.status_code, resp.content)
    return Result(sent, stream, outcome, detail)


async def worker(
    n: int, url: str, term: list[float], stopped: asyncio.Event, out: list[Result]
) -> None:
    # No keep-alive: each request opens its own connection, so "accepted" is unambiguous.
    limits = httpx2.Limits(max_keepalive_connections=0)
    async with httpx2.AsyncClient(timeout=BOUND, limits=limits) as client:
        i = 0
        while not stopped.is_set():
            r = await one(client, url, n * 1000 + i, stream=(n % 2 == 1), term=term)
            out.append(r)
            i += 1
            if r.outcome in ("refused", "unaccepted"):
                return  # the listener is gone; a real client would go elsewhere


async def probe_during_drain(url: str, grpc_port: int) -> tuple[int, int, int]:
    """(readyz, healthz, gRPC health) right after the SIGTERM, inside the drain window."""
    async with httpx2.AsyncClient(timeout=5) as c:
        ready = (await c.get(url + "/readyz")).status_code
        live = (await c.get(url + "/healthz")).status_code
    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as ch:
        resp = await health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(), timeout=2
        )
    return ready, live, int(resp.status)


async def run_load(
    stack: Stack, url: str, grpc_port: int
) -> tuple[list[Result], float, tuple[int, int, int]]:
    proc = stack.procs["orchestrator"]
    out: list[Result] = []
    term: list[float] = []
    stopped = asyncio.Event()
    workers = [asyncio.create_task(worker(n, url, term, stopped, out)) for n in range(CLIENTS)]
    await asyncio.sleep(LOAD_BEFORE_TERM)
    term.append(time.monotonic())
    proc.signal(signal.SIGTERM)
    await asyncio.sleep(0.2)
    probes = await probe_during_drain(url, grpc_port)
    with contextlib.suppress(subprocess.TimeoutExpired):  # asserted by the caller
        await asyncio.to_thread(proc.popen.wait, BOUND)
    stopped.set()
    await asyncio.wait_for(asyncio.gather(*workers), BOUND)
    return out, term[0], probes


def test_sigterm_under_load_loses_no_accepted_request(stack: Stack) -> None:
    http, grpc_port = free_port(), free_port()
    proc = stack.start_orchestrator(
        "orchestrator",
        http,
        grpc_port,
        TOLLGATE_ORCHESTRATOR_DRAIN_SECONDS=str(DRAIN),
        TOLLGATE_ORCHESTRATOR_GRACE_SECONDS=str(GRACE),
    )
    url = f"http://127.0.0.1:{http}"
    results, term, (ready, live, grpc_status) = asyncio.run(run_load(stack, url, grpc_port))

    assert ready == 503  # endpoints are being removed
    assert live == 200  # the process itself is fine
    assert grpc_status == health_pb2.HealthCheckResponse.NOT_SERVING
    assert proc.popen.wait(BOUND) == 0

    counts = Counter(r.outcome for r in results)
    vanished = [r for r in results if r.outcome == "vanished"]
    assert not vanished, [(r.stream, r.detail) for r in vanished[:5]]
    before = [r for r in results if r.sent < term]
    in_flight = [r for r in before if r.outcome != "completed"]
    assert not in_flight, [(r.stream, r.outcome, r.detail) for r in in_flight[:5]]
    # The load really spanned the shutdown: streams and plain requests were in flight
    # and completed, and later clients found the listener closed.
    assert {r.stream for r in before} == {True, False}
    assert counts["completed"] >= CLIENTS
    assert counts["refused"] + counts["unaccepted"] >= 1, counts
    assert sum(counts.values()) == len(results)
