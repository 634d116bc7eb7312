"""Dashboards and rules may only use catalog metrics, recording rules and `up`, with
the labels those series really have."""

from __future__ import annotations

import pytest

from tests.monitoring import promql


def test_every_dashboard_query_uses_known_metrics_and_labels() -> None:
    recorded = promql.recording_rule_names()
    queries = promql.panel_queries()
    assert len(queries) > 50  # the five dashboards are all there
    bad = {
        q.name: issues
        for q in queries
        if (issues := promql.problems(promql.substitute(q.expr), recorded))
    }
    assert not bad


def test_every_variable_query_uses_known_metrics_and_labels() -> None:
    recorded = promql.recording_rule_names()
    queries = promql.variable_queries()
    assert {name for _, name, _ in queries} >= {"namespace", "tenant", "model"}
    bad = {
        f"{uid} ${name}": issues
        for uid, name, query in queries
        if (issues := promql.variable_problems(query, recorded))
    }
    assert not bad


def test_every_rule_expression_uses_known_metrics_and_labels() -> None:
    recorded = promql.recording_rule_names()
    rules = promql.load_rules()
    bad = {
        rule.get("record") or rule["alert"]: issues
        for rule in rules
        if (issues := promql.problems(rule["expr"], recorded))
    }
    assert not bad


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("rate(tollgate_llm_cost_usd_total[5m])", []),
        ("rate(tollgate_llm_cost_total[5m])", ["not in the catalog"]),
        # histograms exist only under their _bucket/_sum/_count names
        ("tollgate_http_request_duration_seconds", ["not in the catalog"]),
        ("rate(tollgate_http_request_duration_seconds_count[5m])", []),
        ('tollgate_http_request_duration_seconds_sum{le="1"}', ["no label 'le'"]),
        ('tollgate_cache_entries{tenant="a"}', ["no label 'tenant'"]),
        ("sum by (tenant) (tollgate_cache_entries)", ["by (tenant)"]),
        ("sum by (job, namespace) (up)", []),
        ('{__name__="not_a_metric"}', ["not in the catalog"]),
        ("namespace_tenant:tollgate_llm_cost_usd:rate1h", []),
        ('namespace_tenant:tollgate_llm_cost_usd:rate1h{model="x"}', ["no label 'model'"]),
    ],
)
def test_the_checker_catches_unknown_metrics_and_labels(expr: str, expected: list[str]) -> None:
    issues = promql.problems(expr, promql.recording_rule_names())
    assert len(issues) == len(expected)
    for issue, fragment in zip(issues, expected, strict=True):
        assert fragment in issue
