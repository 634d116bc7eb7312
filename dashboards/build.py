"""Render every dashboard to JSON: ``python -m dashboards.build [--check]``.

Writes ``dashboards/json/<uid>.json`` and a byte-equal copy into the Helm chart's
``files/dashboards/`` (Helm's ``.Files`` cannot read outside the chart). ``--check``
writes nothing and exits 1 when a committed file differs from what the code renders.
``make generate`` and ``make check-generated`` (tools/generate.py) use ``render_all`` and
``OUTPUT_DIRS`` for the same, next to every other generated file.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from grafana_foundation_sdk.builders.dashboard import Dashboard

from dashboards import cache, cost, overview, routing, rpc
from dashboards.lib import render

ROOT = Path(__file__).resolve().parent.parent
JSON_DIR = ROOT / "dashboards" / "json"
CHART_DIR = ROOT / "deploy" / "helm" / "tollgate" / "files" / "dashboards"
OUTPUT_DIRS = (JSON_DIR, CHART_DIR)

BUILDERS: dict[str, Callable[[], Dashboard]] = {
    overview.UID: overview.build,
    cost.UID: cost.build,
    routing.UID: routing.build,
    cache.UID: cache.build,
    rpc.UID: rpc.build,
}


def render_all() -> dict[str, str]:
    """File name -> JSON text for every dashboard."""
    return {f"{uid}.json": render(build()) for uid, build in BUILDERS.items()}


def stale_files(rendered: dict[str, str]) -> list[Path]:
    """Files in the output directories that are missing, differ, or are no longer rendered."""
    stale: list[Path] = []
    for out in OUTPUT_DIRS:
        for name, text in rendered.items():
            path = out / name
            if not path.is_file() or path.read_text() != text:
                stale.append(path)
        if out.is_dir():
            stale.extend(p for p in sorted(out.glob("*.json")) if p.name not in rendered)
    return stale


def write_all(rendered: dict[str, str]) -> None:
    for out in OUTPUT_DIRS:
        out.mkdir(parents=True, exist_ok=True)
        for old in out.glob("*.json"):
            if old.name not in rendered:
                old.unlink()
        for name, text in rendered.items():
            (out / name).write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="fail if the committed JSON is stale")
    args = parser.parse_args(argv)
    rendered = render_all()
    if args.check:
        stale = stale_files(rendered)
        for path in stale:
            print(f"stale: {path.relative_to(ROOT)}", file=sys.stderr)
        if stale:
            print("run `make generate` (or `make monitoring`)", file=sys.stderr)
        return 1 if stale else 0
    write_all(rendered)
    for name in rendered:
        print(f"wrote dashboards/json/{name} and the chart's copy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
