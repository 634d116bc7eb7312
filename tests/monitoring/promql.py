"""Read every PromQL expression tollgate ships and check it against the metric catalog.

Dashboard queries use Grafana variables, which are replaced by values a Prometheus
accepts (``.*`` for the multi-value variables, which is what "All" sends).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import promql_parser as pp
import yaml

from tollgate_common.metrics.catalog import CATALOG

ROOT = Path(__file__).resolve().parents[2]
RULES_FILE = ROOT / "alerts" / "tollgate-rules.yaml"
RUNBOOK = ROOT / "alerts" / "runbook.md"
RULE_TESTS_DIR = ROOT / "alerts" / "tests"
DASHBOARD_DIR = ROOT / "dashboards" / "json"
CHART_FILES = ROOT / "deploy" / "helm" / "tollgate" / "files"

# Labels Prometheus attaches to every scraped series (`namespace` and `pod` come from
# the prometheus-operator's Kubernetes service discovery).
TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod"})
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def substitute(expr: str, rate_interval: str = "5m", range_: str = "1h") -> str:
    """A dashboard query with its Grafana variables replaced, ready for Prometheus."""
    expr = expr.replace("$__rate_interval", rate_interval).replace("$__range", range_)
    return re.sub(r"\$(namespace|tenant|model)\b", ".*", expr)


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str  # uid
    panel: str  # title
    ref_id: str
    expr: str  # as written, with Grafana variables
    instant: bool

    @property
    def name(self) -> str:
        return f"{self.dashboard} / {self.panel} / {self.ref_id}"


def load_dashboards() -> dict[str, dict[str, Any]]:
    """uid -> dashboard JSON, from dashboards/json/."""
    boards = {}
    for path in sorted(DASHBOARD_DIR.glob("*.json")):
        board = json.loads(path.read_text())
        boards[board["uid"]] = board
    return boards


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every non-row panel, including those inside collapsed rows."""
    for panel in board.get("panels", []):
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def panel_queries() -> list[PanelQuery]:
    out = []
    for uid, board in load_dashboards().items():
        for panel in panels(board):
            for target in panel.get("targets", []):
                out.append(
                    PanelQuery(
                        uid,
                        panel["title"],
                        target["refId"],
                        target["expr"],
                        bool(target.get("instant")),
                    )
                )
    return out


def variable_queries() -> list[tuple[str, str, str]]:
    """(dashboard uid, variable name, query) for every query variable."""
    out = []
    for uid, board in load_dashboards().items():
        for var in board.get("templating", {}).get("list", []):
            if var.get("type") == "query":
                query = var["query"]
                out.append((uid, var["name"], query if isinstance(query, str) else query["query"]))
    return out


def load_rules() -> list[dict[str, Any]]:
    """Every rule of the rule file, each with its group's name under ``group``."""
    doc = yaml.safe_load(RULES_FILE.read_text())
    return [{**rule, "group": g["name"]} for g in doc["groups"] for rule in g["rules"]]


def recording_rule_names() -> set[str]:
    return {r["record"] for r in load_rules() if "record" in r}


@dataclass(frozen=True)
class Selector:
    name: str
    matchers: tuple[tuple[str, str], ...]  # (label, value)


def _name_of(node: pp.VectorSelector) -> str | None:
    if node.name:
        return str(node.name)
    for m in node.matchers.matchers:
        if m.name == "__name__":
            return str(m.value)
    return None


def parse(expr: str) -> pp.Expr:
    try:
        return pp.parse(expr)
    except Exception as exc:  # the parser raises a plain error with the position
        raise ValueError(f"cannot parse {expr!r}: {exc}") from exc


def selectors(node: pp.Expr) -> list[Selector]:
    found: list[Selector] = []

    def visit(n: object) -> bool:
        if isinstance(n, pp.VectorSelector):
            name = _name_of(n)
            if name is None:
                raise ValueError(f"selector without a metric name: {n}")
            matchers = tuple((m.name, m.value) for m in n.matchers.matchers if m.name != "__name__")
            found.append(Selector(name, matchers))
        return True

    pp.walk(node, visit)
    return found


def allowed_labels(metric: str, recorded: set[str]) -> frozenset[str] | None:
    """The labels a series of ``metric`` can carry, or None when the metric is unknown.

    Recording rules are named ``level:metric:operations`` and the level lists exactly
    the labels they keep (``namespace_tenant_period`` keeps namespace, tenant, period).
    """
    if metric == "up":
        return TARGET_LABELS
    if metric in recorded:
        return frozenset(metric.split(":")[0].split("_"))
    spec = CATALOG.get(metric)
    extra: set[str] = set()
    if spec is None:
        for suffix in HISTOGRAM_SUFFIXES:
            base = metric.removesuffix(suffix)
            if metric.endswith(suffix) and base in CATALOG and CATALOG[base].kind == "histogram":
                spec = CATALOG[base]
                if suffix == "_bucket":
                    extra.add("le")
                break
    if spec is None or (spec.kind == "histogram" and metric == spec.name):
        return None  # a histogram has no series under its bare name
    return frozenset(spec.labels) | TARGET_LABELS | extra


def problems(expr: str, recorded: set[str]) -> list[str]:
    """What is wrong with ``expr``: unknown metrics, unknown labels in matchers or
    in ``by (...)`` clauses. Empty when the expression is fine."""
    node = parse(expr)
    issues: list[str] = []
    for sel in selectors(node):
        labels = allowed_labels(sel.name, recorded)
        if labels is None:
            issues.append(f"metric {sel.name!r} is not in the catalog nor a recording rule")
            continue
        for label, _ in sel.matchers:
            if label not in labels:
                issues.append(f"{sel.name} has no label {label!r}")

    def visit(n: object) -> bool:
        if (
            isinstance(n, pp.AggregateExpr)
            and n.modifier is not None
            and n.modifier.type == pp.AggModifierType.By
        ):
            inner = n.expr
            available: set[str] = set(_created_labels(inner))
            for sel in selectors(inner):
                available |= allowed_labels(sel.name, recorded) or set()
            for label in n.modifier.labels:
                if label not in available:
                    issues.append(f"by ({label}) over series that have no such label")
        return True

    pp.walk(node, visit)
    return issues


def _created_labels(node: pp.Expr) -> list[str]:
    """Labels created by label_replace/label_join inside ``node``."""
    created: list[str] = []

    def visit(n: object) -> bool:
        if isinstance(n, pp.Call) and n.func.name in ("label_replace", "label_join"):
            dst = n.args[1]
            if isinstance(dst, pp.StringLiteral):
                created.append(dst.val)
        return True

    pp.walk(node, visit)
    return created


LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*(?P<label>\w+)\)$")


def variable_problems(query: str, recorded: set[str]) -> list[str]:
    """Problems of a ``label_values(<selector>, <label>)`` variable query."""
    m = LABEL_VALUES.match(query.strip())
    if m is None:
        return [f"not a label_values(selector, label) query: {query!r}"]
    selector = substitute(m.group("selector"))
    issues = problems(selector, recorded)
    for sel in selectors(parse(selector)):
        labels = allowed_labels(sel.name, recorded) or frozenset()
        if m.group("label") not in labels:
            issues.append(f"{sel.name} has no label {m.group('label')!r}")
    return issues
