"""The chart lints, renders and validates with real Helm, for every values set.

Core kinds are checked with kubernetes-validate --strict (offline schemas) at the
oldest Kubernetes the chart supports and the newest one it ships; a bad values
file must make Helm itself fail through values.schema.json.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.chart import (
    CHART,
    NAMESPACE,
    RELEASE,
    Manifest,
    helm,
    kube_versions,
    of_kind,
    render,
)
from tests.deploy.conftest import VALUE_SETS

OPERATOR_APIS = ("monitoring.coreos.com/",)


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_helm_lint_strict(name: str) -> None:
    args = ["lint", "--strict", str(CHART), "--namespace", NAMESPACE]
    for v in VALUE_SETS[name]:
        args += ["-f", str(v)]
    out = helm(*args)
    assert "0 chart(s) failed" in out.stdout, out.stdout
    assert "[WARNING]" not in out.stdout and "[ERROR]" not in out.stdout, out.stdout


def test_default_render_has_every_component(default_render: list[Manifest]) -> None:
    deployments = {d["metadata"]["name"] for d in of_kind(default_render, "Deployment")}
    services = {d["metadata"]["name"] for d in of_kind(default_render, "Service")}
    expected = {f"{RELEASE}-tollgate-{c}" for c in ("router", "cache", "orchestrator", "operator")}
    assert deployments == expected  # the simulator is off by default
    assert services == expected


def test_every_namespaced_object_names_the_release_namespace(
    renders: dict[str, list[Manifest]],
) -> None:
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
    for name, docs in renders.items():
        for d in docs:
            if d["kind"] in cluster_scoped:
                continue
            if d["kind"] == "ConfigMap" and "grafana_dashboard" in d["metadata"]["labels"]:
                continue  # dashboards.namespace may move these
            assert d["metadata"].get("namespace") == NAMESPACE, (name, d["kind"])


def _validate_core(docs: list[Manifest], version: str) -> list[str]:
    import kubernetes_validate.utils as kv  # type: ignore[import-untyped]

    errors = []
    for d in docs:
        if d["apiVersion"].startswith(OPERATOR_APIS):
            continue  # validated against the prometheus-operator CRDs instead
        try:
            kv.validate(d, version, strict=True)
        except kv.ValidationError as exc:
            errors.append(f"{d['kind']}/{d['metadata']['name']}: {exc.message} at {exc.path}")
        except kv.SchemaNotFoundError as exc:
            errors.append(exc.message)
    return errors


@pytest.mark.parametrize("which", ["oldest", "newest"])
@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_core_kinds_validate_strict(name: str, which: str) -> None:
    oldest, newest = kube_versions()
    version = oldest if which == "oldest" else newest
    docs = render(VALUE_SETS[name], kube_version=version)
    assert docs
    assert _validate_core(docs, version) == []


def test_strict_validation_catches_a_misspelt_field(default_render: list[Manifest]) -> None:
    """Guard against a validator that passes everything: a typo must be reported."""
    dep = copy.deepcopy(of_kind(default_render, "Deployment")[0])
    sc = dep["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    sc["readOnlyRootFilesytem"] = sc.pop("readOnlyRootFilesystem")
    _, newest = kube_versions()
    errors = _validate_core([dep], newest)
    assert len(errors) == 1 and "readOnlyRootFilesytem" in errors[0]


def test_install_dry_run_is_clean() -> None:
    """`helm install --dry-run=client` works offline (no cluster; server-side validation
    needs one) and prints the manifests and the NOTES without any warning."""
    out = helm("install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client")
    assert out.stderr.strip() == "", out.stderr
    assert "NOTES:" in out.stdout
    assert f"svc/{RELEASE}-tollgate-orchestrator" in out.stdout
    assert "kind: Deployment" in out.stdout


def test_values_defaults_match_the_schema() -> None:
    import jsonschema

    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.Draft202012Validator(schema).validate(values)


BAD_VALUES: dict[str, tuple[dict[str, Any], str]] = {
    "two operators": ({"services": {"operator": {"replicas": 2}}}, "/services/operator/replicas"),
    "operator autoscaling": (
        {
            "services": {
                "operator": {
                    "autoscaling": {
                        "enabled": True,
                        "minReplicas": 1,
                        "maxReplicas": 3,
                        "targetCPUUtilizationPercentage": 50,
                    }
                }
            }
        },
        "/services/operator",
    ),
    "pdb blocking drains": (
        {"services": {"router": {"pdb": {"enabled": True, "maxUnavailable": 0}}}},
        "/services/router/pdb/maxUnavailable",
    ),
    "replicas as text": (
        {"services": {"router": {"replicas": "two"}}},
        "/services/router/replicas",
    ),
    "port out of range": (
        {"services": {"cache": {"ports": {"grpc": 70000}}}},
        "/services/cache/ports/grpc",
    ),
    "unknown cache backend": (
        {"services": {"cache": {"backend": "disk"}}},
        "/services/cache/backend",
    ),
    "misspelt key": ({"serviceMonitor": {"enabeld": True}}, "/serviceMonitor"),
    "unknown top-level key": ({"replicaCount": 3}, "replicaCount"),
    "missing limits": (
        {"services": {"router": {"resources": {"limits": None}}}},  # null deletes a default
        "/services/router/resources",
    ),
    "bad log level": ({"logLevel": "loud"}, "/logLevel"),
    "credentials in redis url": ({"redis": {"url": "redis://:hunter2@redis:6379/0"}}, "/redis/url"),
    "image digest not sha256": ({"image": {"digest": "latest"}}, "/image/digest"),
    "provider key without secret": (
        {"providerKeys": {"OPENAI_API_KEY": {"secretKey": "k"}}},
        "/providerKeys/OPENAI_API_KEY",
    ),
    "label value not a string": (
        {"serviceMonitor": {"additionalLabels": {"release": 1}}},
        "/serviceMonitor/additionalLabels/release",
    ),
    "unknown scrape protocol": (
        {"serviceMonitor": {"scrapeProtocols": ["OpenMetrics"]}},
        "/serviceMonitor/scrapeProtocols/0",
    ),
    "tracing endpoint without a scheme": (
        {"tracing": {"enabled": True, "endpoint": "otel-collector:4317"}},
        "/tracing/endpoint",
    ),
    "unknown tracing protocol": ({"tracing": {"protocol": "http/json"}}, "/tracing/protocol"),
    "unknown sampler": ({"tracing": {"sampler": "ratio"}}, "/tracing/sampler"),
    "sampler ratio above 1": ({"tracing": {"samplerArg": "1.5"}}, "/tracing/samplerArg"),
    "tracing headers inline": (  # credentials only through tracing.headersSecret
        {"tracing": {"headers": "authorization=Bearer x"}},
        "/tracing",
    ),
    "resource attribute with a comma": (
        {"tracing": {"resourceAttributes": {"team": "a,b"}}},
        "/tracing/resourceAttributes/team",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_bad_values_file_makes_helm_fail(case: str, tmp_path: Path) -> None:
    values, where = BAD_VALUES[case]
    f = tmp_path / "bad-values.yaml"
    f.write_text(yaml.safe_dump(values))
    out = helm("template", RELEASE, str(CHART), "-f", str(f), check=False)
    assert out.returncode != 0, f"{case}: Helm accepted bad values"
    assert "schema" in out.stderr and where in out.stderr, out.stderr


def test_alertmanager_config_without_a_receiver_fails() -> None:
    out = helm(
        "template",
        RELEASE,
        str(CHART),
        "--api-versions",
        "monitoring.coreos.com/v1alpha1",
        "--set",
        "alertmanagerConfig.enabled=true",
        check=False,
    )
    assert out.returncode != 0
    assert "at least one of alertmanagerConfig.slack" in out.stderr


def test_oldest_unsupported_kubernetes_is_refused() -> None:
    oldest, _ = kube_versions()
    major, minor = oldest.split(".")[:2]
    out = helm(
        "template",
        RELEASE,
        str(CHART),
        "--kube-version",
        f"{major}.{int(minor) - 1}.0",
        check=False,
    )
    assert out.returncode != 0 and "kubeVersion" in out.stderr


def test_crds_dir_holds_only_tollgate_crds() -> None:
    """crds/ belongs to the operator's issue and may still be empty or missing; whatever is
    there must be installable by Helm as CRDs of the tollgate.dev group."""
    crd_dir = CHART / "crds"
    files = sorted(crd_dir.glob("*.yaml")) if crd_dir.is_dir() else []
    for f in files:
        for doc in (d for d in yaml.safe_load_all(f.read_text()) if d):
            assert doc["apiVersion"] == "apiextensions.k8s.io/v1", f
            assert doc["kind"] == "CustomResourceDefinition", f
            assert doc["spec"]["group"] == "tollgate.dev", f
    out = helm("template", RELEASE, str(CHART), "--include-crds")
    crds = of_kind([d for d in yaml.safe_load_all(out.stdout) if d], "CustomResourceDefinition")
    assert len(crds) == sum(1 for f in files for d in yaml.safe_load_all(f.read_text()) if d), (
        "helm did not pick up every CRD in crds/"
    )
