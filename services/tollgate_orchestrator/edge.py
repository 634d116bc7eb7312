"""The HTTP edge: uvicorn's httptools protocol with the bounds it lacks (H-5).

httptools keeps every header byte it is given until the header ends, and uvicorn
arms no timer before a response completes. ``EdgeProtocol`` adds, per connection:

- caps on the request target (414), the header section and the header count (431),
  counted on the raw bytes while the head is incomplete, so memory stays bounded;
- a header-read timeout: a head not complete in ``header_timeout`` seconds gets a
  408 and the connection closes (a connection that sends nothing, or only blank
  lines, too);
- a body-read timeout: a body not complete ``body_timeout`` seconds after its head
  gets a 408 and the connection closes; the application sees a disconnect;
- a lingering close: when a response ends before its request body was read (a 413,
  a 401), the response says ``connection: close``, the write side is shut after the
  response is flushed, and what the client still sends is read and dropped for a
  short while. The client reads the status instead of a connection reset.

Every refusal is counted with a bounded reason through ``on_reject``.
"""

from __future__ import annotations

import asyncio
import http
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from tollgate_orchestrator.errors import error_body

# How long, and how much, a lingering close reads and drops before it closes anyway.
LINGER_SECONDS = 5.0
LINGER_BYTES = 64 * 1024 * 1024
_HEAD_SLACK = 64  # method, version and line endings around the target


@dataclass(frozen=True, slots=True)
class EdgeLimits:
    max_url_bytes: int = 8192
    max_header_bytes: int = 32768
    max_header_count: int = 100
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    linger_seconds: float = LINGER_SECONDS
    linger_bytes: int = LINGER_BYTES


_CODES = {
    408: "request_timeout",
    414: "uri_too_long",
    431: "request_header_fields_too_large",
}
_MESSAGES = {
    "uri_too_long": "The request target is too long.",
    "headers_too_large": "The request headers are too large or too many.",
    "header_timeout": "The request headers did not arrive in time.",
    "body_timeout": "The request body did not arrive in time.",
}


def refusal(status: int, reason: str) -> bytes:
    """A whole HTTP/1.1 response that refuses the request and announces the close."""
    body = error_body(_MESSAGES[reason], "invalid_request_error", code=_CODES[status])
    phrase = http.HTTPStatus(status).phrase
    head = (
        f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class _Refused(Exception):
    """Raised in a parser callback to stop parsing; the reason is on the protocol."""


class _Request:
    __slots__ = ("body_done",)

    def __init__(self) -> None:
        self.body_done = False


class _LingeringTransport:
    """What one request's cycle writes to: closing it while that request's body is
    still arriving lingers instead of resetting the connection."""

    __slots__ = ("_proto", "_req")

    def __init__(self, proto: EdgeProtocol, req: _Request) -> None:
        self._proto = proto
        self._req = req

    def write(self, data: bytes) -> None:
        self._proto.transport.write(data)

    def is_closing(self) -> bool:
        return self._proto.transport.is_closing()

    def close(self) -> None:
        if self._req.body_done:
            self._proto.transport.close()
        else:
            self._proto.linger()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._proto.transport, name)


