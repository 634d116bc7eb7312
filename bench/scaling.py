"""Figures for docs/scaling.md: 1 vs 2 orchestrator replicas, memory vs Redis cache.

Replicas: one stack (simulator, router, cache) with two orchestrator processes; the
miss path is driven through one orchestrator with 16 connections, then through both
at once with 8 connections each (two wrk processes), in alternating rounds.
Redis: two stacks side by side (``bench.compare``), the cache on its memory backend
in one and on a real redis-server in the other, on the hit path.

Usage: python -m bench.scaling [--rounds N] [--seconds S]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import sys
import tempfile
from pathlib import Path

from bench import compare, stats, wrk
from bench.compare import PATHS
from tools.bench_cache import redis_server
from tools.stack import Stack, free_port


def replicas(log_dir: Path, rounds: int, seconds: float) -> tuple[float, float]:
    """(req/s through one orchestrator, req/s through two), medians."""
    stack = Stack(log_dir=log_dir, sim_env={"TOLLGATE_SIM_LATENCY_SCALE": "0"})
    one: list[float] = []
    two: list[float] = []
    load = PATHS["miss"]
    try:
        stack.start()
        port2 = free_port()
        stack.start_orchestrator("orchestrator2", http_port=port2, grpc_port=free_port())
        urls = [
            f"{stack.base_url}/v1/chat/completions",
            f"http://127.0.0.1:{port2}/v1/chat/completions",
        ]
        for u in urls:
            wrk.run(u, 4, 2, load)
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            for i in range(rounds):
                for mode in ("one", "two") if i % 2 == 0 else ("two", "one"):
                    if mode == "one":
                        one.append(wrk.run(urls[0], 16, seconds, load).rps)
                    else:
                        runs = pool.map(lambda u: wrk.run(u, 8, seconds, load), urls)
                        two.append(sum(r.rps for r in runs))
    finally:
        stack.stop()
    return stats.median(one), stats.median(two)


def redis_vs_memory(log_dir: Path, rounds: int, seconds: float) -> list[compare.Variant]:
    log_dir.mkdir(parents=True, exist_ok=True)  # redis-server's --dir; it exits without one
    with redis_server(None, log_dir) as url:
        variants = [
            compare.Variant("cache on memory"),
            compare.Variant(
                "cache on Redis",
                {"TOLLGATE_CACHE_BACKEND": "redis", "TOLLGATE_CACHE_REDIS_URL": url},
            ),
        ]
        return compare.run(variants, log_dir, "hit", rounds, seconds, 16, latency_seconds=3)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--only", choices=("replicas", "redis"), default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp:
        one, two = replicas(Path(tmp) / "replicas", args.rounds, args.seconds)
        print(
            f"miss path: 1 orchestrator {one:.0f} req/s; 2 orchestrators {two:.0f} req/s"
            f" ({stats.ratio(two, one) or 0:.2f}x)"
        )
        variants = redis_vs_memory(Path(tmp) / "redis", args.rounds, args.seconds)
        print(compare.render(variants, "hit", 16))
    return 0


if __name__ == "__main__":
    sys.exit(main())
