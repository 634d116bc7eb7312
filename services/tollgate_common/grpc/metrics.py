"""gRPC metrics with the go-grpc-prometheus names: per-method children and the server wrapper.

Children are bound once per method and reused: the label lookup is the costly
part of a prometheus_client observation. ``start_grpc_server`` wraps each server
method once at registration (``ServerMetrics.wrap``) rather than through a
grpc.aio interceptor, which costs an extra coroutine chain per RPC. Client calls
are counted by ``channel.MeteredChannel``, not by a client interceptor, for the
same reason.
"""

from __future__ import annotations

import time
from typing import Any

import grpc
from prometheus_client import Counter

from tollgate_common import tracing
from tollgate_common.grpc import tracing as grpc_tracing
from tollgate_common.metrics import Families


class MethodMetrics:
    __slots__ = ("handled", "handling", "received", "sent", "started")

    def __init__(self, fam: Families, side: str, grpc_type: str, full_method: str) -> None:
        service, _, method = full_method.lstrip("/").rpartition("/")
        labels = {"grpc_type": grpc_type, "grpc_service": service, "grpc_method": method}
        self.started = fam.counter(f"grpc_{side}_started_total").labels(**labels)
        self.handling = fam.histogram(f"grpc_{side}_handling_seconds").labels(**labels)
        self.received = fam.counter(f"grpc_{side}_msg_received_total").labels(**labels)
        self.sent = fam.counter(f"grpc_{side}_msg_sent_total").labels(**labels)
        handled: Counter = fam.counter(f"grpc_{side}_handled_total")
        self.handled = {
            code: handled.labels(**labels, grpc_code=code.name) for code in grpc.StatusCode
        }


def _code_of(context: grpc.aio.ServicerContext, exc: BaseException | None) -> grpc.StatusCode:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(code, int):  # some grpc versions return the raw int
        for c in grpc.StatusCode:
            if c.value[0] == code:
                return c
    if exc is None:
        return grpc.StatusCode.OK
    if isinstance(exc, TimeoutError):
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.UNKNOWN


def client_code(exc: BaseException | None) -> grpc.StatusCode:
    """The status a client call ended with: OK, the RPC error's, or a deadline."""
    if exc is None:
        return grpc.StatusCode.OK
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code()
    if isinstance(exc, TimeoutError):
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.UNKNOWN


class ServerMetrics:
    """Counts and times unary and server-streaming RPCs, aborted ones included.

    Handlers are wrapped once at registration (``server.MeteredRegistrar``), not
    through a grpc.aio server interceptor, which costs extra coroutines per RPC."""

    def __init__(self, families: Families) -> None:
        self._fam = families
        self._cache: dict[str, MethodMetrics] = {}

    def _metrics(self, method: str, grpc_type: str) -> MethodMetrics:
        m = self._cache.get(method)
        if m is None:
            m = self._cache[method] = MethodMetrics(self._fam, "server", grpc_type, method)
        return m

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """``handler`` with the metrics of ``method`` (``/pkg.Service/Method``) around it, and
        a span around those with tracing on (unary only: no tollgate RPC streams on its
        request path)."""
        if handler.unary_unary is not None:
            return self._wrap_unary(handler, self._metrics(method, "unary"), method)
        if handler.unary_stream is not None:
            return self._wrap_stream(handler, self._metrics(method, "server_stream"))
        return handler

    @staticmethod
    def _wrap_unary(
        handler: grpc.RpcMethodHandler, m: MethodMetrics, method: str
    ) -> grpc.RpcMethodHandler:
        inner = handler.unary_unary

        async def behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
            m.started.inc()
            m.received.inc()
            start = time.perf_counter()
            exc: BaseException | None = None
            try:
                response = await inner(request, context)
                m.sent.inc()
                return response
            except BaseException as e:
                exc = e
                raise
            finally:
                m.handling.observe(time.perf_counter() - start, tracing.exemplar())
                m.handled[_code_of(context, exc)].inc()

        traced = tracing.on and grpc_tracing.traced_method(method)
        served = grpc_tracing.traced_server(method, behavior, _code_of) if traced else behavior
        return grpc.unary_unary_rpc_method_handler(
            served,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    @staticmethod
    def _wrap_stream(handler: grpc.RpcMethodHandler, m: MethodMetrics) -> grpc.RpcMethodHandler:
        inner = handler.unary_stream

        async def behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
            m.started.inc()
            m.received.inc()
            start = time.perf_counter()
            exc: BaseException | None = None
            try:
                result = inner(request, context)
                if hasattr(result, "__aiter__"):
                    async for item in result:
                        m.sent.inc()
                        yield item
                else:
                    await result
            except BaseException as e:
                exc = e
                raise
            finally:
                m.handling.observe(time.perf_counter() - start)
                m.handled[_code_of(context, exc)].inc()

        return grpc.unary_stream_rpc_method_handler(
            behavior,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
