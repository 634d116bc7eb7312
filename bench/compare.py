"""Side-by-side stacks: the same load on each in alternating rounds, CPU read from /proc.

Used by `make bench-metrics` (metrics on vs off), `make bench-tracing` (tracing off, 1 %
and 100 %) and to measure what a change gains
(``--baseline DIR``: a copy of ``services/`` from before the change). Every stack runs
at the same time on its own free ports, so slow drifts of the machine's load hit
every variant alike; the order alternates each round and the figures are medians.

Usage: python -m bench.compare --baseline /tmp/services-before [--path miss|hit|bypass]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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

    requests: int = 0

    @property
    def gateway_us(self) -> float:
        return sum(v for k, v in self.cpu_us.items() if k in GATEWAY)

    def get(self, what: str) -> float:
        """``gateway_us``, ``cpu:<process>`` or a field (``rps``, ``p50_ms``...)."""
        if what == "gateway_us":
            return self.gateway_us
        if what.startswith("cpu:"):
            return self.cpu_us[what[4:]]
        return float(getattr(self, what))


@dataclass
class Variant:
    name: str
    env: dict[str, str] = field(default_factory=dict)  # for every process of its stack
    samples: list[Sample] = field(default_factory=list)
    latency: list[Sample] = field(default_factory=list)  # 1-connection runs
    requests: int = 0  # every request sent to its stack, the warm-up's included

    def median(self, get: str) -> float:
        pool = self.latency if get in ("p50_ms", "p99_ms") else self.samples
        return stats.median([s.get(get) for s in pool])


def paired(a: Variant, b: Variant, get: str = "gateway_us") -> float:
    """The median of the rounds' differences ``a - b``: each round measured the two back to
    back, so pairing them cancels the machine's slow drifts that a difference of medians
    keeps."""
    return stats.median(
        [x.get(get) - y.get(get) for x, y in zip(a.samples, b.samples, strict=False)]
    )


def paired_rps_lost(a: Variant, b: Variant) -> float:
    """The median of the rounds' throughput lost by ``a`` against ``b``, in % of ``b``'s."""
    return stats.median(
        [stats.share(y.rps - x.rps, y.rps) for x, y in zip(a.samples, b.samples, strict=False)]
    )


def round_args(ap: argparse.ArgumentParser, rounds: int, seconds: float, json_name: str) -> None:
    """The options every side-by-side bench takes (``--rounds``, ``--seconds``,
    ``--connections``, ``--json``)."""
    ap.add_argument("--rounds", type=int, default=rounds)
    ap.add_argument("--seconds", type=float, default=seconds)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--json", type=Path, default=ROOT / ".bench" / json_name)


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))


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
    return Sample(cpu, r.rps, r.p50_ms, r.p99_ms, r.requests)


def run(
    variants: list[Variant],
    log_dir: Path,
    path: str = "miss",
    rounds: int = 5,
    seconds: float = 5,
    connections: int = 8,
    latency_seconds: float = 0,
    finished: Callable[[Variant, Stack], None] | None = None,
) -> list[Variant]:
    """Start one stack per variant, then measure them in alternating order; ``finished``
    sees each variant's stack after the last round, before it stops."""
    load = PATHS[path]
    stacks: list[tuple[Variant, Stack]] = []
    sim = {"TOLLGATE_SIM_LATENCY_SCALE": "0"}
    try:
        for v in variants:
            s = Stack(log_dir=log_dir / v.name, sim_env=sim, env=dict(v.env))
            stacks.append((v, s))
            s.start()
        for v, s in stacks:  # warm up connections and caches
            v.requests += wrk.run(
                f"{s.base_url}/v1/chat/completions", connections, 2, load
            ).requests
        for i in range(rounds):
            order = stacks if i % 2 == 0 else stacks[::-1]
            for v, s in order:
                v.samples.append(sample(s, load, seconds, connections))
                v.requests += v.samples[-1].requests
                if latency_seconds:
                    v.latency.append(sample(s, load, latency_seconds, 1))
                    v.requests += v.latency[-1].requests
        if finished is not None:
            for v, s in stacks:
                finished(v, s)
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
