"""The simulator's HTTP app: a raw ASGI callable, because it is the benchmarks'
baseline and a framework's routing and validation would be most of its cost.

Every API is one ``Endpoint`` (a parser from its module) served by ``SimulatorApp.serve``:
body limit, parse, counting, model list, faults, then the reply whole or paced as SSE.
The API only decides the shapes, so faults and latency behave the same everywhere.

Routes (each also without the ``/v1`` prefix):
  POST /v1/chat/completions      OpenAI chat completions, plain or streamed (SSE)
  POST /v1/responses             OpenAI Responses, plain or streamed (named SSE events)
  POST /v1/embeddings            OpenAI embeddings
  POST /v1/messages              Anthropic Messages, plain or streamed (named SSE events)
  POST /v1/messages/count_tokens Anthropic token count
  POST /v1beta/openai/{chat/completions,embeddings}       Gemini's flavour (vendors.py)
  POST /openai/v1/{chat/completions,responses,embeddings}  Azure's v1 API
  POST /openai/deployments/{d}/{chat/completions,embeddings}, /openai/responses
                                 Azure's classic API (``?api-version=``)
  GET  /v1/models[/{id}]         the known models
  POST|GET|DELETE /_sim/faults   queue, list, clear injected faults
  GET  /_sim/stats, GET /_sim/requests, POST /_sim/reset
  GET  /healthz
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import orjson

from tollgate_common.asgi import ASGIApp, Receive, Scope, Send
from tollgate_simulator import chat, embeddings, messages, responses, vendors
from tollgate_simulator.config import LatencyTable
from tollgate_simulator.faults import (
    Fault,
    FaultError,
    FaultQueue,
    anthropic_error_body,
    error_body,
    fault_error_body,
    parse_faults,
    retry_after_value,
)
from tollgate_simulator.generate import RequestError
from tollgate_simulator.wire import Call, Reply

log = logging.getLogger("tollgate.simulator")

_JSON = (b"content-type", b"application/json")
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
]
_MAX_SEEN = 1000  # models answered but not in the catalog; names come from clients
_JOURNAL = 64  # requests kept for /_sim/requests
_JOURNAL_BODY = 1024 * 1024  # larger bodies are journaled without their content
_SECRET_HEADERS = frozenset({b"authorization", b"x-api-key", b"api-key", b"cookie"})


@dataclass(frozen=True, slots=True)
class Endpoint:
    api: str  # the stats label: chat | responses | embeddings | messages | count_tokens
    parse: Callable[[bytes], Call]
    id_prefix: str = ""
    anthropic: bool = False  # Anthropic's auth headers, error shape and request-id header
    vendor: str = ""  # a vendor flavour of the OpenAI wire (vendors.py): auth, errors, quirks
    deployment: str = ""  # Azure classic: the model, whatever the body says


def _count_tokens(body: bytes) -> Call:
    return messages.parse_request(body, count_only=True)


ENDPOINTS: dict[str, Endpoint] = {
    "/chat/completions": Endpoint("chat", chat.parse_request, "chatcmpl-sim"),
    "/responses": Endpoint("responses", responses.parse_request, "resp_sim"),
    "/embeddings": Endpoint("embeddings", embeddings.parse_request),
    "/messages": Endpoint("messages", messages.parse_request, "msg_sim", anthropic=True),
    "/messages/count_tokens": Endpoint("count_tokens", _count_tokens, anthropic=True),
}


class InjectedDisconnect(Exception):
    """Raised to make the server drop a connection mid-response (a mid_stream_error fault).

    uvicorn closes the transport when an app raises after the response started;
    ``quiet_injected_disconnects`` keeps these expected aborts out of the error log.
    """


class _QuietInjected(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, InjectedDisconnect)


def quiet_injected_disconnects() -> None:
    logging.getLogger("uvicorn.error").addFilter(_QuietInjected())


class Stats:
    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.apis: dict[str, int] = {}
        self.total = 0
        self.faults_injected = 0
        self.stream_disconnects = 0  # clients that left before the stream ended

    def count(self, model: str, api: str) -> None:
        self.calls[model] = self.calls.get(model, 0) + 1
        self.apis[api] = self.apis.get(api, 0) + 1
        self.total += 1

    def as_dict(self, faults: FaultQueue) -> dict[str, Any]:
        return {
            "calls": dict(self.calls),
            "apis": dict(self.apis),
            "total": self.total,
            "faults_injected": self.faults_injected,
            "stream_disconnects": self.stream_disconnects,
            "pending_faults": faults.pending(),
        }


class Journal:
    """The last requests that reached an API, for tests that check what a gateway sent.

    Bodies are kept as received (decoded only when listed); credentials are not kept.
    """

    def __init__(self) -> None:
        self._entries: deque[tuple[str, str, str, Call, list[tuple[bytes, bytes]], bytes]] = deque(
            maxlen=_JOURNAL
        )

    def add(self, api: str, scope: Scope, call: Call, body: bytes) -> None:
        headers = [(k, v) for k, v in scope["headers"] if k not in _SECRET_HEADERS]
        query = bytes(scope.get("query_string", b"")).decode("latin-1")
        self._entries.append((api, scope["path"], query, call, headers, body))

    def clear(self) -> None:
        self._entries.clear()

    def as_dict(self) -> dict[str, Any]:
        out = []
        for api, path, query, call, headers, body in self._entries:
            out.append(
                {
                    "api": api,
                    "path": path,
                    "query": query,
                    "model": call.model,
                    "stream": call.stream,
                    "headers": {k.decode("latin-1"): v.decode("latin-1") for k, v in headers},
                    "body": orjson.loads(body) if len(body) <= _JOURNAL_BODY else None,
                    "bytes": len(body),
                }
            )
        return {"requests": out}


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or None when it exceeds ``limit``."""
    msg = await receive()
    body: bytes = msg.get("body", b"")
    if not msg.get("more_body"):
        return body if len(body) <= limit else None
    parts = [body]
    size = len(body)
    while msg.get("more_body"):
        msg = await receive()
        chunk = msg.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
    return b"".join(parts)


