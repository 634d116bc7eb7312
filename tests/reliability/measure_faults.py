"""Measure what each fault costs a user, in latency, and which metric moves. By hand:

    PYTHONPATH=services:proto/gen/python:. .venv/bin/python tests/reliability/measure_faults.py

Starts a local stack on free ports (simulator with instant models, so the figures are
the gateway's own cost plus the fault's), then for every fault in docs/reliability.md
starts a fresh orchestrator configured for it, injects the fault, times ``REPS``
requests, and prints one Markdown row: what the client saw, the first / median / max
latency, and the delta of the metric that shows the fault. Not a test: no assertions,
figures only (they vary with the machine).
"""

from __future__ import annotations

import contextlib
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import orjson

from tests.reliability.common import delta, fault, get, reset_sim, scrape, sim
from tools.stack import DEV_KEY, Stack, free_port, spawn, wait_http

REPS = 5
AUTH = {"authorization": f"Bearer {DEV_KEY}"}
BUDGET_ONE = orjson.dumps([{"tenant": "dev", "period": "day", "limit_usd": 100}]).decode()
TINY_KEY = "sk-tiny-" + "0" * 28  # at least 32 characters (L-9)


@dataclass
class Row:
    fault: str
    seen: list[str] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    metric: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    moved: float = 0.0
    note: str = ""

    def line(self) -> str:
        ms = [t * 1000 for t in self.times]
        seen = ", ".join(sorted(set(self.seen)))
        first, med, top = (ms[0], statistics.median(ms), max(ms)) if ms else (0, 0, 0)
        sel = ",".join(f'{k}="{v}"' for k, v in self.labels.items())
        name = f"{self.metric}{{{sel}}}" if sel else self.metric
        metric = f"`{name}` +{self.moved:g}" if self.metric else ""
        return f"| {self.fault} | {seen} | {first:.0f} | {med:.0f} | {top:.0f} | {metric} |" + (
            f" {self.note}" if self.note else ""
        )


class Bench:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.client = httpx2.Client(timeout=60)
        self.n = 0

    @contextlib.contextmanager
    def orch(self, **env: str) -> Iterator[str]:
        """A fresh orchestrator for one scenario: breakers and budgets start clean."""
        self.n += 1
        name, port = f"orch{self.n}", free_port()
        env = {"TOLLGATE_ORCHESTRATOR_PROBE_INTERVAL_SECONDS": "0.2", **env}
        self.stack.start_orchestrator(name, port, free_port(), **env)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            self.stack.procs.pop(name).stop()

    def chat(
        self, base: str, model: str = "gpt-4o-mini", key: str = DEV_KEY, **extra: Any
    ) -> tuple[float, str]:
        self.n += 1
        body = {
            "model": model,
            "messages": [{"role": "user", "content": f"Question number {self.n}, please."}],
            **extra,
        }
        t0 = time.perf_counter()
        r = self.client.post(
            base + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}
        )
        took = time.perf_counter() - t0
        return took, describe(r)

    def row(
        self,
        name: str,
        base: str,
        run: Callable[[], tuple[float, str]],
        metric: str = "",
        reps: int = REPS,
        note: str = "",
        **labels: str,
    ) -> Row:
        before = scrape(self.stack.metrics_url(base))
        row = Row(name, metric=metric, labels=labels, note=note)
        for _ in range(reps):
            took, seen = run()
            row.times.append(took)
            row.seen.append(seen)
        if metric:
            row.moved = delta(before, scrape(self.stack.metrics_url(base)), metric, **labels)
        print(row.line(), flush=True)
        return row


def describe(r: httpx2.Response) -> str:
    if r.status_code != 200:
        try:
            err = r.json()["error"]
            code = err["code"] or f"param={err['param']}"
        except (ValueError, KeyError, TypeError):
            code = "?"
        return f"{r.status_code} {code}"
    if r.headers.get("content-type", "").startswith("text/event-stream"):
        return "200 stream" + (" +error event" if "[DONE]" not in r.text else "")
    h = r.headers
    tags = [h.get("x-tollgate-model", "")]
    if h.get("x-tollgate-route") == "degraded":
        tags.append("route degraded")
    tags.append(f"cache {h.get('x-tollgate-cache', '')}")
    return "200 " + " ".join(tags)


