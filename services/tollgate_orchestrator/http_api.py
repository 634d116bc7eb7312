"""The HTTP face (FastAPI): one route per registered dialect, over the pipeline.

Statuses and ``x-tollgate-*`` headers are decided here, from the pipeline's ``Meta``
and the error it raised; bodies are the dialect's.

A pure-ASGI middleware (not BaseHTTPMiddleware, which buffers and slows streams)
sets ``x-request-id``, records the HTTP metrics by route template, opens the
request's span (tracing on) and returns its id in ``x-tollgate-trace-id``, and turns
any unexpected exception into an OpenAI-shaped 500 without a traceback. FastAPI's own
telemetry stays off: it would trace only what its router sees, at a higher cost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response, StreamingResponse
from uvicorn.protocols.http.httptools_impl import HEADER_RE, HEADER_VALUE_RE

from tollgate_common import tracing
from tollgate_common.asgi import ASGIApp, Message, Receive, Scope, Send
from tollgate_common.logging import request_id_var
from tollgate_orchestrator import openapi, spans
from tollgate_orchestrator.accounting import format_cost
from tollgate_orchestrator.admission import Admission, request_id
from tollgate_orchestrator.dialects import DIALECTS, Dialect
from tollgate_orchestrator.dialects import messages as messages_dialect
from tollgate_orchestrator.errors import ERROR_TYPE_SERVER, ApiError, error_body, model_not_found
from tollgate_orchestrator.types import STATE_MODEL, Meta, Outcome, Streamed

if TYPE_CHECKING:  # the composition root imports the faces, not the reverse
    from tollgate_orchestrator.wiring import Gateway

log = logging.getLogger(__name__)


MODELS_PATH = "/v1/models"
MODEL_PATH = "/v1/models/{model_id}"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"
# Routes of the sessions (responses_session.mount), named here for the metrics' templates.
RESPONSE_PATHS = ("/v1/responses/{response_id}", "/v1/responses/{response_id}/input_items")
PROBES = (
    MODELS_PATH,
    MODEL_PATH,
    COUNT_TOKENS_PATH,
    *RESPONSE_PATHS,
    "/healthz",
    "/readyz",
    "/metrics",
)
_JSON = "application/json"
_YES = ("1", "true", "yes")
_SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
MESSAGES_PATH = "/v1/messages"
_EPOCH = "1970-01-01T00:00:00Z"
CLIENT_CLOSED = 499  # nginx's status for a client that left before the answer
TRACE_ID_HEADER = b"x-tollgate-trace-id"
_UNTRACED = frozenset({"/healthz", "/readyz", "/metrics"})  # probes and scrapes
# FastAPI turns its own spans and metrics on as soon as an SDK is installed: not here.
_NO_FASTAPI_TELEMETRY: Any = {"tracing": False, "metrics": False, "logs": False}


def _check_headers(headers: list[tuple[bytes, bytes]]) -> None:
    """What uvicorn refuses in a response header, refused before it takes the response
    as started (after that it can only close the connection, without a status)."""
    for name, value in headers:
        if HEADER_RE.search(name) or HEADER_VALUE_RE.search(value):
            raise RuntimeError("invalid response header")


def routes() -> tuple[str, ...]:
    """The route templates of the metrics: every dialect's, then the others."""
    return (*DIALECTS, *PROBES)


def error_response(err: ApiError, dialect: Dialect | None = None) -> Response:
    body = dialect.error_body(err) if dialect is not None else err.body()
    return Response(body, err.status, headers=err.headers, media_type=_JSON)