async def send_bytes(
    send: Send,
    status: int,
    body: bytes,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [_JSON, (b"content-length", str(len(body)).encode()), *(headers or ())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_error(
    send: Send,
    status: int,
    message: str,
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    anthropic: bool = False,
) -> None:
    """An error in OpenAI's shape, or Anthropic's (which has a type but no param or code)."""
    body = (
        anthropic_error_body(status, message)
        if anthropic
        else error_body(message, type_, param, code)
    )
    await send_bytes(send, status, body)


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


class SimulatorApp:
    def __init__(
        self,
        catalog: list[str],
        latency: LatencyTable | None = None,
        latency_scale: float = 1.0,
        allowed_models: list[str] | None = None,
        max_body_bytes: int = 32 * 1024 * 1024,
        api_key: str = "",
    ) -> None:
        # With a key, /v1 answers 401 without "Authorization: Bearer <key>", as a provider
        # does; Anthropic's paths also take "x-api-key: <key>", as Anthropic does.
        self._auth = f"Bearer {api_key}".encode() if api_key else None
        self._key = api_key.encode()
        self.catalog = list(dict.fromkeys(catalog))
        self.allowed = frozenset(allowed_models) if allowed_models is not None else None
        self.latency = latency or LatencyTable()
        self.scale = latency_scale
        self.max_body = max_body_bytes
        self.faults = FaultQueue()
        self.stats = Stats()
        self.journal = Journal()
        self.seen: dict[str, None] = {}
        self._models_body: bytes | None = None
        self._ids = itertools.count(1)
        self._id_prefix = os.urandom(4).hex()
        self._endpoints: dict[str, Endpoint] = {}
        for path, ep in ENDPOINTS.items():
            self._endpoints[path] = self._endpoints["/v1" + path] = ep
        for path, (base, vendor) in vendors.ROUTES.items():
            self._endpoints[path] = replace(ENDPOINTS[base], vendor=vendor)
        self._routes: dict[tuple[str, str], ASGIApp] = {
            ("GET", "/v1/models"): self.models,
            ("GET", "/models"): self.models,
            ("POST", "/_sim/faults"): self.add_faults,
            ("GET", "/_sim/faults"): self.list_faults,
            ("DELETE", "/_sim/faults"): self.clear_faults,
            ("GET", "/_sim/stats"): self.get_stats,
            ("GET", "/_sim/requests"): self.get_requests,
            ("POST", "/_sim/reset"): self.reset,
            ("GET", "/healthz"): self.healthz,
        }
        self._paths = {path for _, path in self._routes} | set(self._endpoints)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan is off; websockets are not served
            return
        path: str = scope["path"]
        ep = self._endpoints.get(path) or self._deployment(path)
        if ep is not None and ep.vendor:
            refused = vendors.refusal(ep.vendor, scope, self._key)
            if refused is not None:
                await send_bytes(send, *refused)
                return
        elif self._auth is not None and not self._authorized(scope, ep):
            if ep is not None and ep.anthropic:
                await send_error(send, 401, "invalid x-api-key", anthropic=True)
                return
            await send_error(
                send,
                401,
                "Incorrect API key provided. You can find your API key in your account settings.",
                code="invalid_api_key",
            )
            return
        if ep is not None and scope["method"] == "POST":
            await self.serve(ep, scope, receive, send)
            return
        handler = self._routes.get((scope["method"], path))
        if handler is not None:
            await handler(scope, receive, send)
            return
        if scope["method"] == "GET" and path.startswith(("/v1/models/", "/models/")):
            await self.model(path.rsplit("/", 1)[1], send)
        elif path in self._paths:
            await send_error(send, 405, f"Method {scope['method']} not allowed on {path}.")
        else:
            await send_error(send, 404, f"Unknown path {path}.", code="unknown_url")

    @staticmethod
    def _deployment(path: str) -> Endpoint | None:
        route = vendors.deployment_route(path)
        if route is None:
            return None
        base, deployment = route
        return replace(ENDPOINTS[base], vendor=vendors.AZURE_CLASSIC, deployment=deployment)

    def _authorized(self, scope: Scope, ep: Endpoint | None) -> bool:
        path: str = scope["path"]
        if path.startswith(("/_sim/", "/healthz")):  # test controls and probes are keyless
            return True
        if ep is not None and ep.anthropic:
            key = _header(scope, b"x-api-key")
            if key is not None:
                return hmac.compare_digest(key, self._key)
        value = _header(scope, b"authorization")
        return value is not None and hmac.compare_digest(value, self._auth or b"")

    # --- models ---------------------------------------------------------------------

    def known_models(self) -> list[str]:
        if self.allowed is not None:
            return sorted(self.allowed)
        return [*self.catalog, *(m for m in self.seen if m not in self.catalog)]

    @staticmethod
    def _model_object(name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": 1700000000, "owned_by": "tollgate-sim"}

    async def models(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._models_body is None:
            data = [self._model_object(m) for m in self.known_models()]
            self._models_body = orjson.dumps({"object": "list", "data": data})
        await send_bytes(send, 200, self._models_body)

    async def model(self, name: str, send: Send) -> None:
        if name in self.known_models():
            await send_bytes(send, 200, orjson.dumps(self._model_object(name)))
        else:
            await self._model_not_found(name, send, anthropic=False)

    @staticmethod
    async def _model_not_found(name: str, send: Send, anthropic: bool) -> None:
        message = f"model: {name}" if anthropic else f"The model `{name}` does not exist."
        await send_error(
            send, 404, message, param="model", code="model_not_found", anthropic=anthropic
        )

    # --- the APIs --------------------------------------------------------------------------

    async def serve(self, ep: Endpoint, scope: Scope, receive: Receive, send: Send) -> None:
        """One call of any API: the same checks, counting, faults and pacing for all."""
        body = await read_body(receive, self.max_body)
        if body is None:
            message = f"Request body larger than {self.max_body} bytes."
            await self._error(ep, send, 413, message)
            return
        if ep.anthropic and _header(scope, b"anthropic-version") is None:
            message = "anthropic-version: header is required"
            await send_error(send, 400, message, anthropic=True)
            return
        try:
            call = ep.parse(vendors.with_model(body, ep.deployment) if ep.deployment else body)
        except RequestError as exc:
            await self._error(ep, send, exc.status, exc.message, exc.type, exc.param, exc.code)
            return
        model = call.model
        self.stats.count(model, ep.api)
        self.journal.add(ep.api, scope, call, body)
        if self.allowed is not None and model not in self.allowed:
            if ep.vendor:
                await send_bytes(send, *vendors.model_not_found(ep.vendor, model))
                return
            await self._model_not_found(model, send, ep.anthropic)
            return
        fault = self.faults.take(model)
        if fault is not None:
            self.stats.faults_injected += 1
            if fault.delay_ms:
                await asyncio.sleep(fault.delay_ms / 1000)
            if fault.status != 200:
                headers = []
                if fault.retry_after is not None:
                    headers.append((b"retry-after", retry_after_value(fault.retry_after)))
                out = (
                    vendors.fault_body(ep.vendor, fault)
                    if ep.vendor
                    else fault_error_body(fault, anthropic=ep.anthropic)
                )
                await send_bytes(send, fault.status, out, headers)
                return
        if model not in self.seen and len(self.seen) < _MAX_SEEN and self.allowed is None:
            self.seen[model] = None
            self._models_body = None
        suffix = f"{self._id_prefix}{next(self._ids):012x}"
        reply = call.reply(ep.id_prefix + suffix, int(time.time()))
        if ep.vendor:
            reply = vendors.flavour(ep.vendor, reply)
        name = b"request-id" if ep.anthropic else b"x-request-id"
        headers = [(name, f"req_{suffix}".encode())]
        broken = fault if fault is not None and fault.mid_stream_error else None
        if call.stream:
            await self._stream(model, reply, headers, receive, send, broken)
            return
        delay = self._delay_s(model, reply.tokens)
        if delay:
            await asyncio.sleep(delay)
        out = reply.body()
        if broken is None:
            await send_bytes(send, 200, out, headers)
            return
        # A broken plain answer: headers promise the full length, half the body comes.
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [_JSON, (b"content-length", str(len(out)).encode()), *headers],
            }
        )
        await send({"type": "http.response.body", "body": out[: len(out) // 2], "more_body": True})
        raise InjectedDisconnect("mid_stream_error fault")

    @staticmethod
    async def _error(
        ep: Endpoint,
        send: Send,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        """An error in the shape of the endpoint's API and vendor."""
        if ep.vendor:
            await send_bytes(send, status, vendors.error_body(ep.vendor, status, message, code))
            return
        await send_error(send, status, message, type_, param, code, ep.anthropic)

    def _delay_s(self, model: str, tokens: int) -> float:
        if not self.scale:
            return 0.0
        p = self.latency.profile(model)
        return (p.fixed_ms + p.per_token_ms * tokens) * self.scale / 1000

    async def _stream(
        self,
        model: str,
        reply: Reply,
        headers: list[tuple[bytes, bytes]],
        receive: Receive,
        send: Send,
        broken: Fault | None,
    ) -> None:
        events = reply.events()
        headers = [*_SSE_HEADERS, *headers]
        if broken is not None:
            # The preamble, then after_chunks content events, and never a clean end.
            cut = min(reply.preamble + broken.after_chunks, len(events) - reply.closing)
            events = events[:cut]
        p = self.latency.profile(model)
        per_token = p.per_token_ms * self.scale / 1000
        first_wait = (p.fixed_ms * self.scale / 1000) + per_token * reply.think_tokens
        if not self.scale:
            # Instant model: one write of the whole stream.
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send(
                {
                    "type": "http.response.body",
                    "body": b"".join(e for e, _ in events),
                    "more_body": broken is not None,
                }
            )
            if broken is not None:
                raise InjectedDisconnect("mid_stream_error fault")
            return
        # Time to first token is the fixed latency plus the reasoning; headers go out
        # at once, as OpenAI's do.
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        gone = asyncio.ensure_future(receive())  # resolves on client disconnect
        try:
            loop = asyncio.get_running_loop()
            due = loop.time() + first_wait
            for event, tokens in events:
                due += per_token * tokens
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if gone.done():
                    self.stats.stream_disconnects += 1
                    return
                await send({"type": "http.response.body", "body": event, "more_body": True})
            if broken is not None:
                raise InjectedDisconnect("mid_stream_error fault")
            await send({"type": "http.response.body", "body": b""})
        finally:
            gone.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await gone

    # --- control endpoints -----------------------------------------------------------------

    async def add_faults(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await read_body(receive, 1024 * 1024)
        try:
            if body is None:
                raise FaultError("body: larger than 1 MiB")
            faults = parse_faults(body)
        except FaultError as exc:
            await send_error(send, 400, str(exc))
            return
        self.faults.add(faults)
        log.info("faults queued", extra={"faults": len(faults), "pending": len(self.faults)})
        await send_bytes(send, 200, orjson.dumps({"pending_faults": self.faults.pending()}))

    async def list_faults(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_bytes(send, 200, orjson.dumps({"pending_faults": self.faults.pending()}))

    async def clear_faults(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.faults.clear()
        await send_bytes(send, 200, b'{"pending_faults":[]}')

    async def get_stats(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_bytes(send, 200, orjson.dumps(self.stats.as_dict(self.faults)))

    async def get_requests(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_bytes(send, 200, orjson.dumps(self.journal.as_dict()))

    async def reset(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.faults.clear()
        self.stats = Stats()
        self.journal.clear()
        await send_bytes(send, 200, orjson.dumps(self.stats.as_dict(self.faults)))

    async def healthz(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_bytes(send, 200, b'{"status":"ok"}')