def redis_server(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(
        ["redis-server", *args, "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    time.sleep(0.3)
    return proc


def upstream_faults(b: Bench) -> None:
    s = b.stack
    with b.orch() as base:
        b.row("none (baseline)", base, lambda: b.chat(base))

        def once(f: dict[str, Any]) -> Callable[[], tuple[float, str]]:
            def run() -> tuple[float, str]:
                fault(s, f)
                return b.chat(base)

            return run

        m = "tollgate_llm_retries_total"
        b.row("upstream 429, Retry-After: 1", base,
              once({"model": "gpt-4o-mini", "status": 429, "retry_after": 1}), m,
              reason="rate_limit")  # fmt: skip
        b.row("upstream 429, no Retry-After", base,
              once({"model": "gpt-4o-mini", "status": 429}), m, reason="rate_limit")  # fmt: skip
        b.row("upstream 500 once", base, once({"model": "gpt-4o-mini", "status": 500}), m,
              reason="server_error")  # fmt: skip
        b.row("upstream 500 twice (fallback)", base,
              once({"model": "gpt-4o-mini", "status": 500, "count": 2}),
              "tollgate_llm_fallbacks_total", reps=3)  # fmt: skip
        reset_sim(s)
    with b.orch() as base:

        def always() -> tuple[float, str]:
            fault(s, {"model": "*", "status": 503, "count": 4})
            return b.chat(base)

        b.row("upstream 5xx on every attempt", base, always,
              "tollgate_llm_upstream_errors_total", reps=3, error_class="server_error")  # fmt: skip
        reset_sim(s)
    with b.orch(TOLLGATE_ORCHESTRATOR_UPSTREAM_TIMEOUT_SECONDS="1") as base:

        def slow() -> tuple[float, str]:
            fault(s, {"model": "gpt-4o-mini", "status": 200, "delay_ms": 3000})
            return b.chat(base)

        b.row("upstream timeout (1 s per attempt)", base, slow,
              "tollgate_llm_upstream_errors_total", reps=3, error_class="timeout")  # fmt: skip
        reset_sim(s)
    with b.orch() as base:

        def limited() -> tuple[float, str]:
            fault(s, {"model": "*", "status": 429, "count": 4, "retry_after": 0})
            return b.chat(base)

        b.row("upstream 429 on every attempt", base, limited,
              "tollgate_http_requests_total", reps=3, status_code="429")  # fmt: skip
        reset_sim(s)
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with b.orch(TOLLGATE_ORCHESTRATOR_UPSTREAM_BASE_URL=dead) as base:
        b.row("upstream connection refused", base, lambda: b.chat(base),
              "tollgate_llm_upstream_errors_total", reps=8, error_class="connection",
              note="the circuits open after 5 failures: later requests fail at once")  # fmt: skip


def stream_faults(b: Bench) -> None:
    s = b.stack
    with b.orch() as base:

        def broken() -> tuple[float, str]:
            fault(s, {"model": "gpt-4o-mini", "mid_stream_error": True, "after_chunks": 2})
            return b.chat(base, stream=True)

        b.row("mid-stream failure", base, broken, "tollgate_llm_streams_total", outcome="error")

        def leave() -> tuple[float, str]:
            # gpt-4o streams at 40 ms a token here; leave after 2 chunks and time how long
            # until the upstream sees its connection close (its tokens stop being spent).
            gone = sim(s, "/_sim/stats")["stream_disconnects"]
            body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "a story"}]}
            with b.client.stream(
                "POST", base + "/v1/chat/completions", json={**body, "stream": True},
                headers=AUTH,
            ) as r:  # fmt: skip
                for i, _ in enumerate(r.iter_bytes()):
                    if i == 1:
                        break
            t0 = time.perf_counter()
            while sim(s, "/_sim/stats")["stream_disconnects"] == gone:
                time.sleep(0.005)
            return time.perf_counter() - t0, "upstream cancelled"

        b.row("client disconnect (time to cancel upstream)", base, leave,
              "tollgate_llm_streams_total", outcome="client_disconnect")  # fmt: skip


