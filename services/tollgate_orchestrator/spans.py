"""The orchestrator's spans: the HTTP SERVER span of each request and one GenAI CLIENT
span per upstream attempt, its child.

Only called with ``tracing.on``. Attempt spans carry the OTel GenAI attributes
(``gen_ai.*``: operation, provider, request and response model, tokens, finish
reasons, ``error.type``) and tollgate's own (``tollgate.*``: intent, tier, chain,
attempt number, retry and fallback reasons, cache result, cost). ``gen_ai.*`` keys go
on attempt spans only, so GenAI backends count one generation per upstream call.
No prompt or completion text is recorded unless
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` asks for it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
from opentelemetry import propagate
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from tollgate_common import tracing
from tollgate_orchestrator.accounting import Call, Usage
from tollgate_orchestrator.metrics import GENAI_OPERATIONS
from tollgate_orchestrator.types import Target

# gen_ai.provider.name's well-known values, by provider type; a "compatible" server
# (vLLM, Ollama, ...) is named by its provider's name in the policy.
GENAI_PROVIDERS = {
    "openai": "openai",
    "anthropic": "anthropic",
    "gemini": "gcp.gemini",
    "azure": "azure.ai.openai",
}
_CONTENT_CAP = 64 * 1024  # bytes of captured text per attribute
_TOLLGATE_HEADERS = {
    b"x-tollgate-model": "tollgate.model",
    b"x-tollgate-intent": "tollgate.intent",
    b"x-tollgate-tier": "tollgate.tier",
    b"x-tollgate-cache": "tollgate.cache",
    b"x-tollgate-route": "tollgate.route",
}
_CONTEXT_HEADERS = (b"traceparent", b"tracestate")


# --- HTTP ---------------------------------------------------------------------------------
def start_server(method: str, path: str, headers: Iterable[tuple[bytes, bytes]]) -> Span:
    """The request's SERVER span, a child of the caller's ``traceparent`` when it sent one
    (the sampler is parent-based: the caller's sampled flag decides)."""
    carrier = {
        k.decode("latin-1"): v.decode("latin-1") for k, v in headers if k in _CONTEXT_HEADERS
    }
    quiet = tracing.unsampled_parent(carrier.get("traceparent"))
    if quiet is not None:  # not sampled upstream: no SDK span below, only ids for the logs
        return tracing.passthrough(quiet, own_span=True)
    parent: Context | None = propagate.extract(carrier) if carrier else None
    return tracing.tracer.start_span(
        method,
        context=parent,
        kind=SpanKind.SERVER,
        attributes={"http.request.method": method, "url.path": path},
    )


def response_started(span: Span, headers: Iterable[tuple[bytes, bytes]]) -> None:
    """The route's outcome from the ``x-tollgate-*`` headers, on the server span."""
    for name, value in headers:
        key = _TOLLGATE_HEADERS.get(name)
        if key is not None:
            span.set_attribute(key, value.decode("latin-1"))
        elif name == b"x-tollgate-cost-usd":
            span.set_attribute("tollgate.cost_usd", float(value))


def end_server(span: Span, method: str, route: str, status: int) -> None:
    span.update_name(f"{method} {route}")
    span.set_attribute("http.route", route)
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR))
        span.set_attribute("error.type", str(status))
    span.end()


