"""gRPC spans without interceptors: a SERVER span around each wrapped unary handler and a
CLIENT span around each metered unary call, with the W3C context in the call's metadata.

Chosen where servers and channels are built (``tracing.on``), so with tracing off no
wrapper exists. Interceptors cost about 0.2 ms per call even with no SDK (otel.md §3);
these wrappers sit in the metrics wrappers that already exist. Span names and
attributes follow the RPC conventions: ``pkg.Service/Method``, ``rpc.system``,
``rpc.service``, ``rpc.method``, ``rpc.grpc.status_code``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import grpc
from opentelemetry import propagate
from opentelemetry.trace import SpanKind, Status, StatusCode

from tollgate_common import tracing

_CONTEXT_KEYS = ("traceparent", "tracestate")
# The codes that are the server's fault (the RPC conventions); the others are the caller's.
_SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)

Behavior = Callable[[Any, grpc.aio.ServicerContext], Coroutine[Any, Any, Any]]


# Probes and tooling, not requests: a trace per kubelet probe would be noise.
_UNTRACED = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def traced_method(full_method: str) -> bool:
    return not full_method.startswith(_UNTRACED)


def _attributes(full_method: str) -> dict[str, str]:
    service, _, method = full_method.lstrip("/").rpartition("/")
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}


def traced_server(
    full_method: str,
    behavior: Behavior,
    code_of: Callable[[grpc.aio.ServicerContext, BaseException | None], grpc.StatusCode],
) -> Behavior:
    """``behavior`` inside a SERVER span whose parent is the caller's, from the metadata."""
    name = full_method.lstrip("/")
    attributes = _attributes(full_method)

    async def traced(request: Any, context: grpc.aio.ServicerContext) -> Any:
        carrier = {k: v for k, v in (context.invocation_metadata() or ()) if k in _CONTEXT_KEYS}
        quiet = tracing.unsampled_parent(carrier.get("traceparent"))
        if quiet is not None:  # the caller's trace, not sampled: only its ids, for the logs
            token = tracing.attach(tracing.passthrough(quiet))
            try:
                return await behavior(request, context)
            finally:
                tracing.detach(token)
        parent = propagate.extract(carrier) if carrier else None
        with tracing.tracer.start_as_current_span(
            name,
            context=parent,
            kind=SpanKind.SERVER,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            exc: BaseException | None = None
            try:
                return await behavior(request, context)
            except BaseException as e:
                exc = e
                raise
            finally:
                if span.is_recording():
                    code = code_of(context, exc)
                    span.set_attribute("rpc.grpc.status_code", code.value[0])
                    if code in _SERVER_ERRORS:
                        span.set_status(Status(StatusCode.ERROR, code.name))

    return traced


async def traced_call(
    full_method: str,
    call: Callable[[Any], Awaitable[Any]],
    metadata: Any,
    client_code: Callable[[BaseException | None], grpc.StatusCode],
) -> Any:
    """``call(metadata)`` inside a CLIENT span, with its context added to ``metadata``
    (an unsampled request's calls make no span: ``channel`` only adds its context)."""
    with tracing.tracer.start_as_current_span(
        full_method.lstrip("/"),
        kind=SpanKind.CLIENT,
        attributes=_attributes(full_method),
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        metadata = (*(metadata or ()), *carrier.items())
        exc: BaseException | None = None
        try:
            return await call(metadata)
        except BaseException as e:
            exc = e
            raise
        finally:
            if span.is_recording():
                code = client_code(exc)
                span.set_attribute("rpc.grpc.status_code", code.value[0])
                if code is not grpc.StatusCode.OK:
                    span.set_status(Status(StatusCode.ERROR, code.name))