def breaker(b: Bench) -> None:
    s = b.stack
    env = {
        "TOLLGATE_ORCHESTRATOR_BREAKER_CONSECUTIVE_FAILURES": "2",
        "TOLLGATE_ORCHESTRATOR_BREAKER_COOLDOWN_SECONDS": "60",
        "TOLLGATE_ORCHESTRATOR_RETRY_MAX_ATTEMPTS": "1",
    }
    with b.orch(**env) as base:
        fault(s, {"model": "gpt-4.1-nano", "status": 500, "count": 2})
        b.chat(base, "gpt-4.1-nano")
        b.chat(base, "gpt-4.1-nano")  # two failures: gpt-4.1-nano's circuit is open
        b.row("circuit open on the primary", base, lambda: b.chat(base, "gpt-4.1-nano"),
              "tollgate_llm_upstream_errors_total", error_class="circuit_open")  # fmt: skip
        fault(s, {"model": "*", "status": 500, "count": 8})
        for _ in range(4):
            b.chat(base, "gpt-4o-mini")  # open the rest of the chain too
        reset_sim(s)
        b.row("every circuit of the chain open", base, lambda: b.chat(base, "gpt-4.1-nano"),
              "tollgate_http_requests_total", status_code="503")  # fmt: skip


def dependencies(b: Bench) -> None:
    s = b.stack
    cacheable: dict[str, Any] = {"temperature": 0}
    for dep, metric_dep in (("router", "router"), ("cache", "cache")):
        with b.orch() as base:
            proc = s.procs[dep]
            proc.signal(signal.SIGSTOP)
            try:
                b.row(f"{dep} frozen (slow)", base, lambda: b.chat(base, "auto", **cacheable),
                      "tollgate_degraded_total", reps=8, dependency=metric_dep,
                      note="first requests wait the deadline; then the breaker skips")  # fmt: skip
            finally:
                proc.signal(signal.SIGCONT)
        with b.orch() as base:
            proc = s.procs[dep]
            proc.signal(signal.SIGKILL)
            proc.popen.wait(5)
            try:
                b.row(f"{dep} down (refused)", base, lambda: b.chat(base, "auto", **cacheable),
                      "tollgate_degraded_total", reps=8, dependency=metric_dep)  # fmt: skip
            finally:
                s.start_router() if dep == "router" else s.start_cache()


def redis(b: Bench, workdir: Path) -> None:
    s = b.stack
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    server = redis_server(port, workdir)
    cache_port, cache_metrics = free_port(), free_port()
    env = dict(s._env({}))
    env.update(
        TOLLGATE_CACHE_GRPC_PORT=str(cache_port),
        TOLLGATE_CACHE_METRICS_PORT=str(cache_metrics),
        TOLLGATE_CACHE_GRPC_CALLERS_FILE=str(s.callers_file),
        TOLLGATE_CACHE_BACKEND="redis",
        TOLLGATE_CACHE_REDIS_URL=url,
    )
    cache = spawn("cache-redis", [sys.executable, "-m", "tollgate_cache"], env, s.log_dir)
    wait_http(f"http://127.0.0.1:{cache_metrics}/metrics", cache)
    redis_env = {
        "TOLLGATE_ORCHESTRATOR_CACHE_ADDR": f"127.0.0.1:{cache_port}",
        "TOLLGATE_ORCHESTRATOR_BUDGET_REDIS_URL": url,
        "TOLLGATE_ORCHESTRATOR_BUDGETS": BUDGET_ONE,
        "TOLLGATE_ORCHESTRATOR_BUDGET_UNCHECKED_POLICY": "allow",
    }
    try:
        for how in ("frozen", "refused"):
            with b.orch(**redis_env) as base:
                b.chat(base, temperature=0)
                if how == "frozen":
                    server.send_signal(signal.SIGSTOP)
                else:
                    server.kill()
                    server.wait(5)
                b.row(f"Redis {how} (cache backend + budgets)", base,
                      lambda: b.chat(base, temperature=0), "tollgate_budget_actions_total",
                      reps=8, action="unchecked")  # fmt: skip
                if how == "frozen":
                    server.send_signal(signal.SIGCONT)
        dead = f"redis://127.0.0.1:{free_port()}/0"
        with b.orch(
            TOLLGATE_ORCHESTRATOR_BUDGET_REDIS_URL=dead,
            TOLLGATE_ORCHESTRATOR_BUDGETS=BUDGET_ONE,
            TOLLGATE_ORCHESTRATOR_BUDGET_UNCHECKED_POLICY="refuse",
        ) as base:
            b.row("budget store down, policy refuse", base, lambda: b.chat(base),
                  "tollgate_budget_actions_total", action="unchecked")  # fmt: skip
    finally:
        server.send_signal(signal.SIGCONT)
        server.kill()
        cache.stop()


