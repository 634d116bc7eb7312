"""Secure by default, on the rendered manifests of every values set: pod and container
security fields, tokens, PDBs, the operator's rollout and RBAC, NetworkPolicies and
no secret in a ConfigMap or in the values defaults. Checkov covers the generic checks;
these are the ones it does not make."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.deploy.chart import (
    CHART,
    Manifest,
    by_name,
    component,
    of_kind,
    pod_specs,
    render,
)
from tests.deploy.conftest import VALUE_SETS

SETS = sorted(VALUE_SETS)


def _values(name: str) -> dict[str, Any]:
    """The values files of a values set, merged shallowly enough for the keys used here."""
    out: dict[str, Any] = {}
    for f in VALUE_SETS[name]:
        out.update(yaml.safe_load(f.read_text()) or {})
    return out


@pytest.mark.parametrize("name", SETS)
def test_every_pod_is_locked_down(renders: dict[str, list[Manifest]], name: str) -> None:
    pods = pod_specs(renders[name])
    assert pods
    for obj, spec in pods:
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True, obj
        assert psc["seccompProfile"]["type"] == "RuntimeDefault", obj
        assert spec.get("hostNetwork") is not True and spec.get("hostPID") is not True, obj
        tmp_volumes = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
        for c in spec["containers"] + spec.get("initContainers", []):
            sc = c["securityContext"]
            where = f"{obj} container {c['name']}"
            assert sc["runAsNonRoot"] is True, where
            assert sc["runAsUser"] >= 10000, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc.get("privileged") is not True, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert not sc["capabilities"].get("add"), where
            assert sc["seccompProfile"]["type"] == "RuntimeDefault", where
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), f"{where} {kind}"
            tmp = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
            assert tmp and tmp[0]["name"] in tmp_volumes, f"{where}: no emptyDir at /tmp"


@pytest.mark.parametrize("name", SETS)
def test_only_the_operator_gets_a_token(renders: dict[str, list[Manifest]], name: str) -> None:
    docs = renders[name]
    for obj, spec in pod_specs(docs):
        wants = obj.startswith("Deployment/") and obj.endswith("-operator")
        assert spec["automountServiceAccountToken"] is wants, obj
    for sa in of_kind(docs, "ServiceAccount"):
        assert sa["automountServiceAccountToken"] is (component(sa) == "operator"), sa


@pytest.mark.parametrize("name", SETS)
def test_probes(renders: dict[str, list[Manifest]], name: str) -> None:
    """Native gRPC probes on the gRPC services' plaintext ports (a TCP connect when they
    serve TLS: the kubelet's gRPC probe cannot speak it), HTTP for the rest."""
    tls = bool(_values(name).get("grpc", {}).get("tls", {}).get("enabled"))
    for dep in of_kind(renders[name], "Deployment"):
        c = dep["spec"]["template"]["spec"]["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            p = c[probe]
            if component(dep) in ("router", "cache"):
                action = p["tcpSocket"] if tls else p["grpc"]
                assert action["port"] == ports["grpc"], (dep["metadata"]["name"], probe)
            else:
                assert p["httpGet"]["port"] in ports, (dep["metadata"]["name"], probe)
        if component(dep) == "orchestrator":
            assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
            assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"


def _pods_of(docs: list[Manifest], selector: dict[str, str]) -> tuple[Manifest, int]:
    deps = [
        d
        for d in of_kind(docs, "Deployment")
        if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
    ]
    assert len(deps) == 1, f"PDB selector {selector} matches {len(deps)} Deployments"
    dep = deps[0]
    hpas = [
        h
        for h in of_kind(docs, "HorizontalPodAutoscaler")
        if h["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    ]
    replicas = hpas[0]["spec"]["minReplicas"] if hpas else dep["spec"].get("replicas", 1)
    return dep, int(replicas)


@pytest.mark.parametrize("name", SETS)
def test_pdbs_never_require_every_replica(renders: dict[str, list[Manifest]], name: str) -> None:
    docs = renders[name]
    for pdb in of_kind(docs, "PodDisruptionBudget"):
        dep, replicas = _pods_of(docs, pdb["spec"]["selector"]["matchLabels"])
        spec = pdb["spec"]
        assert replicas > 1, f"{pdb['metadata']['name']}: a PDB over a single pod blocks drains"
        if "maxUnavailable" in spec:
            mu = spec["maxUnavailable"]
            assert (isinstance(mu, int) and mu >= 1) or (
                isinstance(mu, str) and re.fullmatch(r"[1-9][0-9]*%", mu)
            ), mu
        else:
            ma = spec["minAvailable"]
            assert isinstance(ma, int) and ma < replicas, ma
    # Every Deployment with more than one pod has a PDB (the values sets keep pdb.enabled).
    covered = {
        _pods_of(docs, p["spec"]["selector"]["matchLabels"])[0]["metadata"]["name"]
        for p in of_kind(docs, "PodDisruptionBudget")
    }
    for dep in of_kind(docs, "Deployment"):
        if _pods_of(docs, dep["spec"]["selector"]["matchLabels"])[1] > 1:
            assert dep["metadata"]["name"] in covered, dep["metadata"]["name"]


@pytest.mark.parametrize("name", SETS)
def test_operator_runs_one_replica_with_recreate(
    renders: dict[str, list[Manifest]], name: str
) -> None:
    docs = renders[name]
    op = by_name(docs, "Deployment", "-operator")
    assert op["spec"]["replicas"] == 1
    assert op["spec"]["strategy"] == {"type": "Recreate"}
    assert not [h for h in of_kind(docs, "HorizontalPodAutoscaler") if component(h) == "operator"]
    assert not [p for p in of_kind(docs, "PodDisruptionBudget") if component(p) == "operator"]


def _rules(role: Manifest) -> set[tuple[str, str, str]]:
    return {
        (group, res, verb)
        for r in role["rules"]
        for group in r["apiGroups"]
        for res in r["resources"]
        for verb in r["verbs"]
    }


def test_operator_rbac_is_minimal(default_render: list[Manifest]) -> None:
    """Exactly what the operator calls (docs/operator.md), namespaced, no cluster scope."""
    role = by_name(default_render, "Role", "-operator")
    crs = ("routingpolicies", "costbudgets")
    want = {
        *{("tollgate.dev", r, v) for r in crs for v in ("get", "list", "watch", "patch")},
        *{("tollgate.dev", f"{r}/status", v) for r in crs for v in ("get", "patch")},
        *{("", "configmaps", v) for v in ("get", "create", "patch")},  # by name: below
        *{
            ("monitoring.coreos.com", "prometheusrules", v)
            for v in ("get", "create", "patch", "delete")
        },
        ("discovery.k8s.io", "endpointslices", "list"),
        ("", "events", "create"),
    }
    assert _rules(role) == want
    assert _configmap_rules(role) == {
        ("tg-tollgate-policy-override", "get"),
        ("tg-tollgate-policy-override", "patch"),
        ("tg-tollgate-policy", "get"),
        (None, "create"),
    }
    assert not of_kind(default_render, "ClusterRole")
    assert not of_kind(default_render, "ClusterRoleBinding")
    op_sa = by_name(default_render, "Deployment", "-operator")["spec"]["template"]["spec"][
        "serviceAccountName"
    ]
    binding = by_name(default_render, "RoleBinding", "-operator")
    assert [s["name"] for s in binding["subjects"]] == [op_sa]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]


def _configmap_rules(role: Manifest) -> set[tuple[str | None, str]]:
    """(resourceName or None for any, verb) of every rule on ConfigMaps."""
    out: set[tuple[str | None, str]] = set()
    for r in role["rules"]:
        if "" in r["apiGroups"] and "configmaps" in r["resources"]:
            names = r.get("resourceNames") or [None]
            out |= {(n, v) for n in names for v in r["verbs"]}
    return out


@pytest.mark.parametrize("name", SETS)
def test_operator_cannot_modify_the_config_configmap(
    renders: dict[str, list[Manifest]], name: str
) -> None:
    """M-7: the operator may change only the policy override ConfigMap it writes. It can
    create ConfigMaps (Kubernetes cannot restrict create by name) but not update, patch or
    delete any other, so <fullname>-config (every service's settings file) is out of reach."""
    docs = renders[name]
    role = by_name(docs, "Role", "-operator")
    config = by_name(docs, "ConfigMap", "-config")["metadata"]["name"]
    op = by_name(docs, "Deployment", "-operator")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in op["env"]}
    rules = _configmap_rules(role)
    writes = {(n, v) for n, v in rules if v in ("update", "patch", "delete", "deletecollection")}
    assert writes == {(env["TOLLGATE_OPERATOR_POLICY_CONFIGMAP"], "patch")}
    assert not {v for n, v in rules if n is None} - {"create"}  # no unrestricted read or write
    assert config not in {n for n, _ in rules}
    assert not [(n, v) for n, v in rules if v in ("list", "watch")]


@pytest.mark.parametrize("name", SETS)
def test_no_wildcard_or_secret_access(renders: dict[str, list[Manifest]], name: str) -> None:
    docs = renders[name]
    for r in of_kind(docs, "Role") + of_kind(docs, "ClusterRole"):
        for rule in r["rules"]:
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
            assert "secrets" not in rule["resources"]
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])


