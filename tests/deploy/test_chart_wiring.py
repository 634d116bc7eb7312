"""The components find each other: env names and addresses, mounted files, the policy
ConfigMap (one source of truth with services/tollgate_common/data), the image, the
HPA and the `helm test` pod."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.deploy.chart import (
    CHART,
    ROOT,
    Manifest,
    by_name,
    component,
    of_kind,
    render,
)
from tests.deploy.conftest import VALUE_SETS

DATA = ROOT / "services" / "tollgate_common" / "data"
ENV_PREFIX = {
    "router": "TOLLGATE_ROUTER_",
    "cache": "TOLLGATE_CACHE_",
    "orchestrator": "TOLLGATE_ORCHESTRATOR_",
    "simulator": "TOLLGATE_SIM_",
    "operator": "TOLLGATE_OPERATOR_",
}


def _container(docs: list[Manifest], comp: str) -> tuple[dict[str, Any], dict[str, Any]]:
    spec = by_name(docs, "Deployment", f"-{comp}")["spec"]["template"]["spec"]
    return spec, spec["containers"][0]


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def _service_port(docs: list[Manifest], addr: str) -> None:
    """host:port names a Service of the release that exposes that port."""
    host, port = addr.rsplit(":", 1)
    svc = [s for s in of_kind(docs, "Service") if s["metadata"]["name"] == host]
    assert svc, f"{addr}: no Service {host}"
    assert int(port) in [p["port"] for p in svc[0]["spec"]["ports"]], addr


# The chart's files/policy/*.yaml are byte copies of services/tollgate_common/data/ (Helm's
# .Files cannot read outside the chart): `make generate` writes them and
# tests/unit/test_generated.py (`make check-generated`) proves them identical.


def test_policy_configmap_carries_policy_and_prices(default_render: list[Manifest]) -> None:
    cm = by_name(default_render, "ConfigMap", "-policy")
    assert cm["data"]["policy.yaml"] == (DATA / "default-policy.yaml").read_text()
    tables = sorted(DATA.glob("prices-*.yaml"))
    assert {k for k in cm["data"] if k != "policy.yaml"} == {p.name for p in tables}
    for path in tables:
        assert cm["data"][path.name] == path.read_text()


def test_inline_prices_replace_every_shipped_table() -> None:
    table = "provider: mine\nas_of: 2026-01-01\n"
    data = by_name(render(sets=[f"policy.pricesInline={table}"]), "ConfigMap", "-policy")["data"]
    assert (sorted(data), data["prices-custom.yaml"]) == (
        ["policy.yaml", "prices-custom.yaml"],
        table,
    )


def test_inline_policy_replaces_the_default() -> None:
    policy = "version: custom\ndefault_model: gpt-4o-mini\n"
    docs = render(sets=[f"policy.inline={policy}"])
    assert by_name(docs, "ConfigMap", "-policy")["data"]["policy.yaml"] == policy


def test_config_file_has_one_section_per_service() -> None:
    docs = render(sets=["config.orchestrator.log_level=DEBUG"])
    cm = by_name(docs, "ConfigMap", "-config")
    assert yaml.safe_load(cm["data"]["config.yaml"]) == {"orchestrator": {"log_level": "DEBUG"}}


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_every_component_listens_on_its_ports(
    renders: dict[str, list[Manifest]], name: str
) -> None:
    docs = renders[name]
    for dep in of_kind(docs, "Deployment"):
        comp = component(dep)
        c = dep["spec"]["template"]["spec"]["containers"][0]
        env = _env(c)
        prefix = ENV_PREFIX[comp]
        assert c["command"] == ["python", "-m", f"tollgate_{comp}"]
        assert env[f"{prefix}HOST"] == "0.0.0.0"
        assert env["TOLLGATE_CONFIG"] == "/etc/tollgate/config/config.yaml"
        own = {k for k in env if k.startswith("TOLLGATE_") and k != "TOLLGATE_CONFIG"}
        assert own - {"TOLLGATE_LOG_LEVEL"} <= {k for k in own if k.startswith(prefix)}, comp
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        for pname, number in ports.items():
            key = f"{prefix}PORT" if comp == "simulator" else f"{prefix}{pname.upper()}_PORT"
            assert env[key] == str(number), (comp, key)
        # Every file named in env lies on a mounted volume.
        mounts = [m["mountPath"] for m in c["volumeMounts"]]
        for k, v in env.items():
            if k.endswith(("_FILE", "CONFIG")) and isinstance(v, str):
                assert any(v.startswith(m + "/") for m in mounts), (comp, k, v)


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_peers_are_addressed_by_service(renders: dict[str, list[Manifest]], name: str) -> None:
    docs = renders[name]
    _, orch = _container(docs, "orchestrator")
    env = _env(orch)
    _service_port(docs, env["TOLLGATE_ORCHESTRATOR_ROUTER_ADDR"])
    _service_port(docs, env["TOLLGATE_ORCHESTRATOR_CACHE_ADDR"])
    _, op = _container(docs, "operator")
    openv = _env(op)
    _service_port(
        docs,
        f"{openv['TOLLGATE_OPERATOR_ROUTER_SERVICE']}:{openv['TOLLGATE_OPERATOR_ROUTER_GRPC_PORT']}",
    )
    _service_port(
        docs,
        f"{openv['TOLLGATE_OPERATOR_ORCHESTRATOR_SERVICE']}:"
        f"{openv['TOLLGATE_OPERATOR_ORCHESTRATOR_GRPC_PORT']}",
    )
    assert openv["TOLLGATE_OPERATOR_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}


def test_router_mounts_the_operators_override_optionally(
    default_render: list[Manifest],
) -> None:
    spec, router = _container(default_render, "router")
    _, op = _container(default_render, "operator")
    cm_name = _env(op)["TOLLGATE_OPERATOR_POLICY_CONFIGMAP"]
    assert cm_name == "tg-tollgate-policy-override"
    vol = next(v for v in spec["volumes"] if v["name"] == "policy-override")
    assert vol["configMap"] == {"name": cm_name, "optional": True}
    assert _env(router)["TOLLGATE_ROUTER_POLICY_OVERRIDE_FILE"] == (
        "/etc/tollgate/policy-override/policy.yaml"
    )
    # On delete of the RoutingPolicy the operator pushes the chart's own policy back.
    base = _env(op)["TOLLGATE_OPERATOR_BASE_POLICY_CONFIGMAP"]
    assert "policy.yaml" in by_name(default_render, "ConfigMap", "-policy")["data"]
    assert base == by_name(default_render, "ConfigMap", "-policy")["metadata"]["name"]
    # The chart never creates it: Helm would overwrite what the operator wrote.
    assert not [c for c in of_kind(default_render, "ConfigMap") if c["metadata"]["name"] == cm_name]


def test_kind_values_wire_the_simulator_and_redis(renders: dict[str, list[Manifest]]) -> None:
    docs = renders["kind"]
    _, orch = _container(docs, "orchestrator")
    env = _env(orch)
    assert env["TOLLGATE_ORCHESTRATOR_UPSTREAM_BASE_URL"] == "http://tg-tollgate-simulator:8090/v1"
    # Budget counters have their own Redis, never the cache's (H-6).
    assert env["TOLLGATE_ORCHESTRATOR_BUDGET_REDIS_URL"] == "redis://tollgate-budget-redis:6379/0"
    _, cache = _container(docs, "cache")
    cenv = _env(cache)
    assert cenv["TOLLGATE_CACHE_BACKEND"] == "redis"
    assert cenv["TOLLGATE_CACHE_REDIS_URL"] == "redis://tollgate-redis:6379/0"
    assert orch["image"] == "tollgate:dev" and orch["imagePullPolicy"] == "Never"


def test_default_has_no_upstream_override_and_no_redis(default_render: list[Manifest]) -> None:
    env = _env(_container(default_render, "orchestrator")[1])
    assert "TOLLGATE_ORCHESTRATOR_UPSTREAM_BASE_URL" not in env
    assert "TOLLGATE_ORCHESTRATOR_BUDGET_REDIS_URL" not in env
    assert _env(_container(default_render, "cache")[1])["TOLLGATE_CACHE_BACKEND"] == "memory"


def test_image_tag_defaults_to_app_version_and_digest_pins(
    renders: dict[str, list[Manifest]],
) -> None:
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    _, c = _container(renders["default"], "router")
    assert c["image"] == f"tollgate:{app_version}"
    _, c = _container(renders["production-values"], "router")
    assert c["image"] == "registry.example.com/platform/tollgate@sha256:" + "0" * 64


def test_autoscaled_deployments_leave_replicas_to_the_hpa(
    renders: dict[str, list[Manifest]],
) -> None:
    docs = renders["production-values"]
    hpas = {
        h["spec"]["scaleTargetRef"]["name"]: h for h in of_kind(docs, "HorizontalPodAutoscaler")
    }
    assert set(hpas) == {"tg-tollgate-router", "tg-tollgate-orchestrator"}
    for name, hpa in hpas.items():
        dep = next(d for d in of_kind(docs, "Deployment") if d["metadata"]["name"] == name)
        assert "replicas" not in dep["spec"]
        assert hpa["spec"]["minReplicas"] >= 2
    assert not of_kind(renders["default"], "HorizontalPodAutoscaler")


def test_config_change_rolls_the_pods() -> None:
    a = render(sets=["config.router.log_level=INFO"])
    b = render(sets=["config.router.log_level=DEBUG"])

    def checksum(docs: list[Manifest]) -> str:
        dep = by_name(docs, "Deployment", "-router")
        return str(dep["spec"]["template"]["metadata"]["annotations"]["checksum/config"])

    assert checksum(a) != checksum(b)


def test_helm_test_pod_checks_readyz_and_one_completion(default_render: list[Manifest]) -> None:
    (pod,) = of_kind(default_render, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    c = pod["spec"]["containers"][0]
    script = c["command"][-1]
    assert "/readyz" in script and "chat.completions" in script
    env = _env(c)
    _service_port(default_render, env["BASE_URL"].removeprefix("http://"))
    keys = next(v for v in pod["spec"]["volumes"] if v["name"] == "api-keys")
    assert keys["secret"]["secretName"] == "tg-tollgate-api-keys"
    assert pod["spec"]["restartPolicy"] == "Never"
    compile(script, "helm-test", "exec")  # the embedded script is valid Python


def test_helm_test_can_be_turned_off(renders: dict[str, list[Manifest]]) -> None:
    assert of_kind(renders["minimal-values"], "Pod") == []
