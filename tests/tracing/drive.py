"""The end-to-end trace run, inside a private network namespace (test_traces_e2e.py runs it
as ``python -m tests.tracing.drive --out report.json`` through ``run_in_netns``).

Starts Phoenix (tools/otlp_sink.py's ``OtlpSink`` in front, see backend.py), a Prometheus
with exemplar storage scraping the three services every second, and a tollgate stack (simulator
upstream) that exports traces to it; sends five chat requests with the openai SDK (named
model, ``auto``, a stream, one carrying a W3C ``traceparent``, one whose first upstream
attempt fails); then writes to ``--out`` per request its response headers, its spans as
Phoenix has them, the services' JSON log lines with its trace id, and the exemplars of
the HTTP and upstream duration histograms. It asserts nothing: the test does.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deploy.observe import promstack
from tests.tracing.backend import Phoenix, in_private_netns, interfaces
from tools.otlp_sink import OtlpSink
from tools.stack import DEV_KEY, Proc, Stack, free_port

MODEL = "gpt-4o-mini"
FAULT_MODEL = "gpt-4.1-mini"  # its own model, so the fault meets no other request
SERVICES = ("orchestrator", "router", "cache")
HISTOGRAMS = ("tollgate_http_request_duration_seconds", "tollgate_llm_upstream_duration_seconds")
SPANS_TIMEOUT = 30.0
EXEMPLARS_TIMEOUT = 20.0
T0 = time.monotonic()


def note(msg: str) -> None:
    print(f"[drive {time.monotonic() - T0:5.1f}s] {msg}", file=sys.stderr, flush=True)


def get_json(url: str, timeout: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def post_json(url: str, body: Any) -> Any:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read() or b"{}")


def poll(what: str, probe: Callable[[], bool], timeout: float, every: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if probe():
            return True
        if time.monotonic() > deadline:
            note(f"gave up waiting for {what} after {timeout:g} s")
            return False
        time.sleep(every)


def otel_env(endpoint: str, project: str, log_level: str) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",
        "OTEL_RESOURCE_ATTRIBUTES": f"openinference.project.name={project}",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "TOLLGATE_LOG_LEVEL": log_level,
    }


def start_prometheus(stack: Stack, work: Path) -> tuple[Proc, str]:
    port = free_port()
    cfg = promstack.write_yaml(
        work / "prometheus.yml",
        promstack.render_prometheus(
            {
                "tollgate-orchestrator": f"127.0.0.1:{stack.ports.orch_metrics}",
                "tollgate-router": f"127.0.0.1:{stack.ports.router_metrics}",
                "tollgate-cache": f"127.0.0.1:{stack.ports.cache_metrics}",
            },
            alertmanager=f"127.0.0.1:{free_port()}",  # none runs: no rules, no alerts
            rule_files=(),
            interval="1s",
        ),
    )
    proc = promstack.start_prometheus(cfg, port, work / "tsdb", work, exemplars=True)
    return proc, f"http://127.0.0.1:{port}"


def requests_plan(marker: str) -> list[dict[str, Any]]:
    """The five requests; every prompt is unique (no cache hit hides an upstream call)
    and carries ``marker``, which no span attribute may contain."""
    sent_trace, sent_span = secrets.token_hex(16), secrets.token_hex(8)

    def prompt(name: str) -> str:
        return f"{marker} {name}: tell me one fact about lighthouses."

    return [
        {"name": "plain", "model": MODEL, "prompt": prompt("plain"), "cacheable": True},
        {"name": "auto", "model": "auto", "prompt": prompt("auto"), "cacheable": True},
        {"name": "stream", "model": MODEL, "prompt": prompt("stream"), "stream": True},
        {
            "name": "traceparent",
            "model": MODEL,
            "prompt": prompt("traceparent"),
            "cacheable": True,
            "sent_trace_id": sent_trace,
            "sent_span_id": sent_span,
            "headers": {"traceparent": f"00-{sent_trace}-{sent_span}-01"},
        },
        {
            "name": "faulted",
            "model": FAULT_MODEL,
            "prompt": prompt("faulted"),
            "cacheable": True,
            # The first upstream attempt answers 500: the orchestrator retries (or falls back).
            "fault": {"model": FAULT_MODEL, "status": 500, "count": 1},
        },
    ]


def send(stack: Stack, req: dict[str, Any]) -> dict[str, Any]:
    import openai

    client = openai.OpenAI(base_url=stack.base_url + "/v1", api_key=DEV_KEY, max_retries=0)
    if req.get("fault"):
        post_json(stack.sim_url + "/_sim/faults", [req["fault"]])
    out: dict[str, Any] = {k: v for k, v in req.items() if k != "prompt"}
    kwargs: dict[str, Any] = {
        "model": req["model"],
        "messages": [{"role": "user", "content": req["prompt"]}],
        "temperature": 0,
        "extra_headers": req.get("headers") or {},
        "timeout": 30,
    }
    started = time.time()
    try:
        if req.get("stream"):
            kwargs["stream_options"] = {"include_usage": True}
            raw = client.chat.completions.with_raw_response.create(stream=True, **kwargs)
            chunks = list(raw.parse())
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        else:
            raw = client.chat.completions.with_raw_response.create(**kwargs)
            text = raw.parse().choices[0].message.content or ""
        out.update(status=raw.status_code, headers=dict(raw.headers), answered=bool(text))
    except openai.APIStatusError as exc:
        out.update(status=exc.status_code, headers=dict(exc.response.headers), error=str(exc))
    except Exception as exc:
        out.update(status=0, headers={}, error=repr(exc))
    out["seconds"] = time.time() - started
    out["trace_id"] = out["headers"].get("x-tollgate-trace-id") or req.get("sent_trace_id")
    note(f"{req['name']}: {out['status']} trace {out['trace_id']}")
    return out


def read_logs(stack: Stack) -> dict[str, list[dict[str, Any]]]:
    """Every JSON object line of each service's log (other lines are skipped)."""
    logs: dict[str, list[dict[str, Any]]] = {}
    for name in SERVICES:
        lines = []
        path = stack.log_dir / f"{name}.log"
        for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
            if line.startswith("{"):
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if isinstance(entry, dict):
                    lines.append(entry)
        logs[name] = lines
    return logs


