"""`make bench-metrics`: the instrumentation's CPU per request, metrics on vs off, in one run.

Two complete stacks run side by side on free ports (``bench.compare``): one as
shipped, one whose processes start with ``bench/metrics_off`` first on PYTHONPATH
(every metric update a no-op, no metric interceptors). wrk drives the cache-miss
path of each in turn, alternating which goes first, and the CPU time that the
gateway's processes (orchestrator, router, cache; not the simulator) spent is read
from /proc before and after. The figure is the median over rounds of CPU per
request, on minus off, and its share of the CPU per request with metrics on.

Usage: python -m bench.metrics_cost [--rounds N] [--seconds S] [--connections C]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc
from prometheus_client import CollectorRegistry

from bench import compare, stats
from tollgate_common.grpc.metrics import MethodMetrics
from tollgate_common.metrics import create_families
from tollgate_common.policy import load_policy
from tollgate_orchestrator.metrics import OrchestratorMetrics
from tools.stack import PYTHONPATH, ROOT

OFF_DIR = ROOT / "bench" / "metrics_off"
GOAL_PERCENT = 5.0


@dataclass(frozen=True)
class MetricsCost:
    rounds: int
    seconds: float
    connections: int
    on_cpu_us: float  # orchestrator + router + cache, per request
    off_cpu_us: float
    on_orch_us: float
    off_orch_us: float
    on_rps: float
    off_rps: float
    orch_calls_us: float = 0.0  # the orchestrator's metric calls per miss request, in process
    # Medians of the per-round differences (on minus off, measured back to back): they
    # cancel the machine's slow drifts that the difference of medians keeps.
    paired_cost_us: float | None = None
    paired_rps_lost_percent: float | None = None

    @property
    def cost_us(self) -> float:
        if self.paired_cost_us is not None:
            return self.paired_cost_us
        return self.on_cpu_us - self.off_cpu_us

    @property
    def cost_percent(self) -> float:
        """The instrumentation's share of the gateway's CPU per request."""
        return stats.share(self.cost_us, self.on_cpu_us)

    @property
    def throughput_lost_percent(self) -> float:
        if self.paired_rps_lost_percent is not None:
            return self.paired_rps_lost_percent
        return stats.share(self.off_rps - self.on_rps, self.off_rps)

    @property
    def met(self) -> bool:
        return self.cost_percent <= GOAL_PERCENT


def orchestrator_calls_us(n: int = 20_000) -> float:
    """Microseconds of the metric calls the orchestrator makes for one cache-miss
    request (HTTP middleware, engine, three gRPC client calls), timed in process
    against a real registry: a figure below the process comparison's noise floor."""
    fam = create_families("orchestrator", CollectorRegistry())
    policy = load_policy()
    m = OrchestratorMetrics(
        fam,
        models={name: e.provider for name, e in policy.models.items()},
        tenants=["dev"],
        routes=["/v1/chat/completions"],
        budget_store=False,
    )
    rpcs = [
        MethodMetrics(fam, "client", "unary", f"/tollgate.{s}.v1.{s.title()}/{meth}")
        for s, meth in (("router", "Route"), ("cache", "Lookup"), ("cache", "Store"))
    ]
    code = grpc.StatusCode.OK
    clock = time.perf_counter

    def rpc(r: MethodMetrics) -> None:
        r.started.inc()
        r.sent.inc()
        t = clock()
        r.received.inc()
        r.handling.observe(clock() - t)
        r.handled[code].inc()

    def one() -> None:
        t0 = clock()
        m.http_in_flight.inc()
        m.llm_in_flight.inc()
        rpc(rpcs[0])
        m.set_up("router", True)
        rpc(rpcs[1])
        m.set_up("cache", True)
        m.cache_results("miss", "chat").inc()
        m.upstream_duration(m.provider("openai"), m.model("gpt-4o-mini")).observe(0.001)
        labels = m.labels("openai", "gpt-4o-mini", "chat", "dev", "chat")
        m.usage(labels, 40, 0, 16, 0, 0.00001)
        m.llm_requests(*labels, "success").inc()
        m.genai("openai", "gpt-4o-mini", "gpt-4o-mini", 0.002, "", 40, 16)
        m.overhead("miss", "chat").observe(0.001)
        m.llm_in_flight.dec()
        rpc(rpcs[2])
        m.http("POST", "/v1/chat/completions", 200, clock() - t0, 150, 800)
        m.http_in_flight.dec()

    for _ in range(1000):
        one()
    start = time.process_time()
    for _ in range(n):
        one()
    return (time.process_time() - start) / n * 1e6


