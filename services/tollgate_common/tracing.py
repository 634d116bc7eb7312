"""Traces: off unless the standard ``OTEL_*`` variables say where to send them.

``setup`` runs once per process, before any server or channel is built, and sets
``on``. Everything that traces checks ``on`` once, where it is built (servers,
channels) or per call (a module global), so a process with tracing off runs none
of the SDK's code and pays one boolean test where a span would start.

Tracing is on when ``OTEL_TRACES_EXPORTER`` names ``otlp`` or ``console``, or, with it
unset, when ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is
set; ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none`` turns it off. The
SDK reads the rest itself: endpoint, headers, TLS, ``OTEL_BSP_*``,
``OTEL_RESOURCE_ATTRIBUTES``. The protocol (``OTEL_EXPORTER_OTLP_PROTOCOL``: ``grpc``,
the Python SDK's default, or ``http/protobuf``) and the sampler
(``OTEL_TRACES_SAMPLER``/``_ARG``, parent-based always-on by default) are checked here,
so that a typo is a configuration error, not a silent fallback.

With a parent-based sampler (the default), the children of an unsampled span would be
dropped by the sampler anyway, so they are not made: the context only travels on (its
``traceparent`` in the gRPC metadata, a non-recording span where it arrives) so that
logs still join across the services. That keeps 1 % sampling cheap for the 99 %.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, TraceFlags, Tracer

from tollgate_common.config import ConfigError

log = logging.getLogger(__name__)

# Set by ``setup``; read on every hot path, hence module globals rather than an object.
on = False
tracer: Tracer = trace.NoOpTracer()
# Prompt and completion text on the upstream spans: sensitive, off unless asked for.
capture_content = False
# The sampler follows the parent: an unsampled parent's children are not made at all.
parent_based = False

_provider: Any = None
_PROTOCOLS = ("grpc", "http/protobuf")
_RATIO_SAMPLERS = ("traceidratio", "parentbased_traceidratio")
_SAMPLERS = (
    "always_on",
    "always_off",
    "parentbased_always_on",
    "parentbased_always_off",
    *_RATIO_SAMPLERS,
)
_TRUE = ("1", "true", "yes", "on")
# Spans waiting for export. The SDK's 2048 drops spans in a burst (otel.md §3); each
# costs a few hundred bytes, so 16k is a few MB at most.
_QUEUE = 16_384
CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in _TRUE


def wanted(env: Mapping[str, str]) -> bool:
    """Whether ``env`` turns tracing on (the rule in the module's docstring)."""
    if _truthy(env.get("OTEL_SDK_DISABLED")):
        return False
    exporters = [e.strip() for e in env.get("OTEL_TRACES_EXPORTER", "").split(",") if e.strip()]
    if exporters:
        unknown = [e for e in exporters if e not in ("otlp", "console", "none")]
        if unknown:
            raise ConfigError(
                f"OTEL_TRACES_EXPORTER: {', '.join(unknown)} is not supported "
                "(use otlp, console or none)"
            )
        return any(e != "none" for e in exporters)
    return bool(
        env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def sampler_from(env: Mapping[str, str]) -> Any:
    """The sampler ``OTEL_TRACES_SAMPLER``/``OTEL_TRACES_SAMPLER_ARG`` name, checked."""
    from opentelemetry.sdk.trace import sampling

    name = env.get("OTEL_TRACES_SAMPLER", "parentbased_always_on").strip().lower()
    if name not in _SAMPLERS:
        raise ConfigError(f"OTEL_TRACES_SAMPLER: {name!r} is not one of {', '.join(_SAMPLERS)}")
    if name not in _RATIO_SAMPLERS:
        return {
            "always_on": sampling.ALWAYS_ON,
            "always_off": sampling.ALWAYS_OFF,
            "parentbased_always_on": sampling.DEFAULT_ON,
            "parentbased_always_off": sampling.DEFAULT_OFF,
        }[name]
    raw = env.get("OTEL_TRACES_SAMPLER_ARG", "1.0").strip() or "1.0"
    try:
        ratio = float(raw)
    except ValueError:
        ratio = -1.0
    if not 0.0 <= ratio <= 1.0:
        raise ConfigError(f"OTEL_TRACES_SAMPLER_ARG: {raw!r} is not a ratio between 0 and 1")
    root = sampling.TraceIdRatioBased(ratio)
    return sampling.ParentBased(root) if name.startswith("parentbased") else root


def _exporters(env: Mapping[str, str]) -> list[Any]:
    names = [e.strip() for e in env.get("OTEL_TRACES_EXPORTER", "otlp").split(",") if e.strip()]
    out: list[Any] = []
    if "console" in names:
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        out.append(ConsoleSpanExporter())
    if "otlp" in names:
        protocol = (
            env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            or "grpc"
        ).strip()
        if protocol not in _PROTOCOLS:
            raise ConfigError(
                f"OTEL_EXPORTER_OTLP_PROTOCOL: {protocol!r} is not supported "
                f"(use {' or '.join(_PROTOCOLS)})"
            )
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[assignment]
                OTLPSpanExporter,
            )
        out.append(OTLPSpanExporter())
    return out


def setup(service: str, version: str, env: Mapping[str, str]) -> bool:
    """Install the SDK for ``tollgate-<service>`` when ``env`` asks for traces; returns ``on``.

    Raises ``ConfigError`` naming the variable for a bad exporter, protocol or sampler.
    """
    global on, tracer, capture_content, parent_based, _provider
    if not wanted(env):
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased

    sampler = sampler_from(env)
    exporters = _exporters(env)
    attributes: dict[str, str] = {"service.version": version}
    named = "service.name=" in env.get("OTEL_RESOURCE_ATTRIBUTES", "")
    if not env.get("OTEL_SERVICE_NAME") and not named:
        attributes["service.name"] = f"tollgate-{service}"
    provider = TracerProvider(sampler=sampler, resource=Resource.create(attributes))
    queue = int(env.get("OTEL_BSP_MAX_QUEUE_SIZE") or _QUEUE)
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=queue))
    trace.set_tracer_provider(provider)
    _provider = provider
    tracer = provider.get_tracer("tollgate", version)
    capture_content = _truthy(env.get(CONTENT_ENV))
    parent_based = isinstance(sampler, ParentBased)
    on = True
    log.info(
        "tracing on",
        extra={"sampler": type(sampler).__name__, "capture_content": capture_content},
    )
    return True