# --- upstream attempts --------------------------------------------------------------------
def start_attempt(
    call: Call,
    target: Target,
    provider_type: str,
    number: int,
    retry_reason: str | None,
    fallback_reason: str | None,
) -> Span:
    """The CLIENT span of attempt ``number`` (1-based, over the whole chain) at ``target``."""
    d = call.route
    operation = GENAI_OPERATIONS.get(call.api, "chat")
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": operation,
        "gen_ai.provider.name": GENAI_PROVIDERS.get(provider_type, target.provider),
        "gen_ai.request.model": target.upstream_model,
        "tollgate.provider": target.provider,
        "tollgate.model": target.name,
        "tollgate.requested_model": call.req.model,
        "tollgate.api": call.api,
        "tollgate.intent": d.intent,
        "tollgate.tier": d.tier,
        "tollgate.chain": [t.name for t in d.chain],
        "tollgate.attempt": number,
        "tollgate.cache": call.cache,
        "tollgate.stream": call.req.stream,
    }
    if call.req.max_tokens is not None:
        attributes["gen_ai.request.max_tokens"] = call.req.max_tokens
    if retry_reason:
        attributes["tollgate.retry_reason"] = retry_reason
    if fallback_reason:
        attributes["tollgate.fallback_reason"] = fallback_reason
    if d.degraded:
        attributes["tollgate.degraded"] = True
    if tracing.capture_content:
        attributes["gen_ai.input.messages"] = _capped(_input_of(call.req.body))
    return tracing.tracer.start_span(
        f"{operation} {target.upstream_model}", kind=SpanKind.CLIENT, attributes=attributes
    )


def attempt_failed(span: Span, error_class: str, status: int | None = None) -> None:
    span.set_attribute("error.type", error_class)
    if status:
        span.set_attribute("http.response.status_code", status)
    span.set_status(Status(StatusCode.ERROR, error_class))
    span.end()


def attempt_answered(
    span: Span,
    target: Target,
    usage: Usage,
    cost: float,
    outcome: str,
    body: bytes | None = None,
    tail: Iterable[bytes] = (),
) -> None:
    """End the attempt that answered: tokens, cost, and what ``body`` (a whole answer) or
    ``tail`` (a stream's last payloads) say about the model and why it stopped."""
    if span.is_recording():
        model, reasons = _answer_facts(body, tail)
        span.set_attributes(
            {
                "gen_ai.response.model": model or target.upstream_model,
                "gen_ai.usage.input_tokens": usage.prompt,
                "gen_ai.usage.output_tokens": usage.completion,
                "tollgate.cost_usd": cost,
            }
        )
        if reasons:
            span.set_attribute("gen_ai.response.finish_reasons", reasons)
        if usage.cached:
            span.set_attribute("gen_ai.usage.cache_read.input_tokens", usage.cached)
        if usage.cache_write:
            span.set_attribute("gen_ai.usage.cache_creation.input_tokens", usage.cache_write)
        if usage.reasoning:
            span.set_attribute("tollgate.usage.reasoning_tokens", usage.reasoning)
        if tracing.capture_content and body is not None:
            span.set_attribute("gen_ai.output.messages", _capped(body.decode("utf-8", "replace")))
        if outcome != "success":
            span.set_attribute("error.type", outcome)
            span.set_status(Status(StatusCode.ERROR, outcome))
    span.end()


def _answer_facts(body: bytes | None, tail: Iterable[bytes]) -> tuple[str, list[str]]:
    """(response model, finish reasons) from a whole answer or a stream's last payloads,
    in any of the wire formats (chat, Responses, Messages)."""
    model, reasons = "", []
    for raw in (body,) if body is not None else tail:
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(doc, dict):
            continue
        inner = doc.get("response") or doc.get("message") or doc
        if isinstance(inner, dict) and isinstance(inner.get("model"), str):
            model = inner["model"]
        for choice in doc.get("choices") or ():
            if isinstance(choice, dict) and isinstance(choice.get("finish_reason"), str):
                reasons.append(choice["finish_reason"])
        for holder in (doc, doc.get("delta"), inner):
            if isinstance(holder, dict) and isinstance(holder.get("stop_reason"), str):
                reasons.append(holder["stop_reason"])
                break
        if isinstance(inner, dict) and inner.get("object") == "response":
            status = inner.get("status")
            if isinstance(status, str):
                reasons.append(status)
    return model, reasons


def _input_of(body: dict[str, Any]) -> str:
    picked = {k: body[k] for k in ("system", "instructions", "messages", "input") if k in body}
    return orjson.dumps(picked).decode()


def _capped(text: str) -> str:
    return text if len(text) <= _CONTENT_CAP else text[:_CONTENT_CAP] + "…"