def off_env() -> dict[str, str]:
    return {"PYTHONPATH": f"{OFF_DIR}:{PYTHONPATH}:{ROOT}"}


def summarize(
    on: compare.Variant, off: compare.Variant, seconds: float, conns: int, calls_us: float = 0.0
) -> MetricsCost:
    return MetricsCost(
        rounds=min(len(on.samples), len(off.samples)),
        seconds=seconds,
        connections=conns,
        on_cpu_us=on.median("gateway_us"),
        off_cpu_us=off.median("gateway_us"),
        on_orch_us=on.median("cpu:orchestrator"),
        off_orch_us=off.median("cpu:orchestrator"),
        on_rps=on.median("rps"),
        off_rps=off.median("rps"),
        orch_calls_us=calls_us,
        paired_cost_us=compare.paired(on, off),
        paired_rps_lost_percent=compare.paired_rps_lost(on, off),
    )


def measure(log_dir: Path, rounds: int = 5, seconds: float = 5, conns: int = 8) -> MetricsCost:
    on, off = compare.Variant("metrics on"), compare.Variant("metrics off", off_env())
    compare.run([on, off], log_dir, "miss", rounds, seconds, conns)
    return summarize(on, off, seconds, conns, orchestrator_calls_us())


def render(m: MetricsCost) -> str:
    return "\n".join(
        [
            f"Cache-miss path, {m.connections} connections, medians of {m.rounds} alternating"
            f" rounds of {m.seconds:g} s.",
            "",
            "| | metrics on | metrics off | difference (median of the rounds' differences) |",
            "|---|---|---|---|",
            f"| gateway CPU per request (orchestrator + router + cache) | {m.on_cpu_us:.0f} µs"
            f" | {m.off_cpu_us:.0f} µs | {m.cost_us:+.0f} µs ({m.cost_percent:.1f} %) |",
            f"| orchestrator CPU per request | {m.on_orch_us:.0f} µs | {m.off_orch_us:.0f} µs"
            f" | {m.on_orch_us - m.off_orch_us:+.0f} µs (of the medians) |",
            f"| throughput | {m.on_rps:.0f} req/s | {m.off_rps:.0f} req/s"
            f" | {-m.throughput_lost_percent:+.1f} % |",
            "",
            f"In process, the orchestrator's metric calls for one miss request (HTTP,"
            f" engine, three gRPC client calls) take {m.orch_calls_us:.0f} µs:"
            f" {stats.share(m.orch_calls_us, m.on_orch_us):.1f} % of its CPU per request."
            " Differences within a few percent above are run-to-run noise.",
            "",
            f"Goal: instrumentation at most {GOAL_PERCENT:g} % of the gateway's CPU per request:"
            f" **{m.cost_percent:.1f} %, {'met' if m.met else 'not met'}**.",
        ]
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    compare.round_args(ap, rounds=9, seconds=5, json_name="metrics-cost.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-metrics-") as tmp:
        m = measure(Path(tmp), args.rounds, args.seconds, args.connections)
    print(render(m))
    compare.write_json(args.json, {**asdict(m), "cost_percent": m.cost_percent})
    return 0


if __name__ == "__main__":
    sys.exit(main())
