"""Side-by-side stacks: the same load on each in alternating rounds, CPU read from /proc.

Used by `make bench-metrics` (metrics on vs off) and to measure what a change gains
(``--baseline DIR``: a copy of ``services/`` from before the change). Every stack runs
at the same time on its own free ports, so slow drifts of the machine's load hit
every variant alike; the order alternates each round and the figures are medians.

Usage: python -m bench.compare --baseline /tmp/services-before [--path miss|hit|bypass]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench import procstat, stats, wrk
from tools.stack import DEV_KEY, PYTHONPATH, ROOT, Stack

GATEWAY = ("orchestrator", "router", "cache")
PATHS: Mapping[str, wrk.Load] = {
    "miss": wrk.Load(mode="unique", key=DEV_KEY),  # lookup miss + upstream + store
    "hit": wrk.Load(key=DEV_KEY),  # the same deterministic body: lookup hit
    "bypass": wrk.Load(temperature="0.7", key=DEV_KEY),  # not cacheable: router + upstream
}


@dataclass(frozen=True)
class Sample:
    cpu_us: dict[str, float]  # per process, per request
    rps: float
    p50_ms: float
    p99_ms: float

    @property
    def gateway_us(self) -> float:
        return sum(v for k, v in self.cpu_us.items() if k in GATEWAY)


@dataclass
class Variant:
    name: str
    env: dict[str, str] = field(default_factory=dict)  # for every process of its stack
    samples: list[Sample] = field(default_factory=list)
    latency: list[Sample] = field(default_factory=list)  # 1-connection runs

    def median(self, get: str) -> float:
        pool = self.latency if get in ("p50_ms", "p99_ms") else self.samples
        if get == "gateway_us":
            return stats.median([s.gateway_us for s in pool])
        if get.startswith("cpu:"):
            return stats.median([s.cpu_us[get[4:]] for s in pool])
        return stats.median([float(getattr(s, get)) for s in pool])


def with_services(path: Path | str, extra: Sequence[str] = ()) -> dict[str, str]:
    """Env that runs a stack from another copy of ``services/`` (and optional extra dirs)."""
    parts = [*map(str, extra), str(path), PYTHONPATH.split(":", 1)[1], str(ROOT)]
    return {"PYTHONPATH": ":".join(parts)}


def sample(stack: Stack, load: wrk.Load, seconds: float, connections: int) -> Sample:
    pids = {name: p.popen.pid for name, p in stack.procs.items()}
    before = {n: procstat.cpu_seconds(p) for n, p in pids.items()}
    r = wrk.run(f"{stack.base_url}/v1/chat/completions", connections, seconds, load)
    after = {n: procstat.cpu_seconds(p) for n, p in pids.items()}
    if r.errors or r.requests == 0:
        raise RuntimeError(f"{r.errors} errors in {r.requests} requests")
    cpu = {n: (after[n] - before[n]) / r.requests * 1e6 for n in pids}
    return Sample(cpu, r.rps, r.p50_ms, r.p99_ms)


def run(
    variants: list[Variant],
    log_dir: Path,
    path: str = "miss",
    rounds: int = 5,
    seconds: float = 5,
    connections: int = 8,
    latency_seconds: float = 0,
) -> list[Variant]:
    """Start one stack per variant, then measure them in alternating order."""
    load = PATHS[path]
    stacks: list[tuple[Variant, Stack]] = []
    sim = {"TOLLGATE_SIM_LATENCY_SCALE": "0"}
    try:
        for v in variants:
            s = Stack(log_dir=log_dir / v.name, sim_env=sim, env=dict(v.env))
            stacks.append((v, s))
            s.start()
        for _, s in stacks:  # warm up connections and caches
            wrk.run(f"{s.base_url}/v1/chat/completions", connections, 2, load)
        for i in range(rounds):
            order = stacks if i % 2 == 0 else stacks[::-1]
            for v, s in order:
                v.samples.append(sample(s, load, seconds, connections))
                if latency_seconds:
                    v.latency.append(sample(s, load, latency_seconds, 1))
    finally:
        for _, s in stacks:
            s.stop()
    return variants


def render(variants: list[Variant], path: str, connections: int) -> str:
    has_latency = all(v.latency for v in variants)
    head = "| variant | gateway CPU/req | orchestrator | router | cache | req/s |"
    sep = "|---|---|---|---|---|---|"
    if has_latency:
        head += " p50 at 1 conn | p99 at 1 conn |"
        sep += "---|---|"
    lines = [
        f"path: {path}, {connections} connections, medians of {len(variants[0].samples)} rounds",
        head,
        sep,
    ]
    for v in variants:
        row = (
            f"| {v.name} | {v.median('gateway_us'):.0f} µs | {v.median('cpu:orchestrator'):.0f} µs"
            f" | {v.median('cpu:router'):.0f} µs | {v.median('cpu:cache'):.0f} µs"
            f" | {v.median('rps'):.0f} |"
        )
        if has_latency:
            row += f" {v.median('p50_ms'):.2f} ms | {v.median('p99_ms'):.2f} ms |"
        lines.append(row)
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--baseline", type=Path, required=True, help="a copy of services/ to compare")
    ap.add_argument("--path", choices=sorted(PATHS), default="miss")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--latency-seconds", type=float, default=3)
    args = ap.parse_args()
    variants = [Variant("before", with_services(args.baseline)), Variant("after")]
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as tmp:
        run(
            variants,
            Path(tmp),
            args.path,
            args.rounds,
            args.seconds,
            args.connections,
            args.latency_seconds,
        )
    print(render(variants, args.path, args.connections))
    return 0


if __name__ == "__main__":
    sys.exit(main())
