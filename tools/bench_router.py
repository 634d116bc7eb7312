"""Router latency, printed as p50/p99 (for `make bench`; no assertions).

Measures:
  decision     classify + route in process, on mixed prompts (no gRPC, no metrics)
  grpc-route   the Route RPC end to end against a router process on loopback

Usage: python -m tools.bench_router [--iterations N] [--grpc-iterations N] [--no-grpc]
``bench_decisions`` returns the in-process figures for callers that want numbers.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tollgate_common.policy import load_policy
from tollgate_router.classifier import Features
from tollgate_router.routing import RouteInput, decide
from tools.stack import Stack

_ARTICLE = (
    "The city council met on Tuesday to discuss the new transit plan. Residents raised "
    "concerns about noise, parking and the cost of the project, which is expected to run "
    "over budget by twelve percent. The mayor promised a public hearing next month. "
)
_CODE = (
    "```python\nimport csv\n\ndef load(path):\n    with open(path) as f:\n"
    "        return list(csv.DictReader(f))\n```\n"
)

PROMPTS: tuple[tuple[str, str, bool, bool, int], ...] = (
    # (user text, system text, tools, json mode, max_tokens)
    ("hi, how are you?", "", False, False, 0),
    ("What is the capital of Australia?", "You are a helpful assistant.", False, False, 0),
    ("Write a Python function that parses a CSV file into dicts.", "", False, False, 512),
    (_CODE + "Why does this raise KeyError on some files?", "", False, False, 0),
    ("Solve for x: 3x + 5 = 20, step by step.", "", False, False, 0),
    (
        "Summarize the following article in three bullet points:\n" + _ARTICLE * 4,
        "",
        *(
            False,
            False,
            300,
        ),
    ),
    ("Extract every person and date from this text as JSON: " + _ARTICLE, "", False, True, 0),
    ("Translate 'where is the train station?' into German.", "", False, False, 0),
    ("Write a poem about autumn in Kyoto.", "", False, False, 400),
    ("Look up the weather in Paris and book a table for two.", "", True, False, 0),
    # Long inputs hit the 4,000-character cap and the head/tail window.
    ("tl;dr please:\n" + _ARTICLE * 20, "", False, False, 0),
    (_CODE * 30 + "Refactor this and explain the design trade-offs.", "", False, False, 4096),
)


def requests(n: int, seed: int = 7) -> list[RouteInput]:
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        user, system, tools, json_mode, max_tokens = rnd.choice(PROMPTS)
        out.append(
            RouteInput(
                model="auto",
                tenant="",
                features=Features(
                    last_user_text=user[:4000],
                    system_text=system,
                    turns=rnd.randint(1, 6),
                    prompt_chars=len(user) + len(system),
                    has_tools=tools,
                    json_mode=json_mode,
                    max_tokens=max_tokens,
                ),
                downgrade=rnd.random() < 0.05,
            )
        )
    return out


def bench_decisions(n: int = 20_000) -> dict[str, float]:
    """Time ``n`` decisions on mixed prompts; figures in microseconds."""
    policy = load_policy()
    reqs = requests(n)
    for r in reqs[:500]:  # warm caches (regex, dicts)
        decide(policy, r)
    samples = []
    clock = time.perf_counter_ns
    for r in reqs:
        t0 = clock()
        decide(policy, r)
        samples.append(clock() - t0)
    samples.sort()
    return {
        "n": float(n),
        "p50_us": samples[len(samples) // 2] / 1000,
        "p99_us": samples[int(len(samples) * 0.99)] / 1000,
        "mean_us": statistics.fmean(samples) / 1000,
        "max_us": samples[-1] / 1000,
    }


def bench_grpc(iterations: int, log_dir: Path) -> dict[str, float]:
    """Time the Route RPC against a router process (sync client, one channel)."""
    import grpc

    from tollgate.router.v1 import router_pb2, router_pb2_grpc

    stack = Stack(log_dir=log_dir)
    try:
        stack.start_router()
        md = stack.caller_metadata("orchestrator")  # Route is for orchestrators
        with grpc.insecure_channel(f"127.0.0.1:{stack.ports.router}") as ch:
            stub = router_pb2_grpc.RouterStub(ch)
            reqs = [
                router_pb2.RouteRequest(
                    model="auto",
                    features=router_pb2.MessageFeatures(
                        last_user_text=r.features.last_user_text,
                        system_text=r.features.system_text,
                        turns=r.features.turns,
                        prompt_chars=r.features.prompt_chars,
                    ),
                    has_tools=r.features.has_tools,
                    json_mode=r.features.json_mode,
                    max_tokens=r.features.max_tokens,
                )
                for r in requests(200)
            ]
            for r in reqs:  # warm up
                stub.Route(r, timeout=5, metadata=md)
            samples = []
            for i in range(iterations):
                t0 = time.perf_counter_ns()
                stub.Route(reqs[i % len(reqs)], timeout=5, metadata=md)
                samples.append(time.perf_counter_ns() - t0)
    finally:
        stack.stop()
    samples.sort()
    return {
        "n": float(iterations),
        "p50_us": samples[len(samples) // 2] / 1000,
        "p99_us": samples[int(len(samples) * 0.99)] / 1000,
        "mean_us": statistics.fmean(samples) / 1000,
        "max_us": samples[-1] / 1000,
    }


def report(name: str, r: dict[str, float]) -> None:
    print(
        f"{name:<12} n={int(r['n']):<6} p50={r['p50_us']:8.1f} us   p99={r['p99_us']:8.1f} us"
        f"   mean={r['mean_us']:8.1f} us"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--iterations", type=int, default=20_000)
    ap.add_argument("--grpc-iterations", type=int, default=2_000)
    ap.add_argument("--no-grpc", action="store_true")
    args = ap.parse_args()
    report("decision", bench_decisions(args.iterations))
    if not args.no_grpc:
        with tempfile.TemporaryDirectory(prefix="bench-router-") as tmp:
            report("grpc-route", bench_grpc(args.grpc_iterations, Path(tmp)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