def limits(b: Bench) -> None:
    s = b.stack
    budgets = orjson.dumps(
        [{"tenant": "tiny", "period": "day", "limit_usd": 0.000001, "action": "reject"}]
    ).decode()
    with b.orch(
        TOLLGATE_ORCHESTRATOR_API_KEYS=f"dev:{DEV_KEY},tiny:{TINY_KEY}",
        TOLLGATE_ORCHESTRATOR_BUDGETS=budgets,
    ) as base:
        b.chat(base, key=TINY_KEY)  # spends the budget
        b.row("over budget (reject)", base, lambda: b.chat(base, key=TINY_KEY),
              "tollgate_budget_actions_total", action="reject")  # fmt: skip
    down = budgets.replace('"reject"', '"downgrade"')
    with b.orch(
        TOLLGATE_ORCHESTRATOR_API_KEYS=f"dev:{DEV_KEY},tiny:{TINY_KEY}",
        TOLLGATE_ORCHESTRATOR_BUDGETS=down,
    ) as base:
        b.chat(base, "auto", key=TINY_KEY)
        b.row("over budget (downgrade)", base, lambda: b.chat(base, "auto", key=TINY_KEY),
              "tollgate_budget_actions_total", action="downgrade")  # fmt: skip
    with b.orch(TOLLGATE_ORCHESTRATOR_MAX_CONCURRENCY="1") as base:
        fault(s, {"model": "gpt-4o-mini", "status": 200, "delay_ms": 4000})
        holder = threading.Thread(target=b.chat, args=(base,))
        holder.start()
        time.sleep(0.3)
        b.row("over the concurrency cap", base, lambda: b.chat(base),
              "tollgate_http_rejections_total", reason="concurrency")  # fmt: skip
        holder.join()
    with b.orch() as base:
        huge: dict[str, Any] = {"messages": [{"role": "user", "content": "a" * (2 * 1024 * 1024)}]}
        b.row("oversized body (2 MiB)", base, lambda: b.chat(base, **huge),
              "tollgate_http_rejections_total", reason="size")  # fmt: skip
        b.row("bad input (temperature 7)", base, lambda: b.chat(base, temperature=7),
              "tollgate_http_rejections_total", reason="invalid")  # fmt: skip


def sigterm(b: Bench) -> None:
    s = b.stack
    port = free_port()
    name = "orch-term"
    proc = s.start_orchestrator(name, port, free_port(), TOLLGATE_ORCHESTRATOR_GRACE_SECONDS="10")
    base = f"http://127.0.0.1:{port}"
    fault(s, {"model": "gpt-4o-mini", "status": 200, "delay_ms": 1000})
    out: list[tuple[float, str]] = []
    t = threading.Thread(target=lambda: out.append(b.chat(base)))
    t.start()
    time.sleep(0.2)
    t0 = time.perf_counter()
    proc.signal(signal.SIGTERM)
    unready = None
    while proc.alive():
        if unready is None and get(base + "/readyz", timeout=1)[0] == 503:
            unready = time.perf_counter() - t0
        time.sleep(0.002)
    exited = time.perf_counter() - t0
    t.join()
    s.procs.pop(name)
    print(
        f"| SIGTERM with a 1 s request in flight | in-flight {out[0][1]}, readyz 503 after "
        f"{(unready or 0) * 1000:.0f} ms | {out[0][0] * 1000:.0f} | | | exit after "
        f"{exited * 1000:.0f} ms (code {proc.popen.returncode}) |",
        flush=True,
    )


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="tollgate-faults-") as tmp:
        logs = Path(tmp)
        latency = logs / "latency.yaml"
        latency.write_text(
            '"*": {fixed_ms: 0, per_token_ms: 0}\ngpt-4o: {fixed_ms: 0, per_token_ms: 40}\n'
        )
        stack = Stack(log_dir=logs, sim_env={"TOLLGATE_SIM_LATENCY_FILE": str(latency)})
        stack.start_sim()
        stack.start_router()
        stack.start_cache()
        b = Bench(stack)
        print(f"measured {time.strftime('%Y-%m-%d')}, {REPS} requests per row unless noted; ms")
        print("| fault | what the client saw | first | median | max | metric (delta) |")
        print("|---|---|---|---|---|---|")
        try:
            upstream_faults(b)
            stream_faults(b)
            breaker(b)
            limits(b)
            redis(b, logs)
            dependencies(b)
            sigterm(b)
        finally:
            b.client.close()
            stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
