"""Metric interceptors with the go-grpc-prometheus names, for grpc.aio servers and clients.

Children are bound once per method and reused: the label lookup is the costly
part of a prometheus_client observation.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from prometheus_client import Counter

from tollgate_common.metrics import Families


class _MethodMetrics:
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


class ServerMetricsInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Counts and times unary and server-streaming RPCs, aborted ones included."""

    def __init__(self, families: Families) -> None:
        self._fam = families
        self._cache: dict[str, _MethodMetrics] = {}

    def _metrics(self, method: str, grpc_type: str) -> _MethodMetrics:
        m = self._cache.get(method)
        if m is None:
            m = self._cache[method] = _MethodMetrics(self._fam, "server", grpc_type, method)
        return m

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method: str = handler_call_details.method
        if handler.unary_unary is not None:
            return self._wrap_unary(handler, self._metrics(method, "unary"))
        if handler.unary_stream is not None:
            return self._wrap_stream(handler, self._metrics(method, "server_stream"))
        return handler

    @staticmethod
    def _wrap_unary(handler: grpc.RpcMethodHandler, m: _MethodMetrics) -> grpc.RpcMethodHandler:
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
                m.handling.observe(time.perf_counter() - start)
                m.handled[_code_of(context, exc)].inc()

        return grpc.unary_unary_rpc_method_handler(
            behavior,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    @staticmethod
    def _wrap_stream(handler: grpc.RpcMethodHandler, m: _MethodMetrics) -> grpc.RpcMethodHandler:
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


class ClientInterceptor(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Sets a deadline on every unary call that has none, and records client metrics."""

    def __init__(self, families: Families | None, default_timeout: float) -> None:
        self._fam = families
        self._timeout = default_timeout
        self._cache: dict[str, _MethodMetrics] = {}

    def _metrics(self, method: str) -> _MethodMetrics | None:
        if self._fam is None or "grpc_client_started_total" not in self._fam:
            return None
        m = self._cache.get(method)
        if m is None:
            m = self._cache[method] = _MethodMetrics(self._fam, "client", "unary", method)
        return m

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        if client_call_details.timeout is None:
            client_call_details = client_call_details._replace(timeout=self._timeout)
        method = client_call_details.method
        if isinstance(method, bytes):
            method = method.decode()
        m = self._metrics(method)
        if m is None:
            return await continuation(client_call_details, request)
        m.started.inc()
        m.sent.inc()
        start = time.perf_counter()
        code = grpc.StatusCode.UNKNOWN
        try:
            call = await continuation(client_call_details, request)
            await call  # finished here so the code and time are known; the caller's await is free
            m.received.inc()
            code = grpc.StatusCode.OK
            return call
        except grpc.aio.AioRpcError as e:
            code = e.code()
            raise
        except TimeoutError:
            code = grpc.StatusCode.DEADLINE_EXCEEDED
            raise
        finally:
            m.handling.observe(time.perf_counter() - start)
            m.handled[code].inc()
