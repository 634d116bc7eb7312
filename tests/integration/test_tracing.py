"""Traces across the three services, received over OTLP/gRPC by a real receiver (the
OpenTelemetry protos, tools/otlp_sink.py): the tree of one request, attempts with their
retry and fallback, the traceparent a caller sends, the trace id in the response header,
the logs and the exemplars. tests/tracing proves the same against Arize Phoenix."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.reliability.common import fault, reset_sim
from tools.otlp_sink import OtlpSink, Sink, Span
from tools.stack import DEV_KEY, Stack

pytestmark = pytest.mark.integration

SECRET = "zebra-quartz-unique-prompt-words"
CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Sink]]:
    receiver = OtlpSink()
    with receiver as sink:
        otel = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "50",
        }
        s = Stack(
            log_dir=tmp_path_factory.mktemp("traced"),
            env={"TOLLGATE_LOG_LEVEL": "DEBUG"},
            router_env=otel,
            cache_env=otel,
            orch_env={**otel, "TOLLGATE_ORCHESTRATOR_RETRY_BASE_BACKOFF_SECONDS": "0"},
        )
        s.start()
        try:
            yield s, sink
        finally:
            s.stop()


def post(stack: Stack, body: dict[str, Any], **headers: str) -> httpx2.Response:
    with httpx2.Client(base_url=stack.base_url, timeout=30) as c:
        return c.post(CHAT, json=body, headers={"authorization": f"Bearer {DEV_KEY}", **headers})


def spans_of(sink: Sink, trace_id: str, at_least: int) -> list[Span]:
    deadline = time.monotonic() + 10
    while True:
        got = sink.of_trace(trace_id)
        if len(got) >= at_least or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def one(spans: list[Span], name: str, kind: str) -> Span:
    found = [s for s in spans if s.name == name and s.kind == kind]
    assert len(found) == 1, (name, kind, [(s.name, s.kind) for s in spans])
    return found[0]


def test_one_trace_per_request_across_the_three_services(traced: tuple[Stack, Sink]) -> None:
    stack, sink = traced
    r = post(
        stack,
        {
            "model": "gpt-4o-mini",
            "temperature": 0,
            "messages": [{"role": "user", "content": SECRET}],
        },
    )
    assert r.status_code == 200
    tid = r.headers["x-tollgate-trace-id"]
    assert len(tid) == 32 and int(tid, 16)
    spans = spans_of(sink, tid, 8)  # Store (after the answer) included
    server = one(spans, f"POST {CHAT}", "SERVER")
    assert server.service == "tollgate-orchestrator" and server.parent_id == ""
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["tollgate.cache"] == "miss"
    for rpc, service in (
        ("tollgate.router.v1.Router/Route", "tollgate-router"),
        ("tollgate.cache.v1.Cache/Lookup", "tollgate-cache"),
        ("tollgate.cache.v1.Cache/Store", "tollgate-cache"),
    ):
        client = one(spans, rpc, "CLIENT")
        assert client.parent_id == server.span_id and client.service == "tollgate-orchestrator"
        handler = one(spans, rpc, "SERVER")
        assert handler.parent_id == client.span_id and handler.service == service
        assert handler.attributes["rpc.grpc.status_code"] == 0
    assert one(spans, "tollgate.router.v1.Router/Route", "SERVER").attributes["tollgate.tier"]
    attempt = one(spans, "chat gpt-4o-mini", "CLIENT")
    assert attempt.parent_id == server.span_id
    a = attempt.attributes
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.request.model"] == a["gen_ai.response.model"] == "gpt-4o-mini"
    assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
    assert a["gen_ai.response.finish_reasons"] == ["stop"]
    assert a["tollgate.attempt"] == 1 and a["tollgate.chain"][0] == "gpt-4o-mini"
    assert a["tollgate.cost_usd"] == float(r.headers["x-tollgate-cost-usd"])
    assert a["tollgate.cache"] == "miss" and a["tollgate.intent"]
    # No prompt or completion text on any span unless content capture is turned on.
    answer = r.json()["choices"][0]["message"]["content"]
    for s in spans:
        text = json.dumps(s.attributes)
        assert SECRET not in text and answer[:40] not in text, s.name
    # gen_ai.* only where a model is called (LiteLLM #35193).
    assert [s.name for s in spans if any(k.startswith("gen_ai.") for k in s.attributes)] == [
        "chat gpt-4o-mini"
    ]


def test_a_retry_and_a_fallback_are_attempts_under_the_request(
    traced: tuple[Stack, Sink],
) -> None:
    stack, sink = traced
    reset_sim(stack)
    # The primary fails on every try it gets (2 by default): one retry, then the fallback.
    fault(stack, {"model": "gpt-4o-mini", "status": 503, "count": 2})
    try:
        r = post(stack, {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
    finally:
        reset_sim(stack)
    assert r.status_code == 200
    spans = spans_of(sink, r.headers["x-tollgate-trace-id"], 6)
    server = one(spans, f"POST {CHAT}", "SERVER")
    attempts = sorted(
        (s for s in spans if s.name.startswith("chat ")),
        key=lambda s: int(s.attributes["tollgate.attempt"]),
    )
    assert [s.attributes["tollgate.attempt"] for s in attempts] == [1, 2, 3]
    assert all(s.parent_id == server.span_id for s in attempts)
    first, retry, fallback = attempts
    assert first.name == retry.name == "chat gpt-4o-mini"
    assert first.attributes["error.type"] == "server_error" and first.status == 2
    assert first.attributes["http.response.status_code"] == 503
    assert retry.attributes["tollgate.retry_reason"] == "server_error"
    assert fallback.name != "chat gpt-4o-mini" and fallback.status != 2
    assert fallback.attributes["tollgate.fallback_reason"] == "server_error"
    assert "error.type" not in fallback.attributes
    assert fallback.attributes["gen_ai.usage.output_tokens"] > 0


def test_an_incoming_traceparent_is_the_parent_and_its_flag_decides(
    traced: tuple[Stack, Sink],
) -> None:
    stack, sink = traced
    tid, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    r = post(
        stack,
        {"model": "auto", "messages": [{"role": "user", "content": "hello there"}]},
        traceparent=f"00-{tid}-{parent}-01",
    )
    assert r.headers["x-tollgate-trace-id"] == tid
    server = one(spans_of(sink, tid, 4), f"POST {CHAT}", "SERVER")
    assert server.parent_id == parent
    # Not sampled upstream: nothing exported, the same trace id still returned (and logged).
    quiet = "0af7651916cd43dd8448eb211c80319c"
    r = post(
        stack,
        {"model": "auto", "messages": [{"role": "user", "content": "hello again"}]},
        traceparent=f"00-{quiet}-b7ad6b7169203331-00",
    )
    assert r.status_code == 200 and r.headers["x-tollgate-trace-id"] == quiet
    time.sleep(0.5)
    assert sink.of_trace(quiet) == []
    # ... and its context still reaches the router, whose logs join it without a span.
    for name in ("orchestrator", "router"):
        lines = log_lines(stack, name)
        assert any(x.get("trace_id") == quiet and x.get("trace_sampled") is False for x in lines)


def log_lines(stack: Stack, name: str) -> list[dict[str, Any]]:
    path = Path(stack.log_dir) / f"{name}.log"
    out = []
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def test_logs_of_every_service_carry_the_trace(traced: tuple[Stack, Sink]) -> None:
    stack, sink = traced
    r = post(
        stack,
        {"model": "auto", "temperature": 0, "messages": [{"role": "user", "content": "hi logs"}]},
    )
    tid = r.headers["x-tollgate-trace-id"]
    spans = spans_of(sink, tid, 8)
    ids = {s.span_id for s in spans}
    for name in ("orchestrator", "router", "cache"):
        mine = [x for x in log_lines(stack, name) if x.get("trace_id") == tid]
        assert mine, f"no {name} log line with trace {tid}"
        assert all(x["trace_sampled"] is True and x["span_id"] in ids for x in mine)


def scrape_openmetrics(url: str) -> str:
    req = urllib.request.Request(
        url, headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        return str(resp.read().decode())


def test_latency_histograms_carry_exemplars_of_sampled_traces(
    traced: tuple[Stack, Sink],
) -> None:
    stack, _ = traced
    r = post(stack, {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "ex"}]})
    tid = r.headers["x-tollgate-trace-id"]
    text = scrape_openmetrics(stack.metrics_url("orchestrator"))
    for family in (
        "tollgate_http_request_duration_seconds",
        "tollgate_llm_upstream_duration_seconds",
        "tollgate_gateway_overhead_seconds",
        "grpc_client_handling_seconds",
    ):
        with_tid = [
            line
            for line in text.splitlines()
            if line.startswith(f"{family}_bucket") and f'trace_id="{tid}"' in line
        ]
        assert with_tid, f"no exemplar of {tid} on {family}"
    router = scrape_openmetrics(f"http://127.0.0.1:{stack.ports.router_metrics}/metrics")
    assert any(
        line.startswith("grpc_server_handling_seconds_bucket") and "trace_id=" in line
        for line in router.splitlines()
    )
    # The classic text format has no exemplars: scrapers that don't ask see none.
    with urllib.request.urlopen(stack.metrics_url("orchestrator"), timeout=5) as resp:
        assert "trace_id=" not in resp.read().decode()
