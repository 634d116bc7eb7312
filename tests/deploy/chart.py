"""Helpers for the chart tests: find Helm, render the chart, load the output.

Helm comes from `make tools` (.tools/bin/helm) or PATH. Missing tools fail the
test under CI (CI=true) and skip it elsewhere, with a message that says what was
not checked.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "tollgate"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
KIND_VALUES = CHART / "values" / "kind.yaml"
SCHEMAS = ROOT.parent / "shared" / "schemas" / "prometheus-operator-v0.93.0"
MONITORING_APIS = ("monitoring.coreos.com/v1", "monitoring.coreos.com/v1alpha1")
RELEASE = "tg"
NAMESPACE = "tollgate"

Manifest = dict[str, Any]


def missing(what: str, why: str) -> None:
    """Fail in CI, skip elsewhere: a tool or file the test needs is not there."""
    msg = f"{what} not checked: {why}"
    if os.environ.get("CI") == "true":
        pytest.fail(msg)
    pytest.skip(msg)


def helm_bin() -> str:
    local = ROOT / ".tools" / "bin" / "helm"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    found = shutil.which("helm")
    if found is None:
        missing("the Helm chart", "no helm binary; run `make tools`")
        raise AssertionError("unreachable")
    return found


def tool(name: str, venv: Path | None = None) -> str:
    """A console script from the project's venv (or the given one), else PATH."""
    import sys

    candidates = [Path(sys.executable).parent / name]
    if venv is not None:
        candidates.insert(0, venv / "bin" / name)
    for c in candidates:
        if c.is_file():
            return str(c)
    found = shutil.which(name)
    if found is None:
        missing(name, f"{name} is not installed; run `make venv tools`")
        raise AssertionError("unreachable")
    return found


def helm(
    *args: str, check: bool = True, kubeconfig: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run Helm; without a cluster unless `kubeconfig` names one (tests/deploy/fake_kube.py)."""
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig) if kubeconfig else os.devnull,
        "HELM_CACHE_HOME": "/tmp/tollgate-helm-cache",
    }
    proc = subprocess.run(
        [helm_bin(), *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def render_args(
    values: Sequence[Path] = (),
    sets: Sequence[str] = (),
    api_versions: Iterable[str] = MONITORING_APIS,
    kube_version: str | None = None,
    chart: Path = CHART,
) -> list[str]:
    args = ["template", RELEASE, str(chart), "--namespace", NAMESPACE]
    for v in values:
        args += ["-f", str(v)]
    for s in sets:
        args += ["--set", s]
    for api in api_versions:
        args += ["--api-versions", api]
    if kube_version:
        args += ["--kube-version", kube_version]
    return args


def render_text(
    values: Sequence[Path] = (),
    sets: Sequence[str] = (),
    api_versions: Iterable[str] = MONITORING_APIS,
    kube_version: str | None = None,
    chart: Path = CHART,
) -> str:
    return helm(*render_args(values, sets, api_versions, kube_version, chart)).stdout


def render(
    values: Sequence[Path] = (),
    sets: Sequence[str] = (),
    api_versions: Iterable[str] = MONITORING_APIS,
    kube_version: str | None = None,
    chart: Path = CHART,
) -> list[Manifest]:
    text = render_text(values, sets, api_versions, kube_version, chart)
    return [d for d in yaml.safe_load_all(text) if d]


def of_kind(docs: Iterable[Manifest], kind: str) -> list[Manifest]:
    return [d for d in docs if d.get("kind") == kind]


def by_name(docs: Iterable[Manifest], kind: str, suffix: str) -> Manifest:
    found = [d for d in of_kind(docs, kind) if d["metadata"]["name"].endswith(suffix)]
    assert len(found) == 1, f"expected one {kind} named *{suffix}, got {len(found)}"
    return found[0]


def pod_specs(docs: Iterable[Manifest]) -> list[tuple[str, Manifest]]:
    """(object name, pod spec) of every workload and bare pod."""
    out = []
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            out.append((f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]["spec"]))
        elif d["kind"] == "Pod":
            out.append((f"Pod/{d['metadata']['name']}", d["spec"]))
    return out


def component(d: Manifest) -> str:
    return str(d["metadata"]["labels"].get("app.kubernetes.io/component", ""))


def kube_versions() -> tuple[str, str]:
    """The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest
    that kubernetes-validate ships schemas for."""
    import kubernetes_validate.utils as kv  # type: ignore[import-untyped]

    floor = yaml.safe_load((CHART / "Chart.yaml").read_text())["kubeVersion"]
    oldest = floor.removeprefix(">=").removesuffix("-0").strip()
    newest = str(kv.latest_version())
    assert oldest in {v for v in kv.all_versions()} or oldest.rsplit(".", 1)[0] in {
        v.rsplit(".", 1)[0] for v in kv.all_versions()
    }, f"kubernetes-validate has no schemas for the chart's oldest version {oldest}"
    return oldest, newest
