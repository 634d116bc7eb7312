"""The tracing switch, its configuration errors, the log fields and the exemplars."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import orjson
import pytest
from opentelemetry.sdk.trace import TracerProvider, sampling
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tollgate_common import tracing
from tollgate_common.config import ConfigError
from tollgate_common.logging import JsonFormatter
from tools.stack import base_env


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4317/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
    ],
)
def test_tracing_is_on_only_when_the_standard_variables_ask(env: dict[str, str], on: bool) -> None:
    assert tracing.wanted(env) is on


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"OTEL_TRACES_EXPORTER": "jaeger"}, "OTEL_TRACES_EXPORTER"),
        ({"OTEL_TRACES_SAMPLER": "sometimes"}, "OTEL_TRACES_SAMPLER"),
        (
            {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1.5"},
            "OTEL_TRACES_SAMPLER_ARG",
        ),
        (
            {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "x"},
            "OTEL_TRACES_SAMPLER_ARG",
        ),
    ],
)
def test_a_bad_setting_is_an_error_naming_the_variable(env: dict[str, str], named: str) -> None:
    check = tracing.wanted if named == "OTEL_TRACES_EXPORTER" else tracing.sampler_from
    with pytest.raises(ConfigError, match=named):
        check(env)


def test_a_bad_protocol_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_PROTOCOL"):
        tracing._exporters({"OTEL_EXPORTER_OTLP_PROTOCOL": "thrift"})


def test_the_ratio_sampler_follows_the_parent() -> None:
    s = tracing.sampler_from(
        {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.01"}
    )
    assert isinstance(s, sampling.ParentBased)
    assert "0.01" in s.get_description()  # type: ignore[no-untyped-call]
    assert tracing.sampler_from({}) is sampling.DEFAULT_ON


def test_a_service_with_a_bad_otel_setting_stops_with_exit_code_2() -> None:
    env = base_env(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_TRACES_SAMPLER": "nope"}
    )
    r = subprocess.run(
        [sys.executable, "-m", "tollgate_router"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert "tollgate-router: bad configuration: OTEL_TRACES_SAMPLER" in r.stderr


def test_the_stacks_of_the_tests_never_see_a_developers_otel_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT", "http://mine:4317")
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in base_env()


def _line(msg: str) -> dict[str, object]:
    record = logging.LogRecord("tollgate.test", logging.INFO, __file__, 1, msg, None, None)
    return dict(orjson.loads(JsonFormatter("router").format(record)))


def test_log_lines_carry_the_trace_of_the_request_in_flight(sdk: InMemorySpanExporter) -> None:
    assert "trace_id" not in _line("outside a request")
    with tracing.tracer.start_as_current_span("request") as span:
        line = _line("routed")
    ctx = span.get_span_context()
    assert line["trace_id"] == format(ctx.trace_id, "032x")
    assert line["span_id"] == format(ctx.span_id, "016x")
    assert line["trace_sampled"] is True


def test_unsampled_requests_log_their_ids_too(monkeypatch: pytest.MonkeyPatch) -> None:
    provider = TracerProvider(sampler=sampling.ALWAYS_OFF)
    monkeypatch.setattr(tracing, "on", True)
    with provider.get_tracer("t").start_as_current_span("request"):
        line = _line("routed")
        assert tracing.exemplar() is None  # would point at a trace never exported
    assert line["trace_sampled"] is False and len(str(line["trace_id"])) == 32


def test_with_tracing_off_nothing_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    provider = TracerProvider()
    monkeypatch.setattr(tracing, "on", False)
    with provider.get_tracer("t").start_as_current_span("request"):
        assert "trace_id" not in _line("routed")
        assert tracing.exemplar() is None


def test_an_exemplar_names_the_sampled_span(sdk: InMemorySpanExporter) -> None:
    with tracing.tracer.start_as_current_span("request") as span:
        ex = tracing.exemplar()
    ctx = span.get_span_context()
    assert ex == {"trace_id": format(ctx.trace_id, "032x"), "span_id": format(ctx.span_id, "016x")}
    # prometheus_client refuses exemplar labels over 128 characters.
    assert sum(len(k) + len(v) for k, v in ex.items()) <= 128


def test_annotate_writes_only_on_a_recording_span(sdk: InMemorySpanExporter) -> None:
    tracing.annotate({"tollgate.cache": "hit"})  # no span: nothing, no error
    with tracing.tracer.start_as_current_span("lookup"):
        tracing.annotate({"tollgate.cache": "hit"})
    (span,) = sdk.get_finished_spans()
    assert span.attributes == {"tollgate.cache": "hit"}


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", True),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", False),  # sampled: the SDK's
        ("00-00000000000000000000000000000000-00f067aa0ba902b7-00", False),  # invalid ids
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-00", False),
        ("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", False),  # another version
        ("00-4bf92f3577b34da6a3ce929d0e0e47zz-00f067aa0ba902b7-00", False),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736x00f067aa0ba902b7-00", False),
        (None, False),
    ],
)
def test_an_unsampled_traceparent_is_read_without_the_sdk(
    monkeypatch: pytest.MonkeyPatch, value: str | None, parsed: bool
) -> None:
    monkeypatch.setattr(tracing, "parent_based", True)
    ctx = tracing.unsampled_parent(value)
    assert (ctx is not None) is parsed
    if ctx is not None:
        assert tracing.traceparent(ctx) == value
    monkeypatch.setattr(tracing, "parent_based", False)  # another sampler: the SDK decides
    assert tracing.unsampled_parent(value) is None


async def test_an_unsampled_call_carries_its_context_but_makes_no_span(
    sdk: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tollgate_common.grpc.channel import MeteredChannel

    monkeypatch.setattr(tracing, "parent_based", True)
    parent = tracing.unsampled_parent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
    assert parent is not None
    sent: list[object] = []

    class Channel:
        def unary_unary(self, method: str, *args: object, **kwargs: object) -> object:
            async def call(request: object, **kwargs: object) -> str:
                sent.append(kwargs["metadata"])
                return "ok"

            return call

    channel = MeteredChannel(Channel(), None, 1.0, (("k", "v"),))
    token = tracing.attach(tracing.passthrough(parent, own_span=True))
    try:
        own = tracing.ids()
        assert await channel.unary_unary("/p.S/M")("request") == "ok"
    finally:
        tracing.detach(token)
    assert own is not None and own[0] == "4bf92f3577b34da6a3ce929d0e0e4736" and own[2] is False
    assert sent == [(("k", "v"), ("traceparent", f"00-{own[0]}-{own[1]}-00"))]
    assert sdk.get_finished_spans() == ()
