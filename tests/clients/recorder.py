"""Loopback helpers for client tests that must see the wire: a recording reverse proxy
and a trap for anything that tries to leave the machine.

- ``Recorder`` forwards every request to one origin and keeps what it saw (method, path,
  headers, body, status, and the answer's bytes). The answer streams through chunk by
  chunk, so an SSE stream stays a stream. Put one in front of the gateway to see what a
  client sends, and one between the gateway and its upstream to see what reaches the
  provider.
- ``Trap`` is what ``HTTPS_PROXY``/``HTTP_PROXY`` point at: it records the first line of
  every request (``CONNECT github.com:443 HTTP/1.1``) and refuses it (403). A client that
  honours the proxy variables can reach nothing but ``NO_PROXY`` (loopback) unseen.
"""

from __future__ import annotations

import http.client
import json
import socketserver
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tools.stack import free_port

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "host",
        "content-length",
    }
)


@dataclass
class Exchange:
    """One request the recorder forwarded, and what the origin answered."""

    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    status: int = 0
    answer: bytearray = field(default_factory=bytearray)  # as it streamed through
    cut: bool = False  # the origin broke the answer off; so did the recorder
    finished: threading.Event = field(default_factory=threading.Event)

    def json(self) -> Any:
        return json.loads(self.body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class Recorder:
    """A reverse proxy on ``127.0.0.1:<free port>`` to ``origin`` (``http://host:port``)."""

    def __init__(self, origin: str) -> None:
        parsed = urllib.parse.urlsplit(origin)
        assert parsed.scheme == "http" and parsed.hostname, origin
        self._origin = (parsed.hostname, parsed.port or 80)
        self._lock = threading.Lock()
        self._seen: list[Exchange] = []
        self._server = _Server(("127.0.0.1", free_port()), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> Recorder:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def exchanges(self, timeout: float = 10.0) -> list[Exchange]:
        """Every exchange so far, once each answer has been relayed to its end."""
        with self._lock:
            seen = list(self._seen)
        for ex in seen:
            assert ex.finished.wait(timeout), f"{ex.method} {ex.path}: answer still streaming"
        return seen

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()

    def _record(self, ex: Exchange) -> None:
        with self._lock:
            self._seen.append(ex)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the test reads exchanges(), not stderr

            def _forward(self) -> None:
                size = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(size) if size else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                out = {k: v for k, v in headers.items() if k not in HOP_BY_HOP}
                ex = Exchange(self.command, self.path, headers, body)
                recorder._record(ex)
                conn = http.client.HTTPConnection(*recorder._origin, timeout=120)
                try:
                    conn.request(self.command, self.path, body=body or None, headers=out)
                    resp = conn.getresponse()
                    ex.status = resp.status
                    self.send_response(resp.status)
                    for k, v in resp.getheaders():
                        if k.lower() not in HOP_BY_HOP:
                            self.send_header(k, v)
                    self.send_header("transfer-encoding", "chunked")
                    self.send_header("connection", "close")
                    self.end_headers()
                    try:
                        while chunk := resp.read1(65536):
                            ex.answer += chunk
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                            self.wfile.flush()
                    except (http.client.HTTPException, OSError, ValueError):
                        ex.cut = True  # pass the cut on: no last chunk, the socket closes
                        return
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                finally:
                    conn.close()
                    ex.finished.set()
                    self.close_connection = True

            do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _forward

        return Handler


class Trap:
    """A proxy that lets nothing through and remembers every attempt."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._attempts: list[str] = []
        trap = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                line = self.rfile.readline(4096).decode(errors="replace").strip()
                with trap._lock:
                    trap._attempts.append(line)
                self.wfile.write(
                    b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                )

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server(("127.0.0.1", free_port()), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def env(self) -> dict[str, str]:
        """Proxy variables (both spellings) that send everything but loopback here."""
        out = {}
        for name in ("https_proxy", "http_proxy", "all_proxy"):
            out[name] = out[name.upper()] = self.url
        out["no_proxy"] = out["NO_PROXY"] = "127.0.0.1,localhost,::1"
        return out

    def start(self) -> Trap:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def attempts(self) -> list[str]:
        with self._lock:
            return list(self._attempts)


def sse_events(raw: bytes) -> list[tuple[str | None, Any]]:
    """(event name, decoded data) of each SSE event in ``raw``; ``[DONE]`` stays a string."""
    out: list[tuple[str | None, Any]] = []
    for block in raw.replace(b"\r\n", b"\n").split(b"\n\n"):
        name, data = None, []
        for line in block.decode().split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())
        if data:
            text = "\n".join(data)
            out.append((name, text if text == "[DONE]" else json.loads(text)))
    return out
