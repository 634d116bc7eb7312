"""The generated dashboards: committed, in sync with the chart, and built to convention."""

from __future__ import annotations

import re
from typing import Any

import pytest

from dashboards import build
from tests.monitoring import promql
from tollgate_common.metrics.catalog import CATALOG

UIDS = {"tollgate-overview", "tollgate-cost", "tollgate-routing", "tollgate-cache", "tollgate-grpc"}
# Range selectors other than the Grafana intervals, each with why it is fixed.
FIXED_WINDOWS = {
    "[1d]": "the 30-day run rate extrapolates the last 24 hours",
}


@pytest.fixture(scope="module")
def boards() -> dict[str, dict[str, Any]]:
    return promql.load_dashboards()


def test_committed_json_and_chart_copies_match_the_code() -> None:
    stale = build.stale_files(build.render_all())
    assert not stale, "run `make monitoring`"
    for path in build.JSON_DIR.glob("*.json"):
        assert (build.CHART_DIR / path.name).read_bytes() == path.read_bytes()


def test_rendering_is_deterministic() -> None:
    assert build.render_all() == build.render_all()


def test_stable_uids_and_file_names(boards: dict[str, dict[str, Any]]) -> None:
    assert set(boards) == UIDS
    assert {p.stem for p in build.JSON_DIR.glob("*.json")} == UIDS
    for board in boards.values():
        assert board.get("id") is None  # Grafana assigns ids; a fixed one collides on import
        assert "__inputs" not in board  # provisioning cannot resolve ${DS_...} inputs
        assert "tollgate" in board["tags"]


def test_datasource_and_filter_variables(boards: dict[str, dict[str, Any]]) -> None:
    for uid, board in boards.items():
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource", uid
        assert variables["datasource"]["query"] == "prometheus", uid
        for name in ("namespace", "tenant", "model"):
            var = variables[name]
            assert var["type"] == "query", (uid, name)
            assert var["includeAll"] and var["allValue"] == ".*", (uid, name)
            assert var["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


def test_every_panel_has_unit_description_and_the_datasource_variable(
    boards: dict[str, dict[str, Any]],
) -> None:
    for uid, board in boards.items():
        titles = []
        for panel in promql.panels(board):
            where = f"{uid} / {panel.get('title')}"
            titles.append(panel["title"])
            assert panel.get("description", "").strip(), f"{where}: no description"
            assert panel["fieldConfig"]["defaults"].get("unit"), f"{where}: no unit"
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, where
            assert panel["targets"], f"{where}: no query"
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == "${datasource}", where
            ref_ids = [t["refId"] for t in panel["targets"]]
            assert len(set(ref_ids)) == len(ref_ids) and all(ref_ids), where
        assert len(titles) == len(set(titles)), f"{uid}: duplicate panel titles"
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), f"{uid}: duplicate panel ids"


def test_queries_filter_on_namespace_and_use_grafana_intervals(
    boards: dict[str, dict[str, Any]],
) -> None:
    for uid in boards:
        exprs = [q.expr for q in promql.panel_queries() if q.dashboard == uid]
        assert any("$__rate_interval" in e for e in exprs), uid
    for query in promql.panel_queries():
        node = promql.parse(promql.substitute(query.expr))
        for sel in promql.selectors(node):
            assert ("namespace", ".*") in sel.matchers, f"{query.name}: {sel.name} not filtered"
        for window in re.findall(r"\[[^\]]+\]", query.expr):
            assert window in ("[$__rate_interval]", "[$__range]") or window in FIXED_WINDOWS, (
                f"{query.name}: fixed window {window}"
            )


# Panels that deliberately ignore $tenant or $model on a family that has the label.
UNFILTERED = {
    ("tollgate-cost / Savings ratio", "model"): "savings have no model label; the cost side "
    "must cover every model too, or the ratio mixes different traffic",
    ("tollgate-routing / Fallbacks per request", "tenant"): "fallbacks carry no tenant label",
    ("tollgate-routing / Fallbacks per request", "model"): "fallbacks name from/to models, not "
    "the model that finally served the request",
}


def test_tenant_and_model_variables_filter_every_family_that_has_the_label() -> None:
    recorded = promql.recording_rule_names()
    missing = []
    for query in promql.panel_queries():
        panel = query.name.rsplit(" / ", 1)[0]
        for sel in promql.selectors(promql.parse(promql.substitute(query.expr))):
            labels = promql.allowed_labels(sel.name, recorded) or frozenset()
            matched = {label for label, _ in sel.matchers}
            for label in ("tenant", "model"):
                if label in labels and label not in matched and (panel, label) not in UNFILTERED:
                    missing.append(f"{query.name}: {sel.name} ignores ${label}")
    assert not missing


def test_runbook_panel_references_exist(boards: dict[str, dict[str, Any]]) -> None:
    """The runbook points at panels as *Dashboard* → "Panel title"; those must exist."""
    titles = {
        board["title"].removeprefix("tollgate / "): {p["title"] for p in promql.panels(board)}
        for board in boards.values()
    }
    refs = re.findall(r"\*(\w+)\* → \"([^\"]+)\"", promql.RUNBOOK.read_text())
    assert refs
    for dashboard, panel in refs:
        assert panel in titles[dashboard], f"runbook refers to {dashboard} → {panel!r}"


# The latency histograms whose buckets carry trace exemplars (issue #16), written out here
# rather than read from dashboards.lib, so a change there has to change this test too.
EXEMPLAR_HISTOGRAMS = frozenset(
    {
        "tollgate_http_request_duration_seconds",
        "tollgate_gateway_overhead_seconds",
        "tollgate_llm_upstream_duration_seconds",
        "tollgate_llm_time_to_first_token_seconds",
        "grpc_server_handling_seconds",
    }
)
# The panels that show them; each must ask Grafana for exemplars.
EXEMPLAR_PANELS = {
    "tollgate-overview / HTTP latency",
    "tollgate-overview / Gateway overhead",
    "tollgate-overview / RPC latency p99 by service",
    "tollgate-routing / Upstream latency p99 by model",
    "tollgate-routing / Time to first token p95 by model",
    "tollgate-grpc / Server latency by method",
}


def _reads_exemplar_buckets(expr: str) -> bool:
    node = promql.parse(promql.substitute(expr))
    return any(
        sel.name.endswith("_bucket") and sel.name.removesuffix("_bucket") in EXEMPLAR_HISTOGRAMS
        for sel in promql.selectors(node)
    )


def test_exemplar_histograms_are_histograms_of_the_catalog() -> None:
    for name in EXEMPLAR_HISTOGRAMS:
        assert name in CATALOG and CATALOG[name].kind == "histogram", name


def test_exemplars_exactly_on_the_latency_histograms_bucket_queries(
    boards: dict[str, dict[str, Any]],
) -> None:
    """Every query of a panel that reads one of those histograms' _bucket series shows its
    exemplars (trace links); no other query does (each costs a second query in Grafana)."""
    with_exemplars = set()
    for uid, board in boards.items():
        for panel in promql.panels(board):
            where = f"{uid} / {panel['title']}"
            for target in panel["targets"]:
                wanted = _reads_exemplar_buckets(target["expr"])
                assert target.get("exemplar", False) is wanted, f"{where} / {target['refId']}"
                if wanted:
                    assert panel["type"] == "timeseries" and not target.get("instant"), where
                    with_exemplars.add(where)
    assert with_exemplars == EXEMPLAR_PANELS
