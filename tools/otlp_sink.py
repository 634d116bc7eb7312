"""An OTLP/gRPC trace receiver on loopback that keeps what it receives: for the tests that
need the spans in one process, as the benchmarks' sink at 100 % sampling, and in front of
Arize Phoenix (``forward``), which keeps neither span kinds nor resource attributes.

Not a backend: ``tests/tracing`` proves the trace trees against Phoenix. This one
decodes with the OpenTelemetry protos, so what it holds is what was on the wire.
"""

from __future__ import annotations

import threading
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import (
    trace_service_pb2,
    trace_service_pb2_grpc,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

KINDS = {1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}


def _value(v: AnyValue) -> Any:
    which = v.WhichOneof("value")
    if which == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, which) if which else None


@dataclass(frozen=True)
class Span:
    name: str
    kind: str
    service: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]
    status: int  # 0 unset, 1 ok, 2 error


@dataclass
class Sink(trace_service_pb2_grpc.TraceServiceServicer):
    keep: bool = True  # False: count only (the benchmark's sink)
    forward: Any = None  # a TraceServiceStub every export is passed on to, unchanged
    spans: list[Span] = field(default_factory=list)
    count: int = 0
    exports: int = 0
    errors: list[str] = field(default_factory=list)  # the forward's refusals
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        got: list[Span] = []
        n = 0
        for rs in request.resource_spans:
            service = next(
                (a.value.string_value for a in rs.resource.attributes if a.key == "service.name"),
                "",
            )
            for ss in rs.scope_spans:
                n += len(ss.spans)
                if not self.keep:
                    continue
                for s in ss.spans:
                    got.append(
                        Span(
                            name=s.name,
                            kind=KINDS.get(s.kind, str(s.kind)),
                            service=service,
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent_id=s.parent_span_id.hex(),
                            attributes={a.key: _value(a.value) for a in s.attributes},
                            status=s.status.code,
                        )
                    )
        with self._lock:
            self.count += n
            self.exports += 1
            self.spans.extend(got)
        if self.forward is not None:
            try:
                self.forward.Export(request, timeout=10, wait_for_ready=True)
            except grpc.RpcError as exc:
                with self._lock:
                    self.errors.append(f"{exc.code()}: {exc.details()}")
                context.abort(exc.code(), exc.details() or "the forward refused")
        return trace_service_pb2.ExportTraceServiceResponse()

    def kinds(self) -> dict[str, tuple[str, str]]:
        """span id -> (kind, service.name), of every span received."""
        with self._lock:
            return {s.span_id: (s.kind, s.service) for s in self.spans}

    def of_trace(self, trace_id: str) -> list[Span]:
        with self._lock:
            return [s for s in self.spans if s.trace_id == trace_id]


class OtlpSink:
    """``with OtlpSink() as sink:`` a receiver at ``.endpoint`` (http://127.0.0.1:port);
    with ``forward`` (host:port of another OTLP/gRPC receiver) it passes every export on."""

    def __init__(self, keep: bool = True, forward: str | None = None) -> None:
        self._channel = None
        stub = None
        if forward is not None:
            # Reconnect soon after the receiver comes up: grpc's default backoff grows to
            # minutes, and while it waits every forward would fail at once.
            self._channel = grpc.insecure_channel(
                forward,
                options=[
                    ("grpc.initial_reconnect_backoff_ms", 200),
                    ("grpc.max_reconnect_backoff_ms", 1000),
                ],
            )
            stub = trace_service_pb2_grpc.TraceServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self.sink = Sink(keep=keep, forward=stub)
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self.sink, self._server)  # type: ignore[no-untyped-call]
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Sink:
        self._server.start()
        return self.sink

    def __exit__(self, *exc: object) -> None:
        self._server.stop(2).wait(5)
        if self._channel is not None:
            self._channel.close()