def test_cluster_scan_adds_only_crd_and_namespace_reads() -> None:
    docs = render(sets=["rbac.clusterScan=true"])
    cluster = by_name(docs, "ClusterRole", "-operator")
    assert _rules(cluster) == {
        ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
        ("", "namespaces", "list"),
        ("", "namespaces", "watch"),
    }
    binding = by_name(docs, "ClusterRoleBinding", "-operator")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": cluster["metadata"]["name"],
    }


# --- NetworkPolicies ---------------------------------------------------------------


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return bool(selector.get("matchLabels", {}).items() <= labels.items())


def _ingress_for(docs: list[Manifest], labels: dict[str, str], port: int) -> list[Any] | None:
    """The peers allowed to reach `port` of a pod with `labels`: None means anyone."""
    peers: list[Any] = []
    for np in of_kind(docs, "NetworkPolicy"):
        if not _selects(np["spec"]["podSelector"], labels):
            continue
        for rule in np["spec"].get("ingress", []):
            if rule.get("ports") and port not in [p["port"] for p in rule["ports"]]:
                continue
            if "from" not in rule:
                return None
            peers += rule["from"]
    return peers


def _component_peers(peers: list[Any]) -> set[str]:
    return {
        p["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        for p in peers
        if "namespaceSelector" not in p
    }


def _pod(docs: list[Manifest], comp: str) -> tuple[dict[str, str], dict[str, int]]:
    dep = by_name(docs, "Deployment", f"-{comp}")
    tpl = dep["spec"]["template"]
    ports = {p["name"]: p["containerPort"] for p in tpl["spec"]["containers"][0]["ports"]}
    return tpl["metadata"]["labels"], ports


PROMETHEUS = {"app.kubernetes.io/name": "prometheus"}


def _from_prometheus(peers: list[Any]) -> bool:
    return any(p.get("podSelector", {}).get("matchLabels") == PROMETHEUS for p in peers)


def test_network_policies_let_only_the_orchestrator_take_outside_traffic(
    default_render: list[Manifest],
) -> None:
    docs = default_render
    # Every pod of the release is under a deny-by-default policy.
    labelled = [d["spec"]["template"]["metadata"]["labels"] for d in of_kind(docs, "Deployment")]
    labelled += [d["metadata"]["labels"] for d in of_kind(docs, "Pod")]
    deny = [np for np in of_kind(docs, "NetworkPolicy") if "ingress" not in np["spec"]]
    assert len(deny) == 1 and deny[0]["spec"]["policyTypes"] == ["Ingress"]
    assert all(_selects(deny[0]["spec"]["podSelector"], lab) for lab in labelled)

    router, rports = _pod(docs, "router")
    peers = _ingress_for(docs, router, rports["grpc"])
    assert peers is not None and _component_peers(peers) == {"orchestrator", "operator"}
    assert not _from_prometheus(peers)
    peers = _ingress_for(docs, router, rports["metrics"])
    assert peers is not None and _from_prometheus(peers) and not _component_peers(peers)

    cache, cports = _pod(docs, "cache")
    peers = _ingress_for(docs, cache, cports["grpc"])
    assert peers is not None and _component_peers(peers) == {"orchestrator"}
    peers = _ingress_for(docs, cache, cports["metrics"])
    assert peers is not None and _from_prometheus(peers)

    orch, oports = _pod(docs, "orchestrator")
    assert _ingress_for(docs, orch, oports["http"]) is None  # the API is the way in
    peers = _ingress_for(docs, orch, oports["grpc"])
    assert peers is not None and _component_peers(peers) == {"operator"}
    peers = _ingress_for(docs, orch, oports["metrics"])  # M-4: tenant spend, Prometheus only
    assert peers is not None and _from_prometheus(peers) and not _component_peers(peers)

    op, opports = _pod(docs, "operator")
    assert _ingress_for(docs, op, opports["health"]) == []  # kubelet probes only
    peers = _ingress_for(docs, op, opports["metrics"])
    assert peers is not None and _from_prometheus(peers)


def test_restricted_api_lets_prometheus_scrape_only_the_metrics_port(
    renders: dict[str, list[Manifest]],
) -> None:
    """M-4: the API peers reach the API, Prometheus reaches /metrics on its own port."""
    docs = renders["production-values"]
    orch, ports = _pod(docs, "orchestrator")
    peers = _ingress_for(docs, orch, ports["http"])
    assert peers is not None
    assert not _from_prometheus(peers)
    assert any("namespaceSelector" in p and "podSelector" not in p for p in peers)
    peers = _ingress_for(docs, orch, ports["metrics"])
    assert peers is not None and _from_prometheus(peers) and not _component_peers(peers)
    assert not any("namespaceSelector" in p and "podSelector" not in p for p in peers)


def test_simulator_takes_traffic_from_the_orchestrator_only(
    renders: dict[str, list[Manifest]],
) -> None:
    docs = renders["kind"]
    sim, ports = _pod(docs, "simulator")
    peers = _ingress_for(docs, sim, ports["http"])
    assert peers is not None and _component_peers(peers) == {"orchestrator"}


def test_network_policies_can_be_turned_off(renders: dict[str, list[Manifest]]) -> None:
    assert of_kind(renders["minimal-values"], "NetworkPolicy") == []


# --- secrets -----------------------------------------------------------------------

SECRET_TEXT = [
    re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"),  # OpenAI-style keys
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),  # AWS access key ids
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@]*:[^/\s@]+@"),  # credentials in a URL
    re.compile(r"\bxox[abp]-[A-Za-z0-9-]{10,}"),  # Slack tokens
    re.compile(r"discord(?:app)?\.com/api/webhooks/\d+/"),
    re.compile(r"hooks\.slack\.com/services/"),
]
SECRET_KEY = re.compile(r"(password|passwd|secret|token|api_?key|credential)", re.I)
# Names of references to Secrets (or of env vars), not secrets themselves.
REFERENCE_KEY = re.compile(r"(existingSecret|secretName|secretKey|_env|apiKeys)$")


