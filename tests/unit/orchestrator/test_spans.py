"""The upstream attempt spans over the pipeline's fakes: one per attempt, ended once with
the answer's usage, cost and finish reasons, or with the failure; no text unless asked."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from tollgate_common import tracing
from tollgate_orchestrator import spans
from tollgate_orchestrator.retry import SERVER, Failure
from tollgate_orchestrator.types import Whole
from tollgate_orchestrator.validation import Limits, parse_chat_request

from .fakes import Rig, headers

PROMPT = "the secret prompt words"


def request(**fields: Any):
    body = {"model": "auto", "messages": [{"role": "user", "content": PROMPT}], **fields}
    return parse_chat_request(body, Limits())


def attempts(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name.startswith("chat ")]


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


async def test_a_whole_answer_ends_its_attempt_with_usage_cost_and_reasons(
    sdk: InMemorySpanExporter,
) -> None:
    rig = Rig(["gpt-4o-mini", "gpt-4.1-mini"])
    reply = await rig.handle(request())
    assert isinstance(reply, Whole)
    (span,) = attempts(sdk)
    a = attrs(span)
    assert span.name == "chat gpt-4o-mini" and span.kind.name == "CLIENT"
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.usage.input_tokens"] == 1000 and a["gen_ai.usage.output_tokens"] == 500
    assert a["gen_ai.usage.cache_read.input_tokens"] == 200
    assert a["gen_ai.response.finish_reasons"] == ("stop",)
    assert a["tollgate.cost_usd"] == float(headers(reply)["x-tollgate-cost-usd"])
    assert a["tollgate.chain"] == ("gpt-4o-mini", "gpt-4.1-mini") and a["tollgate.attempt"] == 1
    assert "gen_ai.input.messages" not in a and "gen_ai.output.messages" not in a
    assert PROMPT not in str(a)


async def test_a_retry_then_a_fallback_are_three_attempts(sdk: InMemorySpanExporter) -> None:
    rig = Rig(["gpt-4o-mini", "gpt-4.1-mini"])
    rig.upstream.script["gpt-4o-mini"] = [Failure(SERVER, 500)] * 2
    await rig.handle(request())
    first, retry, fallback = sorted(attempts(sdk), key=lambda s: attrs(s)["tollgate.attempt"])
    assert first.status.status_code is StatusCode.ERROR
    assert attrs(first)["error.type"] == SERVER
    assert attrs(first)["http.response.status_code"] == 500
    assert attrs(retry)["tollgate.retry_reason"] == SERVER
    assert fallback.name == "chat gpt-4.1-mini"
    assert attrs(fallback)["tollgate.fallback_reason"] == SERVER
    assert fallback.status.status_code is not StatusCode.ERROR


async def test_a_stream_ends_its_attempt_when_the_stream_is_accounted(
    sdk: InMemorySpanExporter,
) -> None:
    rig = Rig(["gpt-4o-mini"])
    reply = await rig.handle(request(stream=True, stream_options={"include_usage": True}))
    assert attempts(sdk) == []  # open while the stream runs
    await rig.collect(reply)
    (span,) = attempts(sdk)
    a = attrs(span)
    assert a["gen_ai.response.finish_reasons"] == ("stop",)
    assert a["gen_ai.usage.output_tokens"] == 500 and a["tollgate.stream"] is True


async def test_a_stream_cut_short_is_an_error_on_its_attempt(sdk: InMemorySpanExporter) -> None:
    rig = Rig(["gpt-4o-mini"])
    rig.upstream.script["gpt-4o-mini"] = [("break", 3)]
    await rig.collect(await rig.handle(request(stream=True)))
    (span,) = attempts(sdk)
    assert attrs(span)["error.type"] == "partial"
    assert span.status.status_code is StatusCode.ERROR


async def test_content_capture_is_opt_in(
    sdk: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tracing, "capture_content", True)
    rig = Rig(["gpt-4o-mini"])
    await rig.handle(request())
    (span,) = attempts(sdk)
    assert PROMPT in attrs(span)["gen_ai.input.messages"]
    assert "hello world" in attrs(span)["gen_ai.output.messages"]


@pytest.mark.parametrize(
    ("doc", "model", "reasons"),
    [
        ({"model": "m", "choices": [{"finish_reason": "length"}]}, "m", ["length"]),
        ({"type": "message", "model": "claude", "stop_reason": "end_turn"}, "claude", ["end_turn"]),
        ({"type": "message_delta", "delta": {"stop_reason": "tool_use"}}, "", ["tool_use"]),
        (
            {
                "type": "response.completed",
                "response": {"object": "response", "model": "o4", "status": "completed"},
            },
            "o4",
            ["completed"],
        ),
    ],
)
def test_the_answer_facts_of_every_wire(
    doc: dict[str, Any], model: str, reasons: list[str]
) -> None:
    assert spans._answer_facts(orjson.dumps(doc), ()) == (model, reasons)
    assert spans._answer_facts(None, [b"[DONE]", orjson.dumps(doc)]) == (model, reasons)
