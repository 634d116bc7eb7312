"""H-5 against real processes: the HTTP edge cannot be exhausted without a key.

Raw sockets against a real orchestrator (short timeouts so the test is quick): a
flood of headers is refused with 431 and closed without the process growing by
what was sent; a head never finished (slowloris) and a connection that sends
nothing are closed after the header timeout; a half-sent body after the body
timeout; an oversized body gets its 413 even while the client is still sending.
Each refusal is counted in ``tollgate_http_rejections_total``.
"""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tools.stack import DEV_KEY, Stack

pytestmark = pytest.mark.integration

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.5
KEEP_ALIVE = 1.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(
        log_dir=tmp_path_factory.mktemp("edge-stack"),
        orch_env={
            "TOLLGATE_ORCHESTRATOR_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
            "TOLLGATE_ORCHESTRATOR_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
            "TOLLGATE_ORCHESTRATOR_KEEP_ALIVE_TIMEOUT_SECONDS": str(KEEP_ALIVE),
        },
    )
    s.start()
    try:
        yield s
    finally:
        s.stop()


def rejections(stack: Stack) -> dict[str, float]:
    with urllib.request.urlopen(stack.orchestrator_metrics_url, timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        if fam.name == "tollgate_http_rejections":
            for sample in fam.samples:
                if sample.name.endswith("_total"):
                    out[sample.labels["reason"]] = sample.value
    return out


def rss_kb(stack: Stack) -> int:
    pid = stack.procs["orchestrator"].popen.pid
    for line in open(f"/proc/{pid}/status"):  # noqa: SIM115 - read once
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def connect(stack: Stack) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", stack.ports.http), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_all(sock: socket.socket, timeout: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and how long that took."""
    sock.settimeout(timeout)
    start = time.monotonic()
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except TimeoutError:
        raise AssertionError(f"still open after {timeout}s; got {data[:80]!r}") from None
    except ConnectionResetError:
        raise AssertionError(f"reset instead of an answer; got {data[:80]!r}") from None
    return data, time.monotonic() - start


def send_quietly(sock: socket.socket, data: bytes) -> bool:
    """Send ``data``; False once the server stopped taking it."""
    try:
        sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        return False
    return True


def test_a_flood_of_headers_is_refused_with_431_and_costs_no_memory(stack: Stack) -> None:
    before_count = rejections(stack).get("headers_too_large", 0)
    before = rss_kb(stack)
    sock = connect(stack)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
    line = b"x-pad: " + b"a" * 8000 + b"\r\n"
    sent = 0
    started = time.monotonic()
    while sent < 8 * 1024 * 1024 and send_quietly(sock, line):  # 8 MB, never finished
        sent += len(line)
    data, _ = read_all(sock, 10)
    elapsed = time.monotonic() - started
    sock.close()
    assert data.startswith(b"HTTP/1.1 431 "), data[:80]
    assert b"connection: close" in data.lower()
    assert elapsed < 8
    grown = rss_kb(stack) - before
    assert grown < 4 * 1024, f"RSS grew {grown} KB for {sent // 1024} KB of headers"
    assert rejections(stack)["headers_too_large"] >= before_count + 1


def test_too_many_headers_and_a_long_target_are_refused(stack: Stack) -> None:
    sock = connect(stack)
    many = b"".join(b"x-h%d: v\r\n" % i for i in range(200))
    sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n" + many + b"\r\n")
    data, _ = read_all(sock, 5)
    assert data.startswith(b"HTTP/1.1 431 "), data[:80]
    sock = connect(stack)
    send_quietly(sock, b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nhost: x\r\n\r\n")
    data, _ = read_all(sock, 5)
    assert data.startswith(b"HTTP/1.1 414 "), data[:80]
    assert rejections(stack)["uri_too_long"] >= 1


def test_slowloris_is_closed_after_the_header_timeout(stack: Stack) -> None:
    before = rejections(stack).get("header_timeout", 0)
    sock = connect(stack)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
    started = time.monotonic()
    closed = False
    for i in range(40):  # a header line every 0.1 s, never the blank line
        if not send_quietly(sock, b"x-slow-%d: y\r\n" % i):
            closed = True
            break
        time.sleep(0.1)
        if time.monotonic() - started > HEADER_TIMEOUT + 0.5:
            break
    data, _ = read_all(sock, HEADER_TIMEOUT + 2)
    assert closed or data.startswith(b"HTTP/1.1 408 "), data[:80]
    assert time.monotonic() - started < HEADER_TIMEOUT + 2.5
    assert rejections(stack)["header_timeout"] >= before + 1


def test_a_connection_that_sends_nothing_is_closed(stack: Stack) -> None:
    sock = connect(stack)
    data, took = read_all(sock, HEADER_TIMEOUT + 2)
    assert data == b"" or data.startswith(b"HTTP/1.1 408 ")
    assert took < HEADER_TIMEOUT + 1.5


def test_a_half_sent_body_is_closed_after_the_body_timeout(stack: Stack) -> None:
    before = rejections(stack).get("body_timeout", 0)
    sock = connect(stack)
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
        b"authorization: Bearer " + DEV_KEY.encode() + b"\r\n"
        b"content-type: application/json\r\ncontent-length: 1000\r\n\r\n"
    )
    sock.sendall(head + b'{"model": "auto", ')
    data, took = read_all(sock, BODY_TIMEOUT + 3)
    assert data.startswith(b"HTTP/1.1 408 "), data[:80]
    assert took < BODY_TIMEOUT + 1.5
    assert rejections(stack)["body_timeout"] >= before + 1


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_413_reaches_a_client_that_is_still_sending(stack: Stack, framing: str) -> None:
    before = rejections(stack).get("size", 0)
    sock = connect(stack)
    total = 8 * 1024 * 1024
    length = (
        b"content-length: %d\r\n" % total
        if framing == "content-length"
        else b"transfer-encoding: chunked\r\n"
    )
    # connection: close: before, uvicorn closed at once with the body unread, and the
    # kernel's reset destroyed the 413 before the client read it.
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nconnection: close\r\n"
        b"authorization: Bearer " + DEV_KEY.encode() + b"\r\n"
        b"content-type: application/json\r\n" + length + b"\r\n"
    )
    piece = b"a" * 65536
    if framing == "chunked":
        piece = b"%x\r\n" % len(piece) + piece + b"\r\n"
    sent = 0
    while sent < total and send_quietly(sock, piece):  # like most clients: all, then read
        sent += 65536
    data, _ = read_all(sock, 10)
    sock.close()
    assert data.startswith(b"HTTP/1.1 413 "), data[:80]
    assert b"request_too_large" in data
    assert rejections(stack)["size"] >= before + 1


def test_an_idle_keep_alive_connection_is_closed(stack: Stack) -> None:
    sock = connect(stack)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
    data, took = read_all(sock, KEEP_ALIVE + 3)
    assert data.startswith(b"HTTP/1.1 200 ")
    assert took < KEEP_ALIVE + 2


def test_the_orchestrator_still_serves(stack: Stack) -> None:
    with urllib.request.urlopen(f"{stack.base_url}/readyz", timeout=5) as resp:
        assert resp.status == 200
    with pytest.raises(urllib.error.HTTPError) as err:  # M-4: not on the API port
        urllib.request.urlopen(f"{stack.base_url}/metrics", timeout=5)
    assert err.value.code == 404
