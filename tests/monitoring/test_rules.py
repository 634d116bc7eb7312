"""The rule file: promtool-valid, unit-tested at every alert's `for:` boundary, named
by convention, annotated, documented in the runbook and copied into the chart."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import promql_parser as pp
import pytest
import yaml

from tests.monitoring import promql

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed: run `make system-deps`"
)
RULE_TESTS = sorted(promql.RULE_TESTS_DIR.glob("*.yaml"))

# What the issue asks for, by alert name.
REQUIRED_ALERTS = {
    "TollgateBudgetProjectedOverrun",  # predict_linear past the daily or monthly budget
    "TollgateBudgetNearlyExhausted",  # 80%
    "TollgateBudgetExhausted",  # 100%
    "TollgateCostAnomaly",  # against the same hour of the last 7 days
    "TollgateOrchestratorErrorBudgetBurn",  # availability SLO, multi-window multi-burn-rate
    "TollgateOrchestratorLatencyBudgetBurn",  # latency SLO, multi-window multi-burn-rate
    "TollgateTimeToFirstTokenHigh",
    "TollgateUpstreamErrorRatioHigh",
    "TollgateFallbackRateHigh",
    "TollgateCircuitBreakerOpen",
    "TollgateCacheHitRateCollapse",
    "TollgateCacheBackendErrors",
    "TollgateRouterDegraded",
    "TollgateOrchestratorDown",  # up == 0, one per service
    "TollgateRouterDown",
    "TollgateCacheDown",
    "TollgateOperatorDown",
    "TollgateOperatorReconcileErrors",
}
RECORD_NAME = re.compile(r"^[a-z][a-z0-9_]*:tollgate_[a-z0-9_]+:[a-z0-9_]+$")
DURATION = re.compile(r"(\d+)(d|h|m|s)")
UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def seconds(duration: str) -> int:
    parts = DURATION.findall(duration)
    assert "".join(n + u for n, u in parts) == duration, f"bad duration {duration!r}"
    return sum(int(n) * UNIT_SECONDS[u] for n, u in parts)


@pytest.fixture(scope="module")
def rules() -> list[dict[str, Any]]:
    return promql.load_rules()


def alerts(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rules if "alert" in r]


@needs_promtool
def test_promtool_check_rules() -> None:
    assert PROMTOOL is not None
    out = subprocess.run(
        [PROMTOOL, "check", "rules", str(promql.RULES_FILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


@needs_promtool
@pytest.mark.parametrize("test_file", RULE_TESTS, ids=[p.name for p in RULE_TESTS])
def test_promtool_test_rules(test_file: Path) -> None:
    assert PROMTOOL is not None
    out = subprocess.run(
        [PROMTOOL, "test", "rules", test_file.name],
        capture_output=True,
        text=True,
        cwd=test_file.parent,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_required_alerts_exist(rules: list[dict[str, Any]]) -> None:
    assert {r["alert"] for r in alerts(rules)} >= REQUIRED_ALERTS


def test_recording_rules_are_named_level_metric_operations(rules: list[dict[str, Any]]) -> None:
    recorded = promql.recording_rule_names()
    for rule in rules:
        if "record" not in rule:
            continue
        name = rule["record"]
        assert RECORD_NAME.match(name), name
        level = set(name.split(":")[0].split("_"))
        node = promql.parse(rule["expr"])
        groupings: list[set[str]] = []

        def visit(n: object, into: list[set[str]] = groupings) -> bool:
            if (
                isinstance(n, pp.AggregateExpr)
                and n.modifier is not None
                and n.modifier.type == pp.AggModifierType.By
            ):
                into.append(set(n.modifier.labels) - {"le"})
            return True

        pp.walk(node, visit)
        if groupings:
            assert all(g == level for g in groupings), (name, groupings)
        else:  # derived from recorded series of the same level
            for sel in promql.selectors(node):
                assert sel.name in recorded and sel.name.split(":")[0] == name.split(":")[0]


def test_every_alert_is_labelled_and_annotated(rules: list[dict[str, Any]]) -> None:
    for rule in alerts(rules):
        name = rule["alert"]
        assert re.fullmatch(r"Tollgate[A-Z][A-Za-z]+", name), name
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert rule["labels"]["service"] in ("orchestrator", "router", "cache", "operator"), name
        assert seconds(rule["for"]) > 0, name
        ann = rule["annotations"]
        assert set(ann) == {"summary", "description", "runbook_url"}, name
        assert ann["summary"].endswith(".") and "{{" not in ann["summary"], name
        assert ann["description"].strip(), name
        assert ann["runbook_url"] == f"alerts/runbook.md#{name.lower()}", name


def runbook_sections() -> dict[str, str]:
    text = promql.RUNBOOK.read_text()
    parts = re.split(r"^## (\S+)\n", text, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_runbook_has_what_why_first_steps_for_every_alert(rules: list[dict[str, Any]]) -> None:
    sections = runbook_sections()
    names = {r["alert"] for r in alerts(rules)}
    assert set(sections) == names
    for name, body in sections.items():
        for heading in ("**What.**", "**Why.**", "**First steps.**"):
            assert heading in body, f"{name}: no {heading}"
        # GitHub's anchor for "## Name" is the lower-cased name
        assert name.lower() == re.sub(r"[^a-z0-9-]", "", name.lower())


def test_every_alert_has_a_for_boundary_test(rules: list[dict[str, Any]]) -> None:
    """Each alert name has a promtool case that expects nothing one evaluation step
    before the firing step, and at the firing step asserts severity, summary,
    description and runbook_url."""
    boundaries: dict[str, list[int]] = {}
    for path in RULE_TESTS:
        doc = yaml.safe_load(path.read_text())
        step = seconds(doc.get("evaluation_interval", "1m"))
        for case in doc["tests"]:
            checks = case.get("alert_rule_test", [])
            quiet = {
                (c["alertname"], seconds(c["eval_time"])) for c in checks if not c.get("exp_alerts")
            }
            for check in checks:
                if not check.get("exp_alerts"):
                    continue
                name, t = check["alertname"], seconds(check["eval_time"])
                for exp in check["exp_alerts"]:
                    assert "severity" in exp["exp_labels"], (path.name, name)
                    assert set(exp["exp_annotations"]) == {"summary", "description", "runbook_url"}
                if (name, t - step) in quiet:
                    boundaries.setdefault(name, []).append(t)
    untested = {r["alert"] for r in alerts(rules)} - set(boundaries)
    assert not untested


def test_chart_copy_of_the_rules_is_byte_equal() -> None:
    copy = promql.CHART_FILES / "alerts" / promql.RULES_FILE.name
    assert copy.read_bytes() == promql.RULES_FILE.read_bytes(), "run `make monitoring`"
    assert sorted(p.name for p in copy.parent.iterdir()) == [promql.RULES_FILE.name]
