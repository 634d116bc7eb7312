"""Traces end to end (issue #16) against a real backend: Arize Phoenix.

drive.py runs inside a private network namespace (Phoenix's OTLP gRPC port binds every
interface, see backend.py) with Phoenix, a Prometheus with exemplar storage and a tollgate
stack exporting to it, sends five chat requests with the openai SDK and writes a report;
this test reads the report and checks, per request, the trace id in the response header,
the span tree Phoenix stored (names, kinds, parentage across the three processes, the
gen_ai and tollgate attributes of each upstream attempt), that no prompt text reached a
span, the trace id in each service's JSON log lines, and exemplars that point at it.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.deploy.chart import missing
from tests.tracing.backend import PHOENIX_BIN, run_in_netns

pytestmark = [pytest.mark.slow, pytest.mark.integration]

HEX32 = re.compile(r"^[0-9a-f]{32}$")
HTTP_SPAN = "POST /v1/chat/completions"
ROUTE = "tollgate.router.v1.Router/Route"
LOOKUP = "tollgate.cache.v1.Cache/Lookup"
SERVICE = {"orchestrator": "tollgate-orchestrator", "router": "tollgate-router"}
SERVICE["cache"] = "tollgate-cache"
ATTEMPT_KEYS = (
    "gen_ai.provider.name",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.response.finish_reasons",
    "tollgate.attempt",
    "tollgate.intent",
    "tollgate.tier",
    "tollgate.chain",
    "tollgate.cost_usd",
)
# A failed attempt has no answer: no response model, usage, finish reasons or cost.
FAILED_ATTEMPT_KEYS = (
    "gen_ai.provider.name",
    "gen_ai.request.model",
    "tollgate.attempt",
    "tollgate.intent",
    "tollgate.tier",
    "tollgate.chain",
    "error.type",
)
DRIVE_TIMEOUT = 240.0


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    if not PHOENIX_BIN.exists():
        missing("traces against Phoenix", f"{PHOENIX_BIN} is missing; run `make tools`")
    out = tmp_path_factory.mktemp("traces") / "report.json"
    done = run_in_netns(
        [sys.executable, "-m", "tests.tracing.drive", "--out", str(out)], DRIVE_TIMEOUT
    )
    assert out.exists(), f"the driver wrote no report (rc {done.returncode}):\n{done.stderr}"
    data: dict[str, Any] = json.loads(out.read_text())
    assert done.returncode == 0, f"the driver failed:\n{data.get('error')}\n{done.stderr[-3000:]}"
    yield data


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in report["requests"]}


def one(spans: list[dict[str, Any]], **match: Any) -> list[dict[str, Any]]:
    return [s for s in spans if all(s.get(k) == v for k, v in match.items())]


def children(spans: list[dict[str, Any]], parent: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in spans if s["parent_id"] == parent["span_id"]]


def describe(spans: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"  {s['kind']} {s['service']} {s['name']} {s['span_id']} <- {s['parent_id']}"
        for s in spans
    )


def test_every_request_answered_with_a_trace_id(report: dict[str, Any]) -> None:
    assert [r["name"] for r in report["requests"]] == [
        "plain",
        "auto",
        "stream",
        "traceparent",
        "faulted",
    ]
    for r in report["requests"]:
        assert r["status"] == 200 and r.get("answered"), (r["name"], r.get("error"))
        header = r["headers"].get("x-tollgate-trace-id", "")
        assert HEX32.match(header), (r["name"], r["headers"])
    assert len({r["trace_id"] for r in report["requests"]}) == len(report["requests"])


def test_incoming_traceparent_is_continued(report: dict[str, Any]) -> None:
    r = by_name(report)["traceparent"]
    assert r["headers"].get("x-tollgate-trace-id") == r["sent_trace_id"]
    servers = one(r["spans"], name=HTTP_SPAN, kind="SERVER")
    assert len(servers) == 1, describe(r["spans"])
    assert servers[0]["parent_id"] == r["sent_span_id"]


@pytest.mark.parametrize("name", ["plain", "auto", "stream", "traceparent", "faulted"])
def test_span_tree(report: dict[str, Any], name: str) -> None:
    r = by_name(report)[name]
    spans = r["spans"]
    assert spans, f"Phoenix has no span of trace {r['trace_id']}"
    tree = describe(spans)
    assert all(s["trace_id"] == r["trace_id"] for s in spans)
    # The HTTP server span of the orchestrator is the root (or the sent span's child)...
    (server,) = one(spans, name=HTTP_SPAN, kind="SERVER", service=SERVICE["orchestrator"])
    assert server["parent_id"] == r.get("sent_span_id"), tree
    # ...and every other span of the trace descends from it.
    ids = {s["span_id"]: s for s in spans}
    for s in spans:
        hop = s
        while hop is not server:
            assert hop["parent_id"] in ids, f"{s['name']} is not under the server span\n{tree}"
            hop = ids[hop["parent_id"]]
    for method, service, required in (
        (ROUTE, "router", True),
        (LOOKUP, "cache", bool(r.get("cacheable"))),
    ):
        clients = one(spans, name=method, kind="CLIENT", service=SERVICE["orchestrator"])
        if not required and not clients:
            continue
        assert len(clients) == 1, f"{method}: one CLIENT span\n{tree}"
        served = [
            c
            for c in children(spans, clients[0])
            if c["name"] == method and c["kind"] == "SERVER" and c["service"] == SERVICE[service]
        ]
        assert len(served) == 1, f"{method}: its SERVER child from the {service}\n{tree}"
    attempts = sorted(
        (s for s in spans if s["name"].startswith("chat ")),
        key=lambda s: s["attributes"].get("tollgate.attempt", 0),
    )
    assert attempts, f"no upstream attempt span\n{tree}"
    for n, span in enumerate(attempts, 1):
        attrs = span["attributes"]
        assert span["kind"] == "CLIENT", tree
        assert span["parent_id"] == server["span_id"], tree
        assert attrs.get("gen_ai.operation.name") == "chat"
        assert span["name"] == f"chat {attrs.get('gen_ai.request.model')}"
        failed = span["status"] == "ERROR"
        keys = FAILED_ATTEMPT_KEYS if failed else ATTEMPT_KEYS
        lacking = [k for k in keys if k not in attrs]
        assert not lacking, f"attempt {n} lacks {lacking}: {attrs}"
        assert attrs["tollgate.attempt"] == n, [a["attributes"] for a in attempts]
    last = attempts[-1]["attributes"]
    assert last["gen_ai.response.model"], last
    assert last["gen_ai.usage.input_tokens"] > 0 and last["gen_ai.usage.output_tokens"] > 0
    assert last["gen_ai.response.finish_reasons"], last
    if name != "faulted":
        assert len(attempts) == 1, tree


def test_failed_attempt_then_retry_or_fallback(report: dict[str, Any]) -> None:
    r = by_name(report)["faulted"]
    attempts = sorted(
        (s for s in r["spans"] if s["name"].startswith("chat ")),
        key=lambda s: s["attributes"].get("tollgate.attempt", 0),
    )
    assert len(attempts) >= 2, describe(r["spans"])
    first, *later = attempts
    assert first["status"] == "ERROR" and first["attributes"].get("error.type"), first
    for span in later:
        attrs = span["attributes"]
        assert attrs.get("tollgate.retry_reason") or attrs.get("tollgate.fallback_reason"), attrs
    assert attempts[-1]["status"] != "ERROR"


def test_no_prompt_text_on_any_span(report: dict[str, Any]) -> None:
    marker = report["marker"]
    spans = [s for r in report["requests"] for s in r["spans"]]
    spans += report["spans_without_request"]
    assert report["span_count"] == len(spans)
    leaks = [
        (s["name"], key)
        for s in spans
        for key, value in s["attributes"].items()
        if marker in str(value)
    ]
    assert not leaks, leaks


def test_no_request_span_outside_its_trace(report: dict[str, Any]) -> None:
    """What no request's trace holds is background work: health checks, policy polls."""
    stray = [
        s["name"]
        for s in report["spans_without_request"]
        if s["name"] in (HTTP_SPAN, ROUTE, LOOKUP) or s["name"].startswith("chat ")
    ]
    assert not stray, stray


@pytest.mark.parametrize("service", ["orchestrator", "router", "cache"])
def test_trace_id_in_each_services_logs(report: dict[str, Any], service: str) -> None:
    for r in report["requests"]:
        lines = r["logs"][service]
        assert any(e.get("trace_sampled") is True and e.get("span_id") for e in lines), (
            f"{r['name']}: no {service} log line with trace_id {r['trace_id']} "
            f"(the {service} wrote {report['log_line_counts'][service]} JSON lines in all)"
        )


@pytest.mark.parametrize(
    "metric", ["tollgate_http_request_duration_seconds", "tollgate_llm_upstream_duration_seconds"]
)
def test_exemplars_point_at_the_traces(report: dict[str, Any], metric: str) -> None:
    trace_ids = {r["trace_id"] for r in report["requests"]}
    found = report["exemplars"][metric]
    linked = [e for e in found if e.get("labels", {}).get("trace_id") in trace_ids]
    assert linked, f"{len(found)} exemplars of {metric}, none with a request's trace id"
    assert all(re.match(r"^[0-9a-f]{16}$", e["labels"].get("span_id", "")) for e in linked)
