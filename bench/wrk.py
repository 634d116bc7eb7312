"""wrk as the load generator: the command, and the parse of what ``chat.lua`` prints.

wrk is C with LuaJIT and costs far less per request than the servers it drives;
``chat.lua``'s ``done()`` prints one ``WRK_JSON {...}`` line with the summary and the
latency percentiles (from wrk's own histogram, in microseconds).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).with_name("chat.lua")
MARKER = "WRK_JSON "


@dataclass(frozen=True)
class WrkResult:
    requests: int
    duration_s: float
    errors: int  # connect, read, write, timeout and non-2xx responses
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0


class WrkError(RuntimeError):
    pass


def parse_output(text: str) -> WrkResult:
    """The ``WRK_JSON`` line of a wrk run with ``chat.lua``."""
    line = next((ln for ln in text.splitlines() if ln.startswith(MARKER)), None)
    if line is None:
        raise WrkError(f"no {MARKER.strip()} line in wrk output:\n{text[-2000:]}")
    try:
        data = json.loads(line[len(MARKER) :])
        lat = data["latency_us"]
        errors = sum(int(v) for v in data["errors"].values())
        return WrkResult(
            requests=int(data["requests"]),
            duration_s=int(data["duration_us"]) / 1e6,
            errors=errors,
            p50_ms=lat["p50"] / 1000,
            p90_ms=lat["p90"] / 1000,
            p99_ms=lat["p99"] / 1000,
            mean_ms=float(lat["mean"]) / 1000,
            max_ms=lat["max"] / 1000,
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise WrkError(f"bad {MARKER.strip()} line: {exc}: {line[:300]}") from None


@dataclass(frozen=True)
class Load:
    """What to send: ``unique`` gives every request a new prompt (cache misses)."""

    model: str = "gpt-4o-mini"
    mode: str = "fixed"  # fixed | unique
    temperature: str = "0"
    key: str = ""

    def __post_init__(self) -> None:
        if self.mode not in ("fixed", "unique"):
            raise ValueError(f"Load.mode: 'fixed' or 'unique', got {self.mode!r}")


def command(url: str, connections: int, seconds: float, load: Load, threads: int = 1) -> list[str]:
    if connections < 1:
        raise ValueError(f"connections: at least 1, got {connections}")
    return [
        "wrk",
        f"-t{min(threads, connections)}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(SCRIPT),
        url,
        "--",
        load.model,
        load.mode,
        load.temperature,
        load.key,
    ]


def run(url: str, connections: int, seconds: float, load: Load, threads: int = 1) -> WrkResult:
    if shutil.which("wrk") is None:
        raise WrkError("wrk not found: `apt-get install wrk` (make system-deps)")
    cmd = command(url, connections, seconds, load, threads)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if proc.returncode != 0:
        raise WrkError(f"wrk exited {proc.returncode}: {proc.stderr[-1000:]}")
    return parse_output(proc.stdout)
