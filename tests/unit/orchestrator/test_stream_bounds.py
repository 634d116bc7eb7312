"""L-13 and the stream bounds of M-3: nothing an upstream sends is trusted for size or
time. SSE lines and whole bodies are capped; a stream ends past its total duration or
without a data payload for too long (comments are not progress), with the wire's
error event, counted, and its partial usage accounted."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import orjson
import pytest

from tollgate_orchestrator.providers.openai import (
    Bounds,
    Upstreams,
    UpstreamStream,
    _payloads,
    read_capped,
)
from tollgate_orchestrator.retry import PROTOCOL, AttemptFailed
from tollgate_orchestrator.sse import LineSplitter, LineTooLong, StreamStalled
from tollgate_orchestrator.types import Streamed
from tollgate_orchestrator.validation import Limits, parse_chat_request

from .fakes import POLICY, Rig, stream_payloads, target


def chat(**fields: Any) -> Any:
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], **fields}
    return parse_chat_request(body, Limits())


def test_a_line_that_never_ends_is_refused_at_the_cap() -> None:
    s = LineSplitter(max_line=1024)
    assert s.feed(b"data: 1\n" + b"x" * 1000) == [b"data: 1"]
    with pytest.raises(LineTooLong):
        s.feed(b"x" * 100)
    assert s.pending == b""  # what it held is dropped


def sse_response(chunks: AsyncIterator[bytes]) -> httpx2.Response:
    return httpx2.Response(200, content=chunks)


async def collect(resp: httpx2.Response, bounds: Bounds) -> list[bytes]:
    return [p async for p in _payloads(resp, bounds)]


async def test_keep_alive_comments_are_not_progress() -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"data: 1\n\n"
        while True:  # an upstream that pings forever and never answers
            await asyncio.sleep(0.02)
            yield b": ping\n\n"

    bounds = Bounds(stream_idle_seconds=0.2, stream_max_seconds=10)
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(StreamStalled) as info:
        await collect(sse_response(body()), bounds)
    assert info.value.reason == "idle"
    assert 0.15 < loop.time() - start < 1


async def test_a_stream_that_never_ends_is_cut_at_its_total_duration() -> None:
    async def body() -> AsyncIterator[bytes]:
        while True:  # progress all the time, but no end
            await asyncio.sleep(0.02)
            yield b"data: {}\n\n"

    bounds = Bounds(stream_idle_seconds=10, stream_max_seconds=0.3)
    with pytest.raises(StreamStalled) as info:
        await collect(sse_response(body()), bounds)
    assert info.value.reason == "duration"


async def test_an_endless_line_is_a_protocol_error() -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"data: "
        for _ in range(100):
            yield b"x" * 4096

    with pytest.raises(LineTooLong):
        await collect(sse_response(body()), Bounds(max_line_bytes=16384))


async def test_a_whole_body_over_the_cap_is_not_read() -> None:
    async def body() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"x" * 1000

    assert await read_capped(sse_response(body()), 5000) is None
    big = httpx2.Response(200, headers={"content-length": "999999"}, content=b"x")
    assert await read_capped(big, 5000) is None
    assert await read_capped(httpx2.Response(200, content=b"abc"), 5000) == b"abc"


async def test_an_upstream_body_over_the_cap_is_a_protocol_failure() -> None:
    size = 64 * 1024

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        writer.write(head + b"content-length: %d\r\n\r\n" % size + b" " * size)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    u = Upstreams(
        POLICY,
        base_url=f"http://127.0.0.1:{port}/v1",
        connect_timeout=1,
        read_timeout=2,
        bounds=Bounds(max_body_bytes=16 * 1024),
    )
    try:
        with pytest.raises(AttemptFailed) as info:
            await u.complete(target("gpt-4o-mini"), chat(), 5)
        assert info.value.failure.error_class == PROTOCOL
    finally:
        await u.close()
        server.close()


@pytest.mark.parametrize(
    ("error", "outcome", "code"),
    [
        (StreamStalled("idle"), "timeout", "upstream_timeout"),
        (StreamStalled("duration"), "timeout", "upstream_timeout"),
        (LineTooLong("long"), "error", "upstream_stream_error"),
    ],
)
async def test_a_bounded_stream_ends_with_an_error_event_and_is_accounted(
    error: Exception, outcome: str, code: str
) -> None:
    rig = Rig(["gpt-4o-mini"])
    payloads = stream_payloads("gpt-4o-mini")

    async def stream(t: Any, req: Any, budget: float) -> UpstreamStream:
        async def rest() -> AsyncIterator[bytes]:
            yield payloads[1]
            raise error

        return UpstreamStream(httpx2.Response(200), [payloads[0]], rest())

    rig.upstream.stream = stream  # type: ignore[method-assign, assignment]
    reply = await rig.handle(chat(stream=True), "t", "r")
    assert isinstance(reply, Streamed)
    events = await rig.collect(reply)
    last = orjson.loads(events[-1][len(b"data: ") :])
    assert last["error"]["code"] == code
    assert b"data: [DONE]\n\n" not in events
    assert rig.value("tollgate_llm_streams_total", outcome=outcome) == 1
    assert rig.total("tollgate_llm_requests_total", outcome="partial") == 1
    assert rig.total("tollgate_llm_tokens_total", type="completion") > 0  # partial usage
    assert rig.value("tollgate_llm_requests_in_flight") == 0