class EdgeProtocol(HttpToolsProtocol):
    """Bound to settings and a counter by a subclass: see ``edge_protocol``."""

    limits: ClassVar[EdgeLimits] = EdgeLimits()

    def on_reject(self, reason: str) -> None:
        """Count a refusal; ``edge_protocol`` binds it to the metrics."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._await_head = True  # the next bytes start (or continue) a request head
        self._head_bytes = 0
        self._header_bytes = 0
        self._header_count = 0
        self._refusal: tuple[int, str] | None = None
        self._req = _Request()
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._lingering = False
        self._drained = 0

    # --- connection ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._header_timer, self._body_timer, self._linger_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._body_timer = self._linger_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            self._drained += len(data)
            if self._drained > self.limits.linger_bytes:
                self.transport.close()
            return
        self._unset_keepalive_if_required()
        if self._await_head:
            self._arm_header_timer()
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError:
            if self._refusal is None:
                raise
            self.refuse(*self._refusal)
            return
        except httptools.HttpParserError:
            self.logger.warning("Invalid HTTP request received.")
            self.send_400_response("Invalid HTTP request received.")
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        lim = self.limits
        if self._await_head and self._head_bytes > (
            lim.max_url_bytes + lim.max_header_bytes + _HEAD_SLACK
        ):
            self.refuse(431, "headers_too_large")

    # --- parser callbacks ------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        self._header_count = 0
        self._req = _Request()
        self._await_head = True
        self._arm_header_timer()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self.limits.max_url_bytes:
            self._stop(414, "uri_too_long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        self._header_count += 1
        lim = self.limits
        if self._header_bytes > lim.max_header_bytes or self._header_count > lim.max_header_count:
            self._stop(431, "headers_too_large")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._await_head = False
        self._head_bytes = 0
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        previous = self.cycle
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is None or cycle is previous:  # an upgrade: no request cycle
            return
        req = self._req
        cycle.transport = _LingeringTransport(self, req)  # type: ignore[assignment]
        send = cycle.send

        async def edge_send(message: Any) -> None:
            if message["type"] == "http.response.start" and not req.body_done:
                cycle.keep_alive = False  # the rest of the body will not be read
            await send(message)

        cycle.send = edge_send  # type: ignore[method-assign]
        self._body_timer = self.loop.call_later(self.limits.body_timeout, self._body_timeout, req)

    def on_message_complete(self) -> None:
        self._req.body_done = True
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_message_complete()

    def on_response_complete(self) -> None:
        pipelined = bool(self.pipeline)
        super().on_response_complete()
        if self._lingering:
            self._unset_keepalive_if_required()
        elif not pipelined and not self.transport.is_closing():
            self._await_head = True  # the next request's head is timed from its first byte
            self._head_bytes = 0

    # --- refusals --------------------------------------------------------------------
    def _stop(self, status: int, reason: str) -> None:
        self._refusal = (status, reason)
        raise _Refused(reason)

    def refuse(self, status: int, reason: str) -> None:
        """Answer ``status`` (unless a response already started), count it, and close."""
        if self._lingering or self.transport.is_closing():
            return
        self.on_reject(reason)
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete and cycle.scope is self.scope:
            started = cycle.response_started
            cycle.disconnected = True  # the application's receive gets a disconnect
            cycle.message_event.set()
            if started:
                self.transport.close()
                return
        self.transport.write(refusal(status, reason))
        self.linger()

    def linger(self) -> None:
        """Shut the write side once the response is flushed; read and drop what the
        client still sends, for a bounded time and size; then close."""
        if self._lingering:
            return
        self._lingering = True
        for timer in (self._header_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._body_timer = None
        self._unset_keepalive_if_required()
        self.flow.resume_reading()
        transport = self.transport
        try:
            if transport.can_write_eof():
                transport.write_eof()
        except (OSError, RuntimeError):
            transport.close()
            return
        self._linger_timer = self.loop.call_later(self.limits.linger_seconds, transport.close)

    def _arm_header_timer(self) -> None:
        if self._header_timer is None and not self._lingering:
            self._header_timer = self.loop.call_later(
                self.limits.header_timeout, self._header_timeout
            )

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self._await_head:
            self.refuse(408, "header_timeout")

    def _body_timeout(self, req: _Request) -> None:
        self._body_timer = None
        if not req.body_done and req is self._req:
            self.refuse(408, "body_timeout")


def edge_protocol(limits: EdgeLimits, on_reject: Callable[[str], None]) -> type[EdgeProtocol]:
    """A protocol class for uvicorn's ``http=`` with these limits and this counter."""

    class BoundEdgeProtocol(EdgeProtocol):
        def on_reject(self, reason: str) -> None:
            on_reject(reason)

    BoundEdgeProtocol.limits = limits
    return BoundEdgeProtocol
