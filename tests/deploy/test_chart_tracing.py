"""OpenTelemetry tracing in the chart (issue #16): the standard OTEL_* env on every service
when tracing.enabled, none of it otherwise, the headers only from a Secret, a render that
fails without an endpoint, and ServiceMonitors that ask for OpenMetrics (the only
exposition that carries the latency histograms' exemplars)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.chart import (
    CHART,
    NAMESPACE,
    RELEASE,
    Manifest,
    component,
    helm,
    of_kind,
    pod_specs,
    render,
)
from tests.deploy.conftest import VALUE_SETS

TRACING_VALUES = CHART / "ci" / "tracing-values.yaml"
COLLECTOR_EXAMPLE = CHART / "values" / "tracing-collector.yaml"
TRACED = {"router", "cache", "orchestrator", "operator", "simulator"}
OTEL_ENV = {
    "OTEL_SERVICE_NAME",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_RESOURCE_ATTRIBUTES_POD_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT",
}
ON = ["tracing.enabled=true", "tracing.endpoint=http://otel-collector.observability:4317"]


def _containers(docs: list[Manifest]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{where}/{c['name']}", c)
        for where, spec in pod_specs(docs)
        for c in [*spec.get("initContainers", []), *spec["containers"]]
    ]


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """name -> the env entry; a name twice would let the last one silently win."""
    names = [e["name"] for e in container.get("env", [])]
    assert len(names) == len(set(names)), f"duplicate env: {names}"
    return {e["name"]: e for e in container.get("env", [])}


def _values(container: dict[str, Any]) -> dict[str, str]:
    """name -> value of the plain env entries."""
    return {n: e["value"] for n, e in _env(container).items() if "value" in e}


def _traced(docs: list[Manifest]) -> dict[str, dict[str, Any]]:
    """component -> its container, for every Deployment."""
    return {
        component(d): d["spec"]["template"]["spec"]["containers"][0]
        for d in of_kind(docs, "Deployment")
    }


def _attributes(value: str) -> dict[str, str]:
    pairs = [p.split("=", 1) for p in value.split(",")]
    assert all(len(p) == 2 for p in pairs), value
    return {k: v for k, v in pairs}


@pytest.mark.parametrize("name", sorted(n for n in VALUE_SETS if n != TRACING_VALUES.stem))
def test_tracing_off_renders_no_otel_env(renders: dict[str, list[Manifest]], name: str) -> None:
    for where, c in _containers(renders[name]):
        otel = [n for n in _env(c) if n.startswith("OTEL_")]
        assert otel == [], f"{name}: {where} has {otel}"


def test_tracing_on_gives_every_service_the_otel_env(renders: dict[str, list[Manifest]]) -> None:
    docs = renders[TRACING_VALUES.stem]
    values = yaml.safe_load(TRACING_VALUES.read_text())["tracing"]
    containers = _traced(docs)
    assert set(containers) == TRACED
    for comp, c in containers.items():
        env = _env(c)
        assert {n for n in env if n.startswith("OTEL_")} == OTEL_ENV, comp
        plain = _values(c)
        assert plain["OTEL_SERVICE_NAME"] == f"tollgate-{comp}"
        assert plain["OTEL_EXPORTER_OTLP_ENDPOINT"] == values["endpoint"]
        assert plain["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
        assert plain["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
        assert plain["OTEL_TRACES_SAMPLER_ARG"] == "0.1"
        assert plain["OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"] == "false"
        # Credentials only ever by reference.
        assert env["OTEL_EXPORTER_OTLP_HEADERS"] == {
            "name": "OTEL_EXPORTER_OTLP_HEADERS",
            "valueFrom": {"secretKeyRef": {"name": "tollgate-otlp-headers", "key": "headers"}},
        }
        # The pod name from the downward API, defined before the variable that uses it.
        assert env["OTEL_RESOURCE_ATTRIBUTES_POD_NAME"]["valueFrom"] == {
            "fieldRef": {"fieldPath": "metadata.name"}
        }
        names = list(env)
        assert names.index("OTEL_RESOURCE_ATTRIBUTES_POD_NAME") < names.index(
            "OTEL_RESOURCE_ATTRIBUTES"
        )
        assert _attributes(plain["OTEL_RESOURCE_ATTRIBUTES"]) == {
            "k8s.namespace.name": NAMESPACE,
            "k8s.deployment.name": f"{RELEASE}-tollgate-{comp}",
            "k8s.pod.name": "$(OTEL_RESOURCE_ATTRIBUTES_POD_NAME)",
            **values["resourceAttributes"],
        }
    # The `helm test` pod is not a service: no traces from it.
    for where, c in _containers(docs):
        if where.startswith("Pod/"):
            assert not [n for n in _env(c) if n.startswith("OTEL_")], where


def test_tracing_defaults_when_turned_on() -> None:
    """Only enabled and endpoint set: grpc, 1% parent-based, no headers, no message content."""
    for comp, c in _traced(render(sets=ON)).items():
        env = _env(c)
        plain = _values(c)
        assert plain["OTEL_SERVICE_NAME"] == f"tollgate-{comp}"
        assert plain["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.observability:4317"
        assert plain["OTEL_EXPORTER_OTLP_PROTOCOL"] == "grpc"
        assert plain["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
        assert plain["OTEL_TRACES_SAMPLER_ARG"] == "0.01"
        assert plain["OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"] == "false"
        assert "OTEL_EXPORTER_OTLP_HEADERS" not in env


def test_sampler_arg_as_a_number_and_content_capture() -> None:
    docs = render(
        sets=[
            *ON,
            "tracing.sampler=traceidratio",
            "tracing.samplerArg=0.25",  # --set makes it a number
            "tracing.captureMessageContent=true",
            "tracing.resourceAttributes.k8s\\.namespace\\.name=elsewhere",
        ]
    )
    for comp, c in _traced(docs).items():
        plain = _values(c)
        assert plain["OTEL_TRACES_SAMPLER"] == "traceidratio", comp
        assert plain["OTEL_TRACES_SAMPLER_ARG"] == "0.25", comp
        assert plain["OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"] == "true", comp
        # A key of tracing.resourceAttributes replaces the chart's, once.
        attrs = plain["OTEL_RESOURCE_ATTRIBUTES"]
        assert attrs.count("k8s.namespace.name=") == 1
        assert _attributes(attrs)["k8s.namespace.name"] == "elsewhere"


def test_tracing_without_an_endpoint_fails_the_render() -> None:
    out = helm("template", RELEASE, str(CHART), "--set", "tracing.enabled=true", check=False)
    assert out.returncode != 0
    assert "tracing.enabled needs tracing.endpoint" in out.stderr, out.stderr


def test_collector_example_lints_and_traces_to_the_collector() -> None:
    out = helm("lint", "--strict", str(CHART), "-f", str(COLLECTOR_EXAMPLE))
    assert "0 chart(s) failed" in out.stdout and "[WARNING]" not in out.stdout, out.stdout
    containers = _traced(render([COLLECTOR_EXAMPLE]))
    assert set(containers) == TRACED - {"simulator"}  # off by default
    for comp, c in containers.items():
        plain = _values(c)
        assert plain["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.observability:4317"
        assert plain["OTEL_SERVICE_NAME"] == f"tollgate-{comp}"


# --- ServiceMonitors: OpenMetrics, for the exemplars ----------------------------------


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_service_monitors_prefer_openmetrics(renders: dict[str, list[Manifest]], name: str) -> None:
    for sm in of_kind(renders[name], "ServiceMonitor"):
        protocols = sm["spec"]["scrapeProtocols"]
        assert protocols[0] == "OpenMetricsText1.0.0", (name, component(sm))
        assert len(protocols) == len(set(protocols))  # the CRD's list-type is a set


def test_empty_scrape_protocols_leave_the_field_out(tmp_path: Path) -> None:
    f = tmp_path / "values.yaml"
    f.write_text(yaml.safe_dump({"serviceMonitor": {"scrapeProtocols": []}}))
    sms = of_kind(render([f]), "ServiceMonitor")
    assert sms and all("scrapeProtocols" not in sm["spec"] for sm in sms)
