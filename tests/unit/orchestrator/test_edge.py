"""The HTTP edge (H-5) in process: a real uvicorn with ``EdgeProtocol``, raw sockets."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn

from tollgate_orchestrator.edge import EdgeLimits, edge_protocol, refusal

LIMITS = EdgeLimits(
    max_url_bytes=256,
    max_header_bytes=2048,
    max_header_count=10,
    header_timeout=0.3,
    body_timeout=0.3,
    linger_seconds=1.0,
)


class Rig:
    def __init__(self) -> None:
        self.rejected: list[str] = []
        self.seen: list[dict[str, Any]] = []
        self.port = 0


async def app(scope: Any, receive: Any, send: Any) -> None:
    """Reads at most 1 KiB of body: 413 past it, 200 with the body size otherwise."""
    size, last = 0, {}
    while True:
        last = await receive()
        if last["type"] == "http.disconnect":
            scope["state"]["rig"].seen.append(last)
            return
        size += len(last.get("body", b""))
        if size > 1024 or not last.get("more_body"):
            break
    status = 413 if size > 1024 else 200
    body = str(size).encode()
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    r = Rig()

    async def with_rig(scope: Any, receive: Any, send: Any) -> None:
        scope.setdefault("state", {})["rig"] = r
        await app(scope, receive, send)

    sock = socket.create_server(("127.0.0.1", 0))
    r.port = sock.getsockname()[1]
    config = uvicorn.Config(
        with_rig,
        http=edge_protocol(LIMITS, r.rejected.append),
        lifespan="off",
        log_config=None,
        timeout_keep_alive=1,
    )
    server = uvicorn.Server(config)
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    while not server.started:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    yield r
    server.should_exit = True
    await task


async def exchange(rig: Rig, data: bytes, *, wait: float = 2.0) -> tuple[bytes, float]:
    """Send ``data``, then read until the server closes: (what came, seconds it took)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", rig.port)
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        writer.write(data)
        await writer.drain()
    except ConnectionError:
        pass
    out = b""
    async with asyncio.timeout(wait):
        while chunk := await reader.read(65536):
            out += chunk
    writer.close()
    return out, loop.time() - start


async def test_a_plain_request_and_keep_alive_still_work(rig: Rig) -> None:
    req = b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabc"
    out, took = await exchange(rig, req + req)
    assert out.count(b"HTTP/1.1 200 OK") == 2 and out.endswith(b"3")
    assert b"connection: close" not in out
    assert 0.9 < took < 1.8  # closed by the keep-alive timeout, not before
    assert rig.rejected == []


async def test_a_long_header_section_is_431_before_it_is_kept(rig: Rig) -> None:
    # One header value that never ends: httptools would keep it all; the edge counts raw bytes.
    out, _ = await exchange(rig, b"GET / HTTP/1.1\r\nhost: x\r\nx-pad: " + b"a" * 100_000)
    assert out.startswith(b"HTTP/1.1 431 ")
    assert b'"code":"request_header_fields_too_large"' in out
    assert rig.rejected == ["headers_too_large"]


async def test_header_bytes_and_count_are_capped(rig: Rig) -> None:
    big = b"x-a: " + b"a" * 1500 + b"\r\nx-b: " + b"b" * 1500 + b"\r\n\r\n"
    out, _ = await exchange(rig, b"GET / HTTP/1.1\r\nhost: x\r\n" + big)
    assert out.startswith(b"HTTP/1.1 431 ")
    many = b"".join(b"x-%d: v\r\n" % i for i in range(11))
    out, _ = await exchange(rig, b"GET / HTTP/1.1\r\nhost: x\r\n" + many + b"\r\n")
    assert out.startswith(b"HTTP/1.1 431 ")
    assert rig.rejected == ["headers_too_large", "headers_too_large"]


async def test_a_long_target_is_414(rig: Rig) -> None:
    out, _ = await exchange(rig, b"GET /" + b"a" * 300 + b" HTTP/1.1\r\nhost: x\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 414 ")
    assert rig.rejected == ["uri_too_long"]


@pytest.mark.parametrize("sent", [b"", b"\r\n", b"GET / HTTP/1.1\r\nhost: x\r\n"])
async def test_a_head_that_never_ends_is_closed_after_the_header_timeout(
    rig: Rig, sent: bytes
) -> None:
    out, took = await exchange(rig, sent)
    assert out.startswith(b"HTTP/1.1 408 ")
    assert took < 0.8
    assert rig.rejected == ["header_timeout"]


async def test_a_half_sent_body_is_closed_and_the_app_sees_a_disconnect(rig: Rig) -> None:
    out, took = await exchange(rig, b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nab")
    assert out.startswith(b"HTTP/1.1 408 ")
    assert b'"code":"request_timeout"' in out
    assert took < 0.8
    assert rig.rejected == ["body_timeout"]
    await asyncio.sleep(0.05)
    assert rig.seen == [{"type": "http.disconnect"}]


async def test_an_early_answer_closes_after_it_and_drains_the_rest(rig: Rig) -> None:
    body = b"a" * 200_000
    head = b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % len(body)
    out, took = await exchange(rig, head + body + head + body)
    assert out.startswith(b"HTTP/1.1 413 ")
    assert b"connection: close" in out
    assert out.count(b"HTTP/1.1") == 1  # what followed was read and dropped, not served
    assert took < 0.8  # closed once the client is done (EOF), or by the linger bound


def test_refusal_is_a_whole_response() -> None:
    r = refusal(431, "headers_too_large")
    head, _, body = r.partition(b"\r\n\r\n")
    assert b"content-length: %d" % len(body) in head
    assert body.startswith(b'{"error":')
