"""`make bench`: tollgate side by side with the upstream called directly (and LiteLLM).

One run measures, with wrk on loopback against processes started here on free ports:
  direct   the simulator (latency scale 0) called directly: the baseline
  miss     tollgate's cache-miss path: a new prompt per request at temperature 0, so
           router Route + cache Lookup (miss) + upstream + cache Store, the real miss
  hit      tollgate's cache-hit path: one deterministic body, answered by the cache
  bypass   a non-cacheable request (temperature 0.7): router + upstream, no cache
  litellm  with BENCH_PEERS=litellm: the LiteLLM proxy (own venv, 1 worker,
           Prometheus callback on) on the same simulator
at 1 connection (latency) and at 16 and 64 (throughput), in alternating rounds;
then the micro benchmarks (router decision, cache lookup), the metrics cost and the
tracing cost (off, 1 % and 100 % sampling).
Writes .bench/results.md and .json, and the generated part of docs/benchmarks.md.

Env: BENCH_PEERS=litellm, BENCH_SECONDS (per cell, default 4), BENCH_ROUNDS (3),
BENCH_QUICK=1 (one short round, no micro/metrics/tracing: a smoke run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from bench import compare, litellm_peer, metrics_cost, micro, procstat, report, tracing_cost, wrk
from tools.stack import ROOT, Proc, Stack

CONNECTIONS = (1, 16, 64)
DOC = ROOT / "docs" / "benchmarks.md"


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = next(
            int(ln.split()[1])
            for ln in Path("/proc/meminfo").read_text().splitlines()
            if ln.startswith("MemTotal")
        )
        mem = f"{mem_kb / 1024 / 1024:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        mem = "unknown"
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "services"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cores": str(os.cpu_count()),
        "cpu": cpu,
        "memory": mem,
        "python": platform.python_version(),
        "tollgate": commit + (" + uncommitted changes in services/" if dirty else ""),
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def targets(stack: Stack, peer_port: int | None) -> dict[str, tuple[str, wrk.Load]]:
    chat = "/v1/chat/completions"
    t = {
        "direct": (stack.sim_url + chat, wrk.Load(key=stack.sim_key)),
        "miss": (stack.base_url + chat, compare.PATHS["miss"]),
        "hit": (stack.base_url + chat, compare.PATHS["hit"]),
        "bypass": (stack.base_url + chat, compare.PATHS["bypass"]),
    }
    if peer_port is not None:
        url = f"http://127.0.0.1:{peer_port}{chat}"
        t["litellm"] = (url, wrk.Load(temperature="0.7", key=litellm_peer.MASTER_KEY))
    return t


def measure(
    stack: Stack,
    peer: Proc | None,
    peer_port: int | None,
    seconds: float,
    rounds: int,
) -> report.Grid:
    grid = report.Grid()
    tgt = targets(stack, peer_port)
    pids = {n: p.popen.pid for n, p in stack.procs.items()}
    if peer is not None:
        pids["litellm"] = peer.popen.pid
    for url, load in tgt.values():  # warm-up: connections, and the entry the hit path reads
        wrk.run(url, 4, 2, load)
    for i in range(rounds):
        for conns in CONNECTIONS:
            names = list(tgt) if i % 2 == 0 else list(tgt)[::-1]
            for name in names:
                url, load = tgt[name]
                before = {n: procstat.cpu_seconds(p) for n, p in pids.items()}
                r = wrk.run(url, conns, seconds, load)
                after = {n: procstat.cpu_seconds(p) for n, p in pids.items()}
                cpu = {n: (after[n] - before[n]) / max(r.requests, 1) * 1e6 for n in pids}
                grid.add(name, conns, r, cpu)
                print(f"  round {i + 1} {name:8} c={conns:<3} {report.one_line(r)}", flush=True)
    return grid


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--no-doc", action="store_true", help="do not rewrite docs/benchmarks.md")
    args = ap.parse_args()
    quick = os.environ.get("BENCH_QUICK") == "1"
    seconds = float(os.environ.get("BENCH_SECONDS", "2" if quick else "4"))
    rounds = int(os.environ.get("BENCH_ROUNDS", "1" if quick else "3"))
    peers = {p.strip() for p in os.environ.get("BENCH_PEERS", "").split(",") if p.strip()}
    unknown = peers - {"litellm"}
    if unknown:
        print(f"BENCH_PEERS: unknown peer(s) {sorted(unknown)}; known: litellm", file=sys.stderr)
        return 2
    meta = machine()
    out = ROOT / ".bench"
    out.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        log_dir = Path(tmp)
        stack = Stack(log_dir=log_dir / "stack", sim_env={"TOLLGATE_SIM_LATENCY_SCALE": "0"})
        peer: Proc | None = None
        peer_port: int | None = None
        try:
            print("starting the stack (simulator at latency scale 0, log level WARNING)")
            stack.start()
            if "litellm" in peers:
                peer, peer_port = litellm_peer.start(
                    f"{stack.sim_url}/v1", log_dir / "litellm", upstream_key=stack.sim_key
                )
                meta["litellm"] = litellm_peer.LITELLM_VERSION
            print(f"wrk: {rounds} round(s) x {len(CONNECTIONS)} connection counts x {seconds:g} s")
            grid = measure(stack, peer, peer_port, seconds, rounds)
        finally:
            if peer is not None:
                peer.stop()
            stack.stop()
        micros: list[micro.Micro] = []
        cost: metrics_cost.MetricsCost | None = None
        traced: tracing_cost.TracingCost | None = None
        if not quick:
            print("micro benchmarks: router, cache")
            micros = micro.router() + micro.cache()
            print("metrics cost: two stacks, metrics on and off")
            cost = metrics_cost.measure(log_dir / "metrics", rounds=7, seconds=4)
            print("tracing cost: three stacks, tracing off, 1 % and 100 %; miss, then hit")
            traced = tracing_cost.measure(log_dir / "tracing", rounds=7, seconds=4, hit_rounds=5)
    text = report.render(meta, grid, micros, cost, seconds, rounds, traced)
    print()
    print(text)
    (out / "results.md").write_text(text + "\n")
    (out / "results.json").write_text(
        json.dumps(
            {
                "meta": meta,
                "grid": grid.as_json(),
                "micro": [asdict(m) for m in micros],
                "metrics_cost": asdict(cost) if cost else None,
                "tracing_cost": asdict(traced) if traced else None,
            },
            indent=2,
        )
    )
    if not args.no_doc and not quick:
        report.write_doc(DOC, text)
        print(f"\nwrote the generated section of {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
