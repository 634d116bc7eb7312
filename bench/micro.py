"""The micro benchmarks, run as the existing tools and parsed from what they print.

``tools.bench_router`` and ``tools.bench_cache`` print one line per figure:
``<name> n=<N> p50=<x> us p99=<y> us ...``. They run in their own processes so
their servers start and stop with them.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass

from tools.stack import ROOT, base_env

_LINE = re.compile(
    r"^(?P<name>\S.*?)\s+n=(?P<n>\d+)\s+p50=\s*(?P<p50>[\d.]+)\s*us\s+p99=\s*(?P<p99>[\d.]+)\s*us"
)


@dataclass(frozen=True)
class Micro:
    name: str
    n: int
    p50_us: float
    p99_us: float


def parse_lines(text: str) -> list[Micro]:
    """Every ``name n=.. p50=.. us p99=.. us`` line of a tool's output."""
    out = []
    for line in text.splitlines():
        m = _LINE.match(line.strip())
        if m:
            out.append(Micro(m["name"].strip(), int(m["n"]), float(m["p50"]), float(m["p99"])))
    return out


def run_tool(module: str, *args: str, timeout: float = 300) -> list[Micro]:
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=base_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{module} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    return parse_lines(proc.stdout)


def router(iterations: int = 20_000, grpc_iterations: int = 2_000) -> list[Micro]:
    return run_tool(
        "tools.bench_router",
        "--iterations",
        str(iterations),
        "--grpc-iterations",
        str(grpc_iterations),
    )


def cache(iterations: int = 2_000) -> list[Micro]:
    return run_tool("tools.bench_cache", "--iterations", str(iterations))