def _openai_model(name: str, owner: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": owner}


def _anthropic_model(name: str) -> dict[str, Any]:
    return {"type": "model", "id": name, "display_name": name, "created_at": _EPOCH}


def response_headers(meta: Meta) -> dict[str, str]:
    h = {
        "x-tollgate-model": meta.model,
        "x-tollgate-intent": meta.intent,
        "x-tollgate-cache": meta.cache,
    }
    if meta.tier:
        h["x-tollgate-tier"] = meta.tier
    if meta.cost is not None:
        h["x-tollgate-cost-usd"] = format_cost(meta.cost)
    if meta.degraded:
        h["x-tollgate-route"] = "degraded"
    return h


Endpoint = Callable[[Request], Awaitable[Response]]


class Observe:
    """x-request-id, HTTP metrics and a last-resort error body, for every request.

    ``fast`` maps (method, path) to a route and its endpoint, called straight from
    here: the dialect endpoints take only the ``Request``, so FastAPI's routing, request
    wrapping and dependency solving add nothing for them but CPU. Other requests, and
    other methods on the same path (a 405), take the whole FastAPI stack.
    """

    def __init__(
        self,
        app: ASGIApp,
        gateway: Gateway,
        fast: dict[tuple[str, str], tuple[Any, Endpoint]] | None = None,
    ) -> None:
        self.app = app
        self.gw = gateway
        self.fast = fast or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        m = self.gw.metrics
        start = time.perf_counter()
        incoming = None
        for k, v in scope["headers"]:
            if k == b"x-request-id":
                incoming = v.decode("latin-1")
                break
        rid = request_id(incoming)
        scope.setdefault("state", {})["request_id"] = rid
        token = request_id_var.set(rid)
        ours = [(b"x-request-id", rid.encode())]
        sizes = [0, 0]
        status = [0]
        span = None
        if tracing.on and scope["path"] not in _UNTRACED:
            span = spans.start_server(scope["method"], scope["path"], scope["headers"])
            span_token = tracing.attach(span)
            ours.append(
                (TRACE_ID_HEADER, format(span.get_span_context().trace_id, "032x").encode())
            )

        async def counting_receive() -> Message:
            msg = await receive()
            if msg["type"] == "http.request":
                sizes[0] += len(msg.get("body", b""))
            return msg

        async def tagging_send(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                headers = [*msg.get("headers", ()), *ours]
                _check_headers(headers)  # before the server takes the response as started
                msg["headers"] = headers
                if span is not None and span.is_recording():
                    spans.response_started(span, headers)
                await send(msg)
                status[0] = msg["status"]  # sent, not attempted: else the 500 below goes
                return
            if msg["type"] == "http.response.body":
                sizes[1] += len(msg.get("body", b""))
            await send(msg)

        m.http_in_flight.inc()
        try:
            fast = self.fast.get((scope["method"], scope["path"]))
            if fast is None:
                await self.app(scope, counting_receive, tagging_send)
            else:
                scope["route"] = fast[0]  # the route template of the metrics
                response = await fast[1](Request(scope, counting_receive))
                await response(scope, counting_receive, tagging_send)
        except Exception:
            log.exception("unhandled error")
            if status[0] == 0:
                msg = "The server had an error processing your request."
                body = error_body(msg, ERROR_TYPE_SERVER)
                try:
                    await tagging_send(
                        {
                            "type": "http.response.start",
                            "status": 500,
                            "headers": [(b"content-type", b"application/json")],
                        }
                    )
                    await tagging_send({"type": "http.response.body", "body": body})
                except Exception:  # the server cannot answer any more: it closes
                    log.debug("cannot send the 500", exc_info=True)
        finally:
            m.http_in_flight.dec()
            route = scope.get("route")
            template = getattr(route, "path", "other") if route is not None else "other"
            elapsed = time.perf_counter() - start
            m.http(scope["method"], template, status[0] or 500, elapsed, sizes[0], sizes[1])
            request_id_var.reset(token)
            if span is not None:
                spans.end_server(span, scope["method"], template, status[0] or 500)
                tracing.detach(span_token)


class SSEResponse(StreamingResponse):
    """Streams a ``Streamed`` answer, then closes its admission, whether the stream
    completed, failed, or the client went away."""

    def __init__(
        self,
        events: AsyncIterator[bytes],
        meta: Meta,
        adm: Admission,
        source: AsyncIterator[bytes] | None = None,
    ) -> None:
        super().__init__(
            events,
            media_type="text/event-stream",
            headers={**response_headers(meta), **_SSE_HEADERS},
        )
        # ``events`` may wrap the pipeline's ``source``: closing a wrapper does not close
        # what it iterates, so both are closed.
        self._closing = (events,) if source is None or source is events else (events, source)
        self._adm = adm

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                for events in self._closing:
                    aclose = getattr(events, "aclose", None)
                    if aclose is not None:
                        await aclose()
                await self._adm.close()


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it passes ``limit`` bytes."""
    too_large = ApiError(
        413,
        f"The request body is larger than {limit} bytes.",
        code="request_too_large",
        reason="size",
    )
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise too_large
    parts: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            parts.append(chunk)
    except ClientDisconnect:  # gone, or cut by the edge's body timeout
        raise _Disconnected from None
    return b"".join(parts)


class _Disconnected(Exception):
    pass


async def _watch_disconnect(receive: Receive, task: asyncio.Task[Any], flag: list[bool]) -> None:
    """Cancel ``task`` when the client goes away (the body is read by then)."""
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            flag[0] = True
            task.cancel()
            return


async def _run_watched(request: Request, work: Awaitable[Outcome]) -> Outcome:
    task = asyncio.current_task()
    assert task is not None
    flag = [False]
    watcher = asyncio.get_running_loop().create_task(_watch_disconnect(request.receive, task, flag))
    try:
        return await work
    except asyncio.CancelledError:
        if flag[0]:
            task.uncancel()
            raise _Disconnected from None
        raise
    finally:
        watcher.cancel()


def build_app(gw: Gateway) -> FastAPI:
    s = gw.settings
    app = FastAPI(
        title="tollgate",
        version="1.0.0",
        description="An OpenAI-compatible LLM gateway: cheapest-model routing, a prompt cache "
        "and cost accounting.",
        docs_url=None,
        redoc_url=None,
        telemetry=_NO_FASTAPI_TELEMETRY,
    )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        err = ApiError(exc.status_code, str(exc.detail), code=code, headers=exc.headers)
        if exc.status_code == 404:
            gw.metrics.rejected("not_found")
        return error_response(err)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        loc = errors[0].get("loc", ()) if errors else ()
        param = ".".join(str(p) for p in loc[1:]) or None
        gw.metrics.rejected("invalid")
        return error_response(ApiError(400, "Invalid request.", param=param))

    def endpoint(dialect: Dialect) -> Endpoint:
        session = gw.sessions.get(dialect.path)

        async def llm(request: Request) -> Response:
            try:
                adm = gw.admissions.open(request.scope["state"]["request_id"])
            except ApiError as err:
                return error_response(err, dialect)
            try:
                adm.assign(gw.keys.tenant_for(dialect.authorization(request.headers)))
                req = dialect.parse(await read_body(request, s.max_body_bytes), gw.limits)
                if session is not None:
                    req = await session.before(req, adm.tenant)
                opt_in = request.headers.get(s.cache_opt_in_header, "").lower() in _YES
                work = gw.pipeline.handle(adm, req, request.headers.get("cache-control"), opt_in)
                outcome = await _run_watched(request, work)
            except BaseException as exc:
                await adm.close()
                if isinstance(exc, ApiError):
                    gw.admissions.rejected(exc)
                    return error_response(exc, dialect)
                if isinstance(exc, _Disconnected):
                    return Response(b"", CLIENT_CLOSED)
                raise
            req.state[STATE_MODEL] = outcome.meta.model
            if isinstance(outcome, Streamed):
                events = dialect.render_stream(outcome.events)
                if session is not None:
                    events = session.watch(req, adm.tenant, events)
                return SSEResponse(events, outcome.meta, adm, source=outcome.events)
            await adm.close()
            headers = response_headers(outcome.meta)
            body = dialect.render(outcome.body)
            if session is not None:
                body = session.after(req, adm.tenant, body)
            return Response(body, 200, headers=headers, media_type=_JSON)

        return llm

    fast: dict[tuple[str, str], tuple[Any, Endpoint]] = {}
    for path, dialect in DIALECTS.items():
        handler = endpoint(dialect)
        app.post(
            path,
            openapi_extra=dialect.openapi(gw.limits),
            response_class=Response,
            summary=dialect.summary,
        )(handler)
        route = next(r for r in app.routes if getattr(r, "path", None) == path)
        fast[("POST", path)] = (route, handler)
    # sessions mount their own routes here
    gw.responses.mount(app, gw)

    messages = DIALECTS.get(MESSAGES_PATH)

    def models_dialect(request: Request) -> Dialect | None:
        """Anthropic's SDKs list models at the same path: they send ``anthropic-version``."""
        return messages if "anthropic-version" in request.headers else None

    def usable(request: Request, dialect: Dialect | None) -> list[tuple[str, str]]:
        """(model, owner) this tenant may use (L-9); raises 401."""
        auth = dialect.authorization(request.headers) if dialect else None
        tenant = gw.keys.tenant_for(auth or request.headers.get("authorization"))
        policy = gw.catalog.policy
        rules = policy.tenants.get(tenant)
        allowed = rules.allowed_models if rules is not None else None
        keyless = gw.upstreams.unavailable()  # a model nobody can reach here is not listed
        return [("auto", "tollgate")] + [
            (name, entry.provider)
            for name, entry in policy.models.items()
            if (allowed is None or name in allowed) and entry.provider not in keyless
        ]

    @app.get(MODELS_PATH, openapi_extra=openapi.models_operation(), response_class=Response)
    async def models(request: Request) -> Response:
        dialect = models_dialect(request)
        try:
            names = usable(request, dialect)
        except ApiError as err:
            gw.metrics.rejected(err.reason)
            return error_response(err, dialect)
        if dialect is not None:
            data = [_anthropic_model(name) for name, _ in names]
            page = {
                "data": data,
                "has_more": False,
                "first_id": names[0][0],
                "last_id": names[-1][0],
            }
            return Response(orjson.dumps(page), media_type=_JSON)
        listed = [_openai_model(name, owner) for name, owner in names]
        return Response(orjson.dumps({"object": "list", "data": listed}), media_type=_JSON)

    @app.get(MODEL_PATH, openapi_extra=openapi.model_operation(), response_class=Response)
    async def model(request: Request, model_id: str) -> Response:
        dialect = models_dialect(request)
        try:
            owner = dict(usable(request, dialect)).get(model_id)
            if owner is None:  # unknown and not allowed look the same (L-9)
                raise model_not_found(model_id)
        except ApiError as err:
            gw.metrics.rejected(err.reason)
            return error_response(err, dialect)
        found = _anthropic_model(model_id) if dialect else _openai_model(model_id, owner)
        return Response(orjson.dumps(found), media_type=_JSON)

    if messages is not None:

        @app.post(
            COUNT_TOKENS_PATH,
            openapi_extra=messages_dialect.count_tokens_openapi(),
            response_class=Response,
            summary="Count the input tokens of a message (Anthropic-compatible)",
        )
        async def count_tokens(request: Request) -> Response:
            try:
                gw.keys.tenant_for(messages.authorization(request.headers))
                raw = await read_body(request, s.max_body_bytes)
                return Response(messages_dialect.count_tokens(raw, gw.limits), media_type=_JSON)
            except ApiError as err:
                gw.metrics.rejected(err.reason)
                return error_response(err, messages)
            except _Disconnected:
                return Response(b"", CLIENT_CLOSED)

    @app.get(
        "/healthz",
        response_class=Response,
        openapi_extra=openapi.probe_operation("The process is alive."),
    )
    async def healthz() -> Response:
        """The process is alive; dependencies do not matter here."""
        return Response(b'{"status":"ok"}', media_type=_JSON)

    @app.get(
        "/readyz",
        response_class=Response,
        openapi_extra=openapi.probe_operation("Readiness and dependency state.", ("200", "503")),
    )
    async def readyz() -> Response:
        """Ready unless starting or draining; the body lists dependency state."""
        ok, body = gw.readiness()
        return Response(orjson.dumps(body), 200 if ok else 503, media_type=_JSON)

    if s.metrics_on_api_port:  # off by default (M-4): metrics_port serves them

        @app.get(
            "/metrics",
            response_class=Response,
            openapi_extra={
                "responses": {
                    "200": {
                        "description": "Prometheus exposition.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                }
            },
        )
        async def metrics() -> Response:
            registry = gw.metrics.fam.registry
            return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    base_openapi = app.openapi

    def custom_openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            secured = [*DIALECTS, MODELS_PATH, MODEL_PATH, COUNT_TOKENS_PATH, *RESPONSE_PATHS]
            app.openapi_schema = openapi.bearer_security(base_openapi(), secured)
        return app.openapi_schema

    app.openapi = custom_openapi  # type: ignore[method-assign]
    app.add_middleware(Observe, gateway=gw, fast=fast)
    return app