def shutdown(timeout_seconds: float = 5.0) -> None:
    """Export what is queued (bounded), then stop; a no-op with tracing off."""
    global on, tracer
    if _provider is None:
        return
    try:
        _provider.force_flush(int(timeout_seconds * 1000))
        _provider.shutdown()
    except Exception:  # an unreachable collector must not fail the process's exit
        log.warning("could not flush the last spans", exc_info=True)
    on = False
    tracer = trace.NoOpTracer()


def ids() -> tuple[str, str, bool] | None:
    """(trace id, span id, sampled) of the current span; None outside one."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x"), ctx.trace_flags.sampled


def unsampled() -> SpanContext | None:
    """The current span's context when a parent-based sampler would drop its children."""
    if not parent_based:
        return None
    ctx = trace.get_current_span().get_span_context()
    return ctx if ctx.is_valid and not ctx.trace_flags.sampled else None


def traceparent(ctx: SpanContext) -> str:
    """W3C ``traceparent`` of ``ctx``."""
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def unsampled_parent(value: str | None) -> SpanContext | None:
    """The caller's context when ``value`` is a valid version-00 ``traceparent`` that is
    not sampled and the sampler follows parents; otherwise None (the SDK decides)."""
    if not parent_based or value is None or len(value) != 55 or not value.startswith("00-"):
        return None
    try:
        trace_id, span_id, flags = int(value[3:35], 16), int(value[36:52], 16), int(value[53:], 16)
    except ValueError:
        return None
    if value[35] != "-" or value[52] != "-" or flags & 1 or not trace_id or not span_id:
        return None
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags))


def passthrough(ctx: SpanContext, own_span: bool = False) -> Span:
    """A non-recording span for an unsampled request: ``ctx`` itself, or with ``own_span``
    a child id of its own (the orchestrator's request, whose id the response names)."""
    if own_span:
        ctx = SpanContext(ctx.trace_id, random.getrandbits(64), False, ctx.trace_flags)
    return NonRecordingSpan(ctx)


def attach(span: Span) -> object:
    return otel_context.attach(trace.set_span_in_context(span))


def detach(token: object) -> None:
    otel_context.detach(token)  # type: ignore[arg-type]


def annotate(attributes: Mapping[str, Any]) -> None:
    """Set ``attributes`` on the current span when it records (a sampled request)."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes(attributes)


def exemplar(span: Span | None = None) -> dict[str, str] | None:
    """The exemplar of an observation made in ``span`` (or the current span): only a
    sampled one, since the others point at traces that were never exported."""
    if not on:
        return None
    ctx = (span or trace.get_current_span()).get_span_context()
    if not ctx.trace_flags.sampled:
        return None
    return {"trace_id": format(ctx.trace_id, "032x"), "span_id": format(ctx.span_id, "016x")}
