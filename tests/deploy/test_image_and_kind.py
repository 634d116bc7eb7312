"""What can be checked here of the image and the kind flow without a Docker engine:
the Dockerfile (hadolint, non-root, pinned base, multi-stage, build context), the
shell scripts (shellcheck), the kind manifests, the workflow, the Makefile targets
and the smoke test's own logic."""

from __future__ import annotations

import fnmatch
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy import kind_smoke
from tests.deploy.chart import CHART, ROOT, kube_versions, tool

DOCKERFILE = ROOT / "Dockerfile"
SERVICES = ("router", "cache", "orchestrator", "simulator", "operator")


def _instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_passes_hadolint() -> None:
    proc = subprocess.run(
        [tool("hadolint"), "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_image_is_multi_stage_on_a_pinned_base_and_non_root() -> None:
    ins = _instructions()
    args = dict(a.split("=", 1) for w, a in ins if w == "ARG" and "=" in a)
    base = args["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11[.0-9]*-slim-bookworm(@sha256:[0-9a-f]{64})?", base), base
    froms = [a for w, a in ins if w == "FROM"]
    assert len(froms) >= 2 and all(f.startswith("${PYTHON_IMAGE}") for f in froms)
    users = [a for w, a in ins if w == "USER"]
    assert users and users[-1] == "10001:10001"
    env = " ".join(a for w, a in ins if w == "ENV")
    assert "PYTHONPATH=/app/services:/app/proto/gen/python" in env
    # The final stage copies only from the build stage: no compiler, no pip cache.
    final = ins[max(i for i, (w, _) in enumerate(ins) if w == "FROM") :]
    assert all("--from=build" in a for w, a in final if w == "COPY")


def _ignored(path: str, patterns: list[str]) -> bool:
    """.dockerignore semantics, enough for this file: last matching pattern wins."""
    ignored = False
    for p in patterns:
        negate = p.startswith("!")
        pat = p[1:] if negate else p
        pat = pat.rstrip("/")
        if (
            fnmatch.fnmatch(path, pat)
            or path.startswith(pat + "/")
            or fnmatch.fnmatch(path, pat.replace("**/", "*/"))
        ):
            ignored = not negate
    return ignored


def test_build_context_holds_what_the_image_copies() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for word, arg in _instructions():
        if word == "COPY" and "--from=" not in arg:
            src = arg.split()[0]
            assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
            assert not _ignored(src, patterns), f"COPY {src}: excluded by .dockerignore"
    for private in (".venv", ".git", ".tools", "tests", "deploy"):
        assert _ignored(private, patterns), f"{private} would be sent to the Docker daemon"


def test_chart_runs_the_modules_the_image_holds() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for svc in SERVICES:
        module = values["services"][svc]["module"]
        assert module == f"tollgate_{svc}"
        assert (ROOT / "services" / module / "__main__.py").is_file(), (
            f"python -m {module} would fail in the image"
        )


def test_shell_scripts_pass_shellcheck() -> None:
    scripts = sorted([*ROOT.glob("deploy/kind/*.sh"), *ROOT.glob("tools/*.sh"), ROOT / ".ci/run"])
    assert any(p.parent.name == "kind" for p in scripts)
    proc = subprocess.run(
        [tool("shellcheck"), "--shell=bash", "--severity=style", *map(str, scripts)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_kind_redis_manifest_is_valid_and_locked_down() -> None:
    import kubernetes_validate.utils as kv  # type: ignore[import-untyped]

    docs = [d for d in yaml.safe_load_all((ROOT / "deploy/kind/redis.yaml").read_text()) if d]
    for version in kube_versions():
        for d in docs:
            kv.validate(d, version, strict=True)
    dep = next(d for d in docs if d["kind"] == "Deployment")
    spec = dep["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    c = spec["containers"][0]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"requests", "limits"} <= set(c["resources"])


def test_kind_values_match_the_kind_flow() -> None:
    values = yaml.safe_load((CHART / "values" / "kind.yaml").read_text())
    e2e = (ROOT / "deploy/kind/e2e.sh").read_text()
    up = (ROOT / "deploy/kind/up.sh").read_text()
    # The image up.sh loads is the one the values use, never pulled.
    assert "IMAGE=${IMAGE:-tollgate:dev}" in up
    assert f"{values['image']['repository']}:{values['image']['tag']}" == "tollgate:dev"
    assert values["image"]["pullPolicy"] == "Never"
    # The Secret and the Redis that e2e.sh creates are the ones the values name.
    assert f"create secret generic {values['apiKeys']['existingSecret']}" in e2e
    redis = yaml.safe_load_all((ROOT / "deploy/kind/redis.yaml").read_text())
    svc = next(d for d in redis if d and d["kind"] == "Service")
    assert values["redis"]["url"] == f"redis://{svc['metadata']['name']}:6379/0"
    # kube-prometheus-stack is installed as release "kps"; its selectors want release=kps.
    assert "upgrade --install kps " in up
    assert values["serviceMonitor"]["additionalLabels"] == {"release": "kps"}
    assert values["prometheusRule"]["additionalLabels"] == {"release": "kps"}
    kps = yaml.safe_load((ROOT / "deploy/kind/kps-values.yaml").read_text())
    assert kps["grafana"]["sidecar"]["dashboards"]["label"] == "grafana_dashboard"


def test_workflow_runs_the_make_targets() -> None:
    wf = yaml.safe_load((ROOT / ".github/workflows/kind-e2e.yml").read_text())
    runs = [s.get("run", "") for s in wf["jobs"]["kind-e2e"]["steps"]]
    assert "make kind-up" in runs and "make kind-e2e" in runs
    uses = [s["uses"] for s in wf["jobs"]["kind-e2e"]["steps"] if "uses" in s]
    assert all(re.search(r"@v\d+", u) for u in uses), uses


def test_makefile_has_the_targets_with_help() -> None:
    text = (ROOT / "Makefile").read_text()
    for target in ("image", "image-base", "image-test", "kind-up", "kind-e2e", "helm-lint"):
        assert re.search(rf"^{target}:.*## \S", text, re.M), target


# --- the smoke test's own logic ------------------------------------------------------

DEFAULT_POLICY = yaml.safe_load((CHART / "files/policy/default-policy.yaml").read_text())


def _policy(routes: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "tollgate.dev/v1alpha1",
        "kind": "RoutingPolicy",
        "spec": {"routes": routes},
    }


def test_smoke_moves_a_route_to_another_catalog_model() -> None:
    example = _policy({"chat": DEFAULT_POLICY["routes"]["chat"]})
    # chat small's primary first: the one to skip.
    example["spec"]["models"] = {"gemini-2.5-flash-lite": {}, "gpt-5": {}, "llama-local": {}}
    doc, model = kind_smoke.with_changed_route(example, DEFAULT_POLICY)
    assert model == "gpt-5"  # in the catalog, known to the default, never chat's first pick
    assert doc["spec"]["routes"]["chat"] == {t: ["gpt-5"] for t in ("small", "medium", "large")}
    assert example["spec"]["routes"]["chat"] == DEFAULT_POLICY["routes"]["chat"]  # a copy


def test_smoke_never_moves_a_route_to_an_embedding_model() -> None:
    example = _policy({"chat": DEFAULT_POLICY["routes"]["chat"]})
    example["spec"]["models"] = {
        "text-embedding-3-small": {"provider": "openai", "kind": "embedding"},
        "text-embedding-3-large": {"provider": "openai"},  # embedding in the default policy
        "gpt-5": {},
    }
    _, model = kind_smoke.with_changed_route(example, DEFAULT_POLICY)
    assert model == "gpt-5"


def test_smoke_refuses_a_policy_it_cannot_change() -> None:
    with pytest.raises(ValueError, match="no routes"):
        kind_smoke.with_changed_route(_policy({}), DEFAULT_POLICY)
    only_defaults = _policy({"chat": {}})
    only_defaults["spec"]["models"] = {
        "gemini-2.5-flash-lite": {},
        "gemini-2.5-flash": {},
        "gpt-4.1": {},
    }
    with pytest.raises(ValueError, match="no model to move"):
        kind_smoke.with_changed_route(only_defaults, DEFAULT_POLICY)


def _examples() -> list[Path]:
    return sorted((CHART / "examples").glob("*.yaml")) if (CHART / "examples").is_dir() else []


def _crd_schema(kind: str) -> dict[str, Any] | None:
    for f in sorted((CHART / "crds").glob("*.yaml")) if (CHART / "crds").is_dir() else []:
        crd = yaml.safe_load(f.read_text())
        if crd["spec"]["names"]["kind"] == kind:
            version = next(v for v in crd["spec"]["versions"] if v.get("storage"))
            schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
            return schema
    return None


@pytest.mark.parametrize("path", _examples(), ids=lambda p: p.name)
def test_kind_e2e_can_change_routing_with_the_example(path: Path) -> None:
    """make kind-e2e applies the RoutingPolicy example with its chat routes moved to another
    model; that object must still be one the CRD accepts."""
    import jsonschema

    for doc in yaml.safe_load_all(path.read_text()):
        if isinstance(doc, dict) and doc.get("kind") == "RoutingPolicy":
            changed, model = kind_smoke.with_changed_route(doc, DEFAULT_POLICY)
            assert model in DEFAULT_POLICY["models"]
            schema = _crd_schema("RoutingPolicy")
            if schema is not None:
                jsonschema.Draft7Validator(schema).validate(changed)


def test_smoke_reads_rule_groups_and_scrape_pools(tmp_path: Path) -> None:
    (tmp_path / "files" / "alerts").mkdir(parents=True)
    (tmp_path / "files/alerts/a.yaml").write_text("groups: [{name: g1, rules: []}]\n")
    (tmp_path / "files/alerts/a_test.yaml").write_text("rule_files: [a.yaml]\ntests: []\n")
    assert kind_smoke.rule_groups(tmp_path) == {"g1"}
    assert kind_smoke.scrape_pools(["tollgate-router"], "ns") == {
        "serviceMonitor/ns/tollgate-router/0"
    }
