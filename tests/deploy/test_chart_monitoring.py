"""Monitoring objects: ServiceMonitors and PrometheusRules validated against the
prometheus-operator v0.93.0 CRDs (../shared/schemas), rule files and dashboards
carried verbatim from files/, the Capabilities guard, and the AlertmanagerConfig example."""

from __future__ import annotations

import json
import shutil
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.chart import (
    CHART,
    NAMESPACE,
    SCHEMAS,
    Manifest,
    by_name,
    component,
    missing,
    of_kind,
    render,
)
from tests.deploy.conftest import VALUE_SETS

CRD_FILES = {
    "ServiceMonitor": "monitoring.coreos.com_servicemonitors.yaml",
    "PrometheusRule": "monitoring.coreos.com_prometheusrules.yaml",
}


def _strict(node: Any) -> Any:
    """The API server rejects unknown fields (kubectl's default --validate=strict); a CRD
    schema says so only implicitly, so close every object that lists its properties."""
    if isinstance(node, dict):
        out = {k: _strict(v) for k, v in node.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


@cache
def _crd_schema(kind: str) -> dict[str, Any]:
    path = SCHEMAS / CRD_FILES[kind]
    crd = yaml.safe_load(path.read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    schema: dict[str, Any] = _strict(version["schema"]["openAPIV3Schema"])
    # metadata is validated by the API server's ObjectMeta, not by the CRD.
    schema["properties"]["metadata"] = {"type": "object"}
    return schema


def _crd_errors(doc: Manifest) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft7Validator(_crd_schema(doc["kind"]))
    return [
        f"{doc['kind']}/{doc['metadata']['name']}: {e.message} at {list(e.absolute_path)}"
        for e in validator.iter_errors(doc)
    ]


@pytest.fixture(scope="module")
def crds_present() -> None:
    if not all((SCHEMAS / f).is_file() for f in CRD_FILES.values()):
        missing(
            "ServiceMonitor/PrometheusRule schemas",
            f"the prometheus-operator CRDs are not at {SCHEMAS}",
        )


@pytest.mark.usefixtures("crds_present")
@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_monitoring_objects_match_the_operator_crds(
    renders: dict[str, list[Manifest]], name: str
) -> None:
    docs = [d for d in renders[name] if d["kind"] in CRD_FILES]
    for d in docs:
        assert d["apiVersion"] == "monitoring.coreos.com/v1"
        assert _crd_errors(d) == []


@pytest.mark.usefixtures("crds_present")
def test_crd_validation_catches_a_misspelt_field(default_render: list[Manifest]) -> None:
    sm = json.loads(json.dumps(of_kind(default_render, "ServiceMonitor")[0]))
    sm["spec"]["endpoints"][0]["scrapeTimout"] = "5s"
    errors = _crd_errors(sm)
    assert len(errors) == 1 and "scrapeTimout" in errors[0]


def test_service_monitor_per_component_with_metrics(default_render: list[Manifest]) -> None:
    sms = {component(s): s for s in of_kind(default_render, "ServiceMonitor")}
    assert set(sms) == {"router", "cache", "orchestrator", "operator"}
    for comp, sm in sms.items():
        svc = by_name(default_render, "Service", f"-{comp}")
        assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
        assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
        port_names = {p["name"] for p in svc["spec"]["ports"]}
        (endpoint,) = sm["spec"]["endpoints"]
        assert endpoint["port"] in port_names and endpoint["path"] == "/metrics"
        # The rules select jobs named tollgate-<service>, whatever the release name.
        assert {
            "action": "replace",
            "targetLabel": "job",
            "replacement": f"tollgate-{comp}",
        } in endpoint["relabelings"]


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_orchestrator_metrics_are_off_the_api_port(
    renders: dict[str, list[Manifest]], name: str
) -> None:
    """M-4: the ServiceMonitor scrapes the orchestrator's own metrics port, which its env
    names, never the public API port; the API keeps its Service port for clients."""
    docs = renders[name]
    dep = by_name(docs, "Deployment", "-orchestrator")
    c = dep["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert ports["metrics"] != ports["http"]
    assert env["TOLLGATE_ORCHESTRATOR_METRICS_PORT"] == str(ports["metrics"])
    assert env["TOLLGATE_ORCHESTRATOR_HTTP_PORT"] == str(ports["http"])
    assert "TOLLGATE_ORCHESTRATOR_METRICS_ON_API_PORT" not in env
    svc = by_name(docs, "Service", "-orchestrator")
    svc_ports = {p["name"]: p for p in svc["spec"]["ports"]}
    assert svc_ports["http"]["targetPort"] == "http"  # clients still reach the API
    assert svc_ports["metrics"]["targetPort"] == "metrics"
    for sm in of_kind(docs, "ServiceMonitor"):
        if component(sm) == "orchestrator":
            assert [e["port"] for e in sm["spec"]["endpoints"]] == ["metrics"]


def test_additional_labels_reach_prometheus_selectors(renders: dict[str, list[Manifest]]) -> None:
    docs = renders["kind"]
    for sm in of_kind(docs, "ServiceMonitor"):
        assert sm["metadata"]["labels"]["release"] == "kps"
    op = by_name(docs, "Deployment", "-operator")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in op["env"]}
    assert json.loads(env["TOLLGATE_OPERATOR_RULE_LABELS"]) == {"release": "kps"}


def test_no_operator_objects_without_the_api() -> None:
    docs = render(
        sets=["alertmanagerConfig.enabled=true", "alertmanagerConfig.webhook.enabled=true"],
        api_versions=(),
    )
    kinds = {d["kind"] for d in docs}
    assert not kinds & {"ServiceMonitor", "PrometheusRule", "AlertmanagerConfig"}
    assert "Deployment" in kinds


def test_monitoring_flags_turn_objects_off(tmp_path: Path) -> None:
    chart = _chart_with_files(tmp_path, {"alerts/a.yaml": RULES}, {"d.json": DASHBOARD})
    docs = render(
        sets=["serviceMonitor.enabled=false", "prometheusRule.enabled=false"], chart=chart
    )
    assert not of_kind(docs, "ServiceMonitor") and not of_kind(docs, "PrometheusRule")


# --- rule files and dashboards carried from files/ ----------------------------------

RULES = """\
groups:
  - name: tollgate-cost
    rules:
      - alert: TollgateSpendHigh
        expr: sum(rate(tollgate_cost_usd_total[1h])) * 3600 > 10
        for: 15m
        labels:
          severity: warning
        annotations:
          summary: Spend is high.
          description: '{{ $labels.namespace }} spends {{ $value | humanize }} USD per hour.'
          runbook_url: https://example.invalid/runbook#tollgatespendhigh
"""
PROMTOOL_TEST = """\
rule_files: [tollgate.rules.yaml]
evaluation_interval: 1m
tests: []
"""
DASHBOARD = json.dumps(
    {"uid": "tollgate-overview", "title": "tollgate / overview", "panels": [], "id": None},
    indent=2,
)


def _chart_with_files(tmp: Path, alerts: dict[str, str], dashboards: dict[str, str]) -> Path:
    """A copy of the chart whose files/alerts and files/dashboards hold only the given files."""
    chart = tmp / "tollgate"
    shutil.copytree(CHART, chart)
    for sub in ("alerts", "dashboards"):
        shutil.rmtree(chart / "files" / sub, ignore_errors=True)
        (chart / "files" / sub).mkdir(parents=True)
    for name, text in alerts.items():
        (chart / "files" / name).write_text(text)
    for name, text in dashboards.items():
        (chart / "files" / "dashboards" / name).write_text(text)
    return chart


def test_rule_files_become_prometheus_rules_verbatim(tmp_path: Path) -> None:
    chart = _chart_with_files(
        tmp_path,
        {"alerts/tollgate.rules.yaml": RULES, "alerts/tollgate.rules_test.yaml": PROMTOOL_TEST},
        {},
    )
    docs = render(sets=["prometheusRule.additionalLabels.release=kps"], chart=chart)
    (rule,) = of_kind(docs, "PrometheusRule")  # the promtool test file is not a rule file
    assert rule["metadata"]["name"] == "tg-tollgate-rules"
    assert rule["metadata"]["labels"]["release"] == "kps"
    assert rule["spec"] == yaml.safe_load(RULES)
    # Prometheus' template syntax reaches the cluster untouched by Helm.
    desc = rule["spec"]["groups"][0]["rules"][0]["annotations"]["description"]
    assert desc == "{{ $labels.namespace }} spends {{ $value | humanize }} USD per hour."
    if (SCHEMAS / CRD_FILES["PrometheusRule"]).is_file():
        assert _crd_errors(rule) == []


def test_dashboards_become_labelled_configmaps(tmp_path: Path) -> None:
    chart = _chart_with_files(tmp_path, {}, {"tollgate_overview.json": DASHBOARD})
    docs = render(sets=["dashboards.namespace=monitoring"], chart=chart)
    dash = [c for c in of_kind(docs, "ConfigMap") if "grafana_dashboard" in c["metadata"]["labels"]]
    assert len(dash) == 1
    cm = dash[0]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"]["grafana_folder"] == "tollgate"
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["name"] == "tg-tollgate-dashboard-overview"
    assert cm["data"] == {"tollgate_overview.json": DASHBOARD}


def test_empty_files_folders_render(tmp_path: Path) -> None:
    chart = _chart_with_files(tmp_path, {}, {})
    shutil.rmtree(chart / "files" / "alerts")
    docs = render(chart=chart)
    assert not of_kind(docs, "PrometheusRule")
    assert not [
        c for c in of_kind(docs, "ConfigMap") if "grafana_dashboard" in c["metadata"]["labels"]
    ]


def test_shipped_files_are_carried_verbatim(default_render: list[Manifest]) -> None:
    """Whatever the dashboards/alerts issue copied into files/ reaches the cluster unchanged
    (their byte-equality with alerts/ and dashboards/ is tested there)."""
    rules = {r["metadata"]["name"]: r for r in of_kind(default_render, "PrometheusRule")}
    for f in sorted((CHART / "files" / "alerts").glob("*.yaml")):
        doc = yaml.safe_load(f.read_text())
        if isinstance(doc, dict) and "groups" in doc:
            match = [r for r in rules.values() if r["spec"] == doc]
            assert match, f"no PrometheusRule carries {f.name}"
    dashboards = {
        k: v
        for c in of_kind(default_render, "ConfigMap")
        if "grafana_dashboard" in c["metadata"]["labels"]
        for k, v in c["data"].items()
    }
    for f in sorted((CHART / "files" / "dashboards").glob("*.json")):
        assert dashboards.get(f.name) == f.read_text(), f.name
        assert len(f.read_bytes()) < 900 * 1024, f"{f.name}: too big for a ConfigMap (1 MiB)"


def test_alertmanager_config_routes_to_slack_discord_and_webhook(
    renders: dict[str, list[Manifest]],
) -> None:
    (amc,) = of_kind(renders["monitoring-values"], "AlertmanagerConfig")
    assert amc["apiVersion"] == "monitoring.coreos.com/v1alpha1"
    spec = amc["spec"]
    receivers = {r["name"]: r for r in spec["receivers"]}
    assert set(receivers) == {"slack", "discord", "webhook"}
    assert receivers["slack"]["slackConfigs"][0]["apiURL"]["name"] == "tollgate-alerts-slack"
    assert receivers["discord"]["discordConfigs"][0]["apiURL"]["name"] == "tollgate-alerts-discord"
    assert receivers["webhook"]["webhookConfigs"][0]["urlSecret"]["name"] == (
        "tollgate-alerts-webhook"
    )
    # Every receiver gets every matching alert once.
    assert [r["receiver"] for r in spec["route"]["routes"]] == ["slack", "discord", "webhook"]
    assert all(r["continue"] is True for r in spec["route"]["routes"])
    assert spec["route"]["matchers"] == [
        {"name": "severity", "matchType": "=~", "value": "critical|warning"}
    ]
    assert not of_kind(renders["default"], "AlertmanagerConfig")  # an opt-in example