def exemplars(prom: str, metric: str, start: float, end: float) -> list[dict[str, Any]]:
    q = urllib.parse.urlencode({"query": f"{metric}_bucket", "start": start, "end": end})
    body = get_json(f"{prom}/api/v1/query_exemplars?{q}")
    return [
        {"series": series.get("seriesLabels", {}), **ex}
        for series in body.get("data") or []
        for ex in series.get("exemplars") or []
    ]


def complete(spans: list[dict[str, Any]]) -> bool:
    """A trace looks whole: the HTTP server span, a routed call and an upstream attempt."""
    names = [s["name"] for s in spans]
    return (
        any(n.startswith("POST ") for n in names)
        and names.count("tollgate.router.v1.Router/Route") >= 2
        and any(n.startswith("chat ") for n in names)
    )


def run(report: dict[str, Any], work: Path, log_level: str = "DEBUG") -> None:
    """Fill ``report`` (in place, so that a failure half way still leaves what was seen)."""
    project = f"tollgate-e2e-{secrets.token_hex(4)}"
    marker = f"PROMPT-{secrets.token_hex(6)}"
    report.update(project=project, marker=marker, interfaces=interfaces())
    phoenix = Phoenix(work / "phoenix")
    stack: Stack | None = None
    prom: Proc | None = None
    # Phoenix takes 20-60 s to be healthy: the stack and Prometheus start meanwhile. Spans
    # sent before it answers are retried by the SDK's exporter (the tee passes UNAVAILABLE on).
    phoenix_error: list[BaseException] = []

    def boot_phoenix() -> None:
        try:
            phoenix.start()
        except BaseException as exc:
            phoenix_error.append(exc)

    booting = threading.Thread(target=boot_phoenix, daemon=True)
    booting.start()
    try:
        tee = OtlpSink(forward=f"127.0.0.1:{phoenix.grpc_port}")
        with tee as sink:
            stack = Stack(log_dir=work / "stack", env=otel_env(tee.endpoint, project, log_level))
            prom, prom_url = start_prometheus(stack, work)
            note("starting the tollgate stack")
            stack.start()
            note("stack up; waiting for Phoenix")
            booting.join(phoenix.ready_timeout + 10)
            if phoenix_error:
                raise phoenix_error[0]
            report["phoenix_startup_seconds"] = phoenix.startup_seconds
            start = time.time()
            results = [send(stack, req) for req in requests_plan(marker)]
            trace_ids = {r["trace_id"] for r in results if r.get("trace_id")}

            def spans_in() -> list[dict[str, Any]]:
                return phoenix.spans(project, sink.kinds())

            def all_there() -> bool:
                spans = spans_in()
                return bool(trace_ids) and all(
                    complete([s for s in spans if s["trace_id"] == t]) for t in trace_ids
                )

            note(f"waiting for the spans of {len(trace_ids)} traces in Phoenix")
            report["spans_complete"] = poll("the spans in Phoenix", all_there, SPANS_TIMEOUT)
            time.sleep(1.0)  # stragglers: the last batch of each process (200 ms delay)
            spans = spans_in()
            logs = read_logs(stack)

            def exemplars_in() -> dict[str, list[dict[str, Any]]]:
                return {m: exemplars(prom_url, m, start - 5, time.time() + 5) for m in HISTOGRAMS}

            def have_exemplars() -> bool:
                found = exemplars_in()
                return all(
                    any(e.get("labels", {}).get("trace_id") in trace_ids for e in found[m])
                    for m in HISTOGRAMS
                )

            note("waiting for exemplars in Prometheus")
            report["exemplars_found"] = poll("exemplars", have_exemplars, EXEMPLARS_TIMEOUT)
            report["exemplars"] = exemplars_in()
            for r in results:
                t = r.get("trace_id")
                r["spans"] = [s for s in spans if t and s["trace_id"] == t]
                r["logs"] = {n: [e for e in logs[n] if t and e.get("trace_id") == t] for n in logs}
            report["requests"] = results
            report["span_count"] = len(spans)
            report["spans_without_request"] = [s for s in spans if s["trace_id"] not in trace_ids]
            report["log_line_counts"] = {n: len(v) for n, v in logs.items()}
            report["tee"] = {"exports": sink.exports, "errors": sink.errors[-10:]}
    finally:
        if stack is not None:
            report["log_tails"] = {n: p.log_tail(15) for n, p in stack.procs.items()}
            stack.stop()
        if prom is not None:
            prom.stop()
        booting.join(phoenix.ready_timeout + 10)
        phoenix.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, required=True)
    # DEBUG: the router and the cache log a line per call only at DEBUG.
    ap.add_argument("--log-level", default="DEBUG", help="TOLLGATE_LOG_LEVEL of every process")
    args = ap.parse_args(argv)
    if not in_private_netns():
        print(f"not in a private netns (interfaces: {interfaces()})", file=sys.stderr)
        return 2
    report: dict[str, Any] = {}
    rc = 0
    try:
        with tempfile.TemporaryDirectory(prefix="trace-e2e-") as tmp:
            run(report, Path(tmp), args.log_level)
    except Exception as exc:
        report["error"] = "".join(traceback.format_exception(exc))
        note(f"failed: {exc!r}")
        rc = 1
    report["wall_seconds"] = time.monotonic() - T0
    args.out.write_text(json.dumps(report, indent=1, default=str))
    note(f"report written to {args.out}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