def _leaves(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, f"{path}.{k}" if path else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _leaves(v, f"{path}[{i}]")
    else:
        yield path, node


def _secret_findings(node: Any) -> list[str]:
    found = []
    for path, value in _leaves(node):
        key = path.rsplit(".", 1)[-1]
        text = value if isinstance(value, str) else ""
        if any(p.search(text) for p in SECRET_TEXT):
            found.append(f"{path}: looks like a credential")
        elif SECRET_KEY.search(key) and not REFERENCE_KEY.search(key) and value not in ("", None):
            found.append(f"{path}: a secret-named key with a value")
    return found


def test_secret_detector_catches_planted_secrets() -> None:
    planted = {
        "a": {"api_key": "abc"},
        "b": "redis://:hunter2@redis:6379",
        "c": "key sk-proj-ABCDEFGHIJKLMNOPQRSTUV",
        "d": {"apiKeys": {"existingSecret": "ok"}, "api_key_env": "OPENAI_API_KEY"},
    }
    assert sorted(f.split(":")[0] for f in _secret_findings(planted)) == ["a.api_key", "b", "c"]


def test_values_defaults_hold_no_secret() -> None:
    for f in [CHART / "values.yaml", *VALUE_SETS["kind"]]:
        assert _secret_findings(yaml.safe_load(f.read_text())) == [], f


@pytest.mark.parametrize("name", SETS)
def test_no_secret_in_a_configmap(renders: dict[str, list[Manifest]], name: str) -> None:
    for cm in of_kind(renders[name], "ConfigMap"):
        for key, text in cm.get("data", {}).items():
            parsed = yaml.safe_load(text) if key.endswith((".yaml", ".yml", ".json")) else text
            assert _secret_findings(parsed) == [], (cm["metadata"]["name"], key)
    # The chart generates only the gRPC caller tokens and their digests (grpc.auth=token)
    # and the orchestrators' cache signing key.
    secrets = {s["metadata"]["name"] for s in of_kind(renders[name], "Secret")}
    mtls = _values(name).get("grpc", {}).get("auth") == "mtls"
    prefix = "gw" if name == "minimal-values" else "tg-tollgate"
    tokens = set() if mtls else {f"{prefix}-grpc-tokens", f"{prefix}-grpc-callers"}
    assert secrets == {*tokens, f"{prefix}-cache-signing"}


def test_keys_come_from_secrets_by_reference(renders: dict[str, list[Manifest]]) -> None:
    docs = renders["production-values"]
    orch = by_name(docs, "Deployment", "-orchestrator")["spec"]["template"]["spec"]
    env = {e["name"]: e for e in orch["containers"][0]["env"]}
    assert env["OPENAI_API_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "openai",
        "key": "api-key",
    }
    assert env["TOLLGATE_ORCHESTRATOR_BUDGET_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "tollgate-budget-redis",
        "key": "url",
    }
    keys_vol = next(v for v in orch["volumes"] if v["name"] == "api-keys")
    assert keys_vol["secret"]["secretName"] == "tollgate-gateway-keys"
    assert keys_vol["secret"]["items"] == [{"key": "keys.yaml", "path": "api-keys.yaml"}]


def test_default_api_keys_secret_is_expected_not_generated() -> None:
    docs = render()
    orch = by_name(docs, "Deployment", "-orchestrator")["spec"]["template"]["spec"]
    vol = next(v for v in orch["volumes"] if v["name"] == "api-keys")
    assert vol["secret"]["secretName"] == "tg-tollgate-api-keys"
    assert "optional" not in vol["secret"]  # fail closed: no keys, no start
