"""Write docs/metrics.md from the metric catalog (`make docs`); a test fails when it is stale."""

from __future__ import annotations

import sys
from pathlib import Path

from tollgate_common.metrics.catalog import ALL_SERVICES, CATALOG, MetricSpec

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "metrics.md"

LEGACY_GREPS = {
    "router": "model_selections",
    "cache": "cache_hit_rate",
    "orchestrator": "http_requests_total, cost, tokens",
}


def _row(spec: MetricSpec) -> str:
    labels = ", ".join(f"`{label}`" for label in spec.labels) or "-"
    unit = spec.unit or "-"
    return f"| `{spec.name}` | {spec.kind} | {unit} | {labels} | {spec.help} |"


def render() -> str:
    own = [s for s in CATALOG.values() if not s.name.startswith(("grpc_", "gen_ai_"))]
    lines = [
        "# Metrics",
        "",
        "Generated from `services/tollgate_common/metrics/catalog.py` by `make docs`;",
        "do not edit by hand. Dashboards and alerts may use only these families (and `up`).",
        "",
        f"{len(CATALOG)} families in all, {len(own)} of them `tollgate_*`, besides the default",
        "`process_*` and `python_*` collectors that every service also exports.",
        "",
        "Label values are bounded: models and providers come from the policy catalog,",
        "intents from a fixed set, tenants from the configured keys, routes from the route",
        "templates; anything else is recorded as `other`. No prompt text, user id or key",
        "is ever a label value.",
        "",
        "## Legacy names",
        "",
        "Metric names that the project's first brief promised, each replaced by the",
        "`tollgate_*` family beside it.",
        "",
        "| legacy name | tollgate family | where |",
        "|---|---|---|",
    ]
    for spec in CATALOG.values():
        if spec.legacy_name:
            lines.append(f"| `{spec.legacy_name}` | `{spec.name}` | {', '.join(spec.services)} |")
    lines += [
        "",
        "The legacy names' documented greps keep working on each service's own `/metrics`: "
        + "; ".join(f"{svc}: `{g}`" for svc, g in LEGACY_GREPS.items())
        + ".",
    ]
    for service in ALL_SERVICES:
        specs = [s for s in CATALOG.values() if service in s.services]
        lines += [
            "",
            f"## {service} ({len(specs)} families)",
            "",
            "| name | type | unit | labels | meaning |",
            "|---|---|---|---|---|",
            *(_row(s) for s in specs),
        ]
    return "\n".join(lines) + "\n"


def main() -> int:
    DOC.write_text(render())
    print(f"wrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
