"""The operator for real: ``python -m tollgate_operator`` (kopf) against kmock's Kubernetes
emulator, pushing to real router processes found through EndpointSlices.

The emulator serves the API on loopback in the test's event loop; the operator process
logs in through a kubeconfig that points at it. Everything the test does to the cluster
goes through the HTTP API, like ``kubectl`` would.
"""

from __future__ import annotations

import asyncio
import copy
import secrets
import signal
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import kmock
import pytest
import yaml

from tollgate.router.v1 import router_pb2, router_pb2_grpc
from tollgate_common.policy import DEFAULT_POLICY_FILE, INTENTS, TIERS, parse_policy
from tools.stack import CALLER_NAMES, TOKEN_HEADER, Proc, Stack, base_env, free_port, spawn

pytestmark = [pytest.mark.integration]

NS = "llm"
API = "/apis/tollgate.dev/v1alpha1"
CM = "tollgate-policy-override"
BASE_CM = "tollgate-policy"
ROUTER_SVC = "tollgate-router"
RECONCILES = "tollgate_operator_reconciles_total"


# --- the emulated cluster --------------------------------------------------------------------


def declare_resources(k: Any) -> None:
    info = kmock.ResourceInfo
    # kopf waits for v1/namespaces in discovery before it starts any watch.
    k.resources["v1/namespaces"] = info(
        kind="Namespace", namespaced=False, verbs={"list", "watch", "get"}
    )
    crud = {"list", "watch", "get", "create", "patch", "delete"}
    for plural, kind in (("routingpolicies", "RoutingPolicy"), ("costbudgets", "CostBudget")):
        k.resources[f"tollgate.dev/v1alpha1/{plural}"] = info(
            kind=kind, namespaced=True, verbs=crud, subresources={"status"}
        )
    k.resources["v1/configmaps"] = info(kind="ConfigMap", namespaced=True, verbs=crud)
    k.resources["discovery.k8s.io/v1/endpointslices"] = info(
        kind="EndpointSlice", namespaced=True, verbs=crud
    )
    k.resources["monitoring.coreos.com/v1/prometheusrules"] = info(
        kind="PrometheusRule", namespaced=True, verbs=crud
    )


class Cluster:
    """kubectl-like calls against the emulator, plus views of what it stores and saw."""

    def __init__(self, k: Any) -> None:
        self.k = k
        self.uids = 0

    async def create(self, obj: dict[str, Any], plural: str, api: str = API) -> None:
        obj = copy.deepcopy(obj)
        meta = obj["metadata"]
        self.uids += 1
        meta.setdefault("namespace", NS)
        meta.setdefault("uid", f"uid-{meta['name']}-{self.uids}")  # the emulator sets none
        meta.setdefault("generation", 1)
        # kopf guards its finalizer patches with a JSON-patch test on resourceVersion; the
        # emulator keeps whatever it is given (and never bumps it).
        meta.setdefault("resourceVersion", "1")
        meta.setdefault("creationTimestamp", f"2026-01-01T00:00:{self.uids:02d}Z")
        resp = await self.k.post(f"{api}/namespaces/{NS}/{plural}", json=obj)
        assert resp.status < 300, await resp.text()

    async def update_spec(self, plural: str, name: str, spec: dict[str, Any]) -> None:
        """A spec change bumps the generation, as the API server would. (A merge patch:
        the test's specs keep their map keys and only change lists and values.)"""
        gen = self.get(plural, name)["metadata"]["generation"] + 1
        resp = await self.k.patch(
            f"{API}/namespaces/{NS}/{plural}/{name}",
            json={"spec": spec, "metadata": {"generation": gen}},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert resp.status < 300, await resp.text()

    async def delete(self, plural: str, name: str) -> None:
        resp = await self.k.delete(f"{API}/namespaces/{NS}/{plural}/{name}")
        assert resp.status < 300, await resp.text()

    def find(self, plural: str, name: str) -> dict[str, Any] | None:
        for (res, ns, n), obj in self.k.objects.items():
            if res.plural == plural and ns == NS and n == name and not obj.deleted:
                return dict(obj.raw)
        return None

    def get(self, plural: str, name: str) -> dict[str, Any]:
        obj = self.find(plural, name)
        assert obj is not None, f"{plural}/{name} not found"
        return obj

    def names(self, plural: str) -> list[str]:
        return sorted(
            n
            for (res, _, n), obj in self.k.objects.items()
            if res.plural == plural and not obj.deleted
        )

    def requests(self) -> list[Any]:
        return list(self.k)

    def watching(self, plural: str) -> bool:
        return any(
            r.action == kmock.action.WATCH
            and r.resource is not None
            and r.resource.plural == plural
            for r in self.k
        )

    def writes(self, since: int, plural: str) -> list[str]:
        """Create/patch/delete requests on ``plural`` after request number ``since``."""
        return [
            f"{r.method} {r.url.path}"
            for r in self.requests()[since:]
            if r.resource is not None
            and r.resource.plural == plural
            and r.action in (kmock.action.CREATE, kmock.action.UPDATE, kmock.action.DELETE)
        ]

    def condition(self, plural: str, name: str, ctype: str) -> dict[str, Any]:
        obj = self.find(plural, name) or {}
        for cond in (obj.get("status") or {}).get("conditions") or []:
            if cond["type"] == ctype:
                return dict(cond)
        return {}


async def eventually(check: Callable[[], Any], what: str, within: float = 30.0) -> Any:
    """Poll without blocking the loop (the emulator serves from it). The bound only keeps
    a broken operator from hanging the test."""
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if asyncio.iscoroutine(value):
                value = await value
            last = value
            if value:
                return value
        except (AssertionError, KeyError, grpc.aio.AioRpcError) as exc:
            last = exc
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


# --- the operator process ------------------------------------------------------------------------

# One set of caller tokens for every stack of this module, so that the operator's one
# token is accepted by every router and orchestrator it pushes to.
TOKENS = {name: secrets.token_urlsafe(32) for name in CALLER_NAMES}


def token_metadata(caller: str) -> tuple[tuple[str, str], ...]:
    return ((TOKEN_HEADER, TOKENS[caller]),)


class Operator:
    def __init__(self, name: str, kubeconfig: Path, log_dir: Path, env: dict[str, str]) -> None:
        self.name, self.kubeconfig, self.log_dir, self.env = name, kubeconfig, log_dir, env
        self.health_port = self.metrics_port = 0
        self.proc: Proc | None = None

    def _token_file(self) -> Path:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        path = self.log_dir / f"{self.name}.token"
        path.write_text(TOKENS["operator"] + "\n")
        return path

    async def start(self, cluster: Cluster) -> None:
        self.health_port, self.metrics_port = free_port(), free_port()
        env = base_env(
            {
                "KUBECONFIG": str(self.kubeconfig),
                "TOLLGATE_OPERATOR_NAMESPACE": NS,
                "TOLLGATE_OPERATOR_HEALTH_PORT": str(self.health_port),
                "TOLLGATE_OPERATOR_METRICS_PORT": str(self.metrics_port),
                "TOLLGATE_OPERATOR_ROUTER_SERVICE": ROUTER_SVC,
                "TOLLGATE_OPERATOR_POLICY_CONFIGMAP": CM,
                "TOLLGATE_OPERATOR_BASE_POLICY_CONFIGMAP": BASE_CM,
                "TOLLGATE_OPERATOR_RULE_LABELS": '{"release": "kps"}',
                "TOLLGATE_OPERATOR_PUSH_TIMEOUT_SECONDS": "3",
                "TOLLGATE_OPERATOR_GRPC_TOKEN_FILE": str(self._token_file()),
                "TOLLGATE_LOG_LEVEL": "INFO",
                **self.env,
            }
        )
        self.proc = spawn(
            self.name,
            [sys.executable, "-m", "tollgate_operator"],
            env,
            self.log_dir,
        )
        await eventually(self._healthy, "the operator's /healthz", within=60)
        for plural in ("routingpolicies", "costbudgets"):
            await eventually(partial(cluster.watching, plural), f"kopf watching {plural}")

    def _healthy(self) -> bool:
        assert self.proc is not None
        if not self.proc.alive():
            raise RuntimeError(f"operator exited:\n{self.proc.log_tail()}")
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.health_port}/healthz", timeout=1
            ) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    async def stop(self) -> None:
        if self.proc is not None:
            self.proc.signal(signal.SIGTERM)
            proc = self.proc
            await eventually(lambda: not proc.alive(), "the operator to exit")
            proc.stop()

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=2) as resp:
            return str(resp.read().decode())

    def sample(self, name: str, **labels: str) -> float:
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        total = 0.0
        for line in self.metrics().splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            series, value = line.rsplit(" ", 1)
            got = dict(
                kv.split("=", 1) for kv in series[len(name) + 1 : -1].split(",") if "=" in kv
            )
            if all(got.get(k) == f'"{v}"' for k, v in labels.items()) or not want:
                total += float(value)
        return total

    def log(self) -> str:
        return self.proc.log_tail(200) if self.proc else ""


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture
async def cluster(kmock: Any) -> AsyncIterator[Cluster]:
    declare_resources(kmock)
    yield Cluster(kmock)


@pytest.fixture
def kubeconfig(kmock: Any, tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    server = str(kmock.url).rstrip("/")
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "kmock",
                "clusters": [{"name": "kmock", "cluster": {"server": server}}],
                "users": [{"name": "kmock", "user": {}}],
                "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "kmock"}}],
            }
        )
    )
    return path


@pytest.fixture
async def operator_factory(
    kubeconfig: Path, tmp_path: Path
) -> AsyncIterator[Callable[..., Operator]]:
    made: list[Operator] = []

    def make(**env: str) -> Operator:
        op = Operator(f"operator{len(made) + 1}", kubeconfig, tmp_path / "logs", env)
        made.append(op)
        return op

    yield make
    for op in made:
        if op.proc is not None:
            op.proc.stop()


@pytest.fixture
def routers(tmp_path: Path) -> Iterator[list[Stack]]:
    """Real router processes (each its own Stack so each gets its own ports)."""
    stacks: list[Stack] = []
    yield stacks
    for s in stacks:
        s.stop()


async def start_routers(stacks: list[Stack], tmp_path: Path, n: int) -> list[int]:
    for i in range(n):
        s = Stack(log_dir=tmp_path / f"router{i}", tokens=TOKENS)
        stacks.append(s)
        await asyncio.to_thread(s.start_router)
    return [s.ports.router for s in stacks]


async def publish_endpoints(cluster: Cluster, service: str, ports: list[int]) -> None:
    """One EndpointSlice per replica port (a Service has one port; loopback replicas
    differ by port, so each gets a slice of its own, as a multi-port Service would)."""
    for i, port in enumerate(ports):
        await cluster.create(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"{service}-{i}",
                    "labels": {"kubernetes.io/service-name": service},
                },
                "addressType": "IPv4",
                "ports": [{"name": "grpc", "port": port, "protocol": "TCP"}],
                "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
            },
            "endpointslices",
            api="/apis/discovery.k8s.io/v1",
        )


async def base_policy_configmap(cluster: Cluster) -> None:
    await cluster.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": BASE_CM},
            "data": {"policy.yaml": DEFAULT_POLICY_FILE.read_text()},
        },
        "configmaps",
        api="/api/v1",
    )


async def route(port: int, text: str = "Please write a short poem about the sea.") -> str:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        resp = await router_pb2_grpc.RouterStub(ch).Route(
            router_pb2.RouteRequest(
                model="auto",
                features=router_pb2.MessageFeatures(
                    last_user_text=text, turns=1, prompt_chars=len(text)
                ),
            ),
            timeout=5,
            metadata=token_metadata("orchestrator"),
        )
    return str(resp.chain[0].name)


async def router_policy(port: int) -> router_pb2.GetPolicyResponse:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        resp: router_pb2.GetPolicyResponse = await router_pb2_grpc.RouterStub(ch).GetPolicy(
            router_pb2.GetPolicyRequest(), timeout=5, metadata=token_metadata("operator")
        )
    return resp


def applied(cluster: Cluster, plural: str, name: str) -> bool:
    return cluster.condition(plural, name, "Applied").get("status") == "True"


def one_model_policy(model: str) -> dict[str, Any]:
    """Every intent and tier routes to ``model``: any request shows whether it is live."""
    return {
        "apiVersion": "tollgate.dev/v1alpha1",
        "kind": "RoutingPolicy",
        "metadata": {"name": "default"},
        "spec": {
            "providers": {"openai": {"baseURL": "https://api.openai.com/v1"}},
            "models": {
                "gpt-5-nano": {"provider": "openai"},
                "gpt-4.1-nano": {"provider": "openai"},
                "gpt-4o": {"provider": "openai"},
                "gpt-4o-mini": {"provider": "openai"},
            },
            "defaultModel": "gpt-4o-mini",
            "baselineModel": "gpt-4o",
            "routes": {i: {t: [model] for t in TIERS} for i in INTENTS},
        },
    }


def budget(name: str, tenant: str = "team-a", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "tollgate.dev/v1alpha1",
        "kind": "CostBudget",
        "metadata": {"name": name},
        "spec": {"tenant": tenant, "period": "month", "limitUSD": 200, **spec},
    }


# --- tests ----------------------------------------------------------------------------------


async def test_routing_policy_changes_live_routing(
    cluster: Cluster,
    operator_factory: Callable[..., Operator],
    routers: list[Stack],
    tmp_path: Path,
) -> None:
    ports = await start_routers(routers, tmp_path, 2)
    before = {await route(p) for p in ports}
    assert "gpt-5-nano" not in before
    await publish_endpoints(cluster, ROUTER_SVC, ports)
    await base_policy_configmap(cluster)
    op = operator_factory()
    await op.start(cluster)

    await cluster.create(one_model_policy("gpt-5-nano"), "routingpolicies")
    for p in ports:  # every replica follows within seconds
        await eventually(partial(routes_to, p, {"gpt-5-nano"}), f"router :{p} to follow")
    applied = await eventually(
        lambda: (
            cluster.condition("routingpolicies", "default", "Applied").get("status") == "True"
            and cluster.condition("routingpolicies", "default", "Applied")
        ),
        "Applied=True",
    )
    status = cluster.get("routingpolicies", "default")["status"]
    assert status["observedGeneration"] == 1 and status["routers"] == 2
    assert applied["observedGeneration"] == 1 and applied["reason"] == "Applied"
    assert cluster.condition("routingpolicies", "default", "Invalid")["status"] == "False"
    # The routers report the version the operator recorded, with the operator as source.
    got = await router_policy(ports[0])
    assert got.version == status["policyVersion"]
    assert got.source == f"operator:{NS}/default"
    # Persisted for routers that start later: the ConfigMap holds the same document.
    text = cluster.get("configmaps", CM)["data"]["policy.yaml"]
    assert parse_policy(text).version == status["policyVersion"]

    # A spec change is pushed too, and the generation is observed.
    await cluster.update_spec(
        "routingpolicies", "default", one_model_policy("gpt-4.1-nano")["spec"]
    )
    for p in ports:
        await eventually(partial(routes_to, p, {"gpt-4.1-nano"}), "the updated policy")
    await eventually(
        lambda: cluster.get("routingpolicies", "default")["status"]["observedGeneration"] == 2,
        "observedGeneration 2",
    )

    # Deleting it restores the base policy on the routers and clears the override.
    await cluster.delete("routingpolicies", "default")
    for p in ports:
        await eventually(partial(routes_to, p, before), "the base policy to come back")
    await eventually(lambda: cluster.find("routingpolicies", "default") is None, "finalizer off")
    assert "policy.yaml" not in (cluster.get("configmaps", CM).get("data") or {})
    assert op.sample("tollgate_operator_reconciles_total", kind="RoutingPolicy", result="applied")
    assert op.sample("grpc_client_handled_total", grpc_method="UpdatePolicy", grpc_code="OK") >= 4


async def routes_to(port: int, models: set[str]) -> bool:
    return await route(port) in models


async def test_invalid_policy_is_marked_and_leaves_routing_unchanged(
    cluster: Cluster,
    operator_factory: Callable[..., Operator],
    routers: list[Stack],
    tmp_path: Path,
) -> None:
    (port,) = await start_routers(routers, tmp_path, 1)
    await publish_endpoints(cluster, ROUTER_SVC, [port])
    op = operator_factory()
    await op.start(cluster)

    await cluster.create(one_model_policy("gpt-5-nano"), "routingpolicies")
    await eventually(partial(routes_to, port, {"gpt-5-nano"}), "the valid policy")
    version = (await router_policy(port)).version
    cm_before = cluster.get("configmaps", CM)["data"]["policy.yaml"]

    bad = one_model_policy("gpt-5-nano")["spec"]
    bad["routes"]["code"]["large"] = ["gpt-5-nano", "no-such-model"]
    await cluster.update_spec("routingpolicies", "default", bad)
    invalid = await eventually(
        lambda: (
            cluster.condition("routingpolicies", "default", "Invalid").get("status") == "True"
            and cluster.condition("routingpolicies", "default", "Invalid")
        ),
        "Invalid=True",
    )
    assert invalid["reason"] == "ValidationFailed"
    assert "spec.routes.code.large[1]: unknown model 'no-such-model'" in invalid["message"]
    assert invalid["observedGeneration"] == 2
    applied = cluster.condition("routingpolicies", "default", "Applied")
    assert applied["status"] == "False" and applied["reason"] == "Invalid"
    assert version in applied["message"]  # says which version the routers keep
    # Routing, the router's policy and the persisted copy are all untouched.
    assert await route(port) == "gpt-5-nano"
    assert (await router_policy(port)).version == version
    assert cluster.get("configmaps", CM)["data"]["policy.yaml"] == cm_before
    # A permanent error: not retried in a loop.
    await asyncio.sleep(1.5)
    assert (
        op.sample("tollgate_operator_reconciles_total", kind="RoutingPolicy", result="invalid") == 1
    )

    # Fixing the spec applies it.
    await cluster.update_spec(
        "routingpolicies", "default", one_model_policy("gpt-4.1-nano")["spec"]
    )
    await eventually(partial(routes_to, port, {"gpt-4.1-nano"}), "the fixed policy")
    await eventually(
        lambda: cluster.condition("routingpolicies", "default", "Invalid").get("status") == "False",
        "Invalid=False",
    )


async def test_cost_budget_owns_a_prometheus_rule(
    cluster: Cluster, operator_factory: Callable[..., Operator]
) -> None:
    op = operator_factory()
    await op.start(cluster)
    await cluster.create(
        budget("team-a", thresholds=[0.5, 1.0], notification={"labels": {"team": "a"}}),
        "costbudgets",
    )
    rule = await eventually(
        lambda: cluster.find("prometheusrules", "team-a-budget-alerts"), "the PrometheusRule"
    )
    owner = cluster.get("costbudgets", "team-a")["metadata"]
    assert rule["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "tollgate.dev/v1alpha1",
            "kind": "CostBudget",
            "name": "team-a",
            "uid": owner["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert rule["metadata"]["labels"]["release"] == "kps"
    rules = rule["spec"]["groups"][0]["rules"]
    spent = 'max by (tenant, period) (tollgate_budget_spent_usd{tenant="team-a",period="month"})'
    assert [r["expr"] for r in rules] == [f"{spent} / 200 >= 0.5", f"{spent} / 200 >= 1"]
    assert [r["labels"]["severity"] for r in rules] == ["warning", "critical"]
    assert all(r["labels"]["team"] == "a" for r in rules)
    await eventually(
        lambda: cluster.condition("costbudgets", "team-a", "Applied").get("status") == "True",
        "Applied=True",
    )
    assert cluster.condition("costbudgets", "team-a", "AlertsReady")["status"] == "True"

    # A second budget for the same tenant and period is refused as a conflict.
    await cluster.create(budget("team-a-dup"), "costbudgets")
    conflict = await eventually(
        lambda: (
            cluster.condition("costbudgets", "team-a-dup", "Applied").get("reason") == "Conflict"
            and cluster.condition("costbudgets", "team-a-dup", "Applied")
        ),
        "Conflict",
    )
    assert "team-a" in conflict["message"]
    assert cluster.names("prometheusrules") == ["team-a-budget-alerts"]

    # An invalid budget is marked, and gets no rule.
    await cluster.create(
        budget("bad", tenant="team-b", notification={"labels": {"alertname": "x"}}),
        "costbudgets",
    )
    invalid = await eventually(
        lambda: (
            cluster.condition("costbudgets", "bad", "Invalid").get("status") == "True"
            and cluster.condition("costbudgets", "bad", "Invalid")
        ),
        "Invalid=True",
    )
    assert "spec.notification.labels.alertname" in invalid["message"]

    # Deleting the budget deletes its rule (and the budget goes once the finalizer is off).
    await cluster.delete("costbudgets", "team-a")
    await eventually(lambda: cluster.find("costbudgets", "team-a") is None, "budget gone")
    await eventually(
        lambda: cluster.find("prometheusrules", "team-a-budget-alerts") is None, "rule gone"
    )
    assert cluster.names("prometheusrules") == []
    assert op.sample("tollgate_operator_reconciles_total", kind="CostBudget", result="deleted")


async def test_restart_resumes_without_duplicating_work(
    cluster: Cluster,
    operator_factory: Callable[..., Operator],
    routers: list[Stack],
    tmp_path: Path,
) -> None:
    (port,) = await start_routers(routers, tmp_path, 1)
    await publish_endpoints(cluster, ROUTER_SVC, [port])
    first = operator_factory()
    await first.start(cluster)
    await cluster.create(one_model_policy("gpt-5-nano"), "routingpolicies")
    await cluster.create(budget("team-a"), "costbudgets")
    for plural, name in (("routingpolicies", "default"), ("costbudgets", "team-a")):
        await eventually(
            partial(applied, cluster, plural, name),
            f"{name} applied",
        )
    policy = await router_policy(port)
    status_before = {
        p: cluster.get(p, n)["status"]
        for p, n in (("routingpolicies", "default"), ("costbudgets", "team-a"))
    }
    await first.stop()

    assert any(r.subresource == "status" for r in cluster.requests())  # status is patched there
    mark = len(cluster.requests())
    second = operator_factory()
    await second.start(cluster)
    # Both objects are resumed (reconciled once) by the new process.
    for kind in ("RoutingPolicy", "CostBudget"):
        await eventually(
            partial(
                second.sample, "tollgate_operator_reconciles_total", kind=kind, result="applied"
            ),
            f"{kind} resumed",
        )
    # The router was told again but nothing changed for it.
    assert second.sample("tollgate_operator_pushes_total", target="router", result="unchanged") == 1
    assert second.sample("tollgate_operator_pushes_total", target="router", result="changed") == 0
    after = await router_policy(port)
    assert (after.version, after.source) == (policy.version, policy.source)
    # No object was written again: not the ConfigMap, not the rule, not the statuses.
    for plural in ("configmaps", "prometheusrules"):
        assert cluster.writes(mark, plural) == [], plural
    status_writes = [
        f"{r.method} {r.url.path}" for r in cluster.requests()[mark:] if r.subresource == "status"
    ]
    assert status_writes == []
    assert cluster.names("prometheusrules") == ["team-a-budget-alerts"]
    for p, n in (("routingpolicies", "default"), ("costbudgets", "team-a")):
        assert cluster.get(p, n)["status"] == status_before[p]
    assert second.sample("tollgate_build_info", service="operator") == 1


async def test_budget_applies_without_the_prometheus_operator(
    cluster: Cluster, operator_factory: Callable[..., Operator]
) -> None:
    # A cluster without the monitoring.coreos.com CRDs answers 404 for PrometheusRules.
    cluster.k[kmock.resource("monitoring.coreos.com", "v1", "prometheusrules")] << (
        kmock.KubernetesNotFoundError
    )
    op = operator_factory()
    await op.start(cluster)
    await cluster.create(budget("team-a"), "costbudgets")
    await eventually(partial(applied, cluster, "costbudgets", "team-a"), "Applied=True")
    alerts = cluster.condition("costbudgets", "team-a", "AlertsReady")
    assert (alerts["status"], alerts["reason"]) == ("False", "PrometheusRuleUnsupported")
    # Deleting it still works (and is not blocked by the missing CRD).
    await cluster.delete("costbudgets", "team-a")
    await eventually(lambda: cluster.find("costbudgets", "team-a") is None, "budget gone")


def budget_limits(stack: Stack) -> dict[tuple[str, str], float]:
    """The orchestrator's ``tollgate_budget_limit_usd`` series: the budgets it enforces."""
    with urllib.request.urlopen(stack.orchestrator_metrics_url, timeout=2) as resp:
        text = resp.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("tollgate_budget_limit_usd{"):
            series, value = line.rsplit(" ", 1)
            labels = dict(kv.split("=", 1) for kv in series[series.index("{") + 1 : -1].split(","))
            out[(labels["tenant"].strip('"'), labels["period"].strip('"'))] = float(value)
    return out


@pytest.mark.slow
async def test_budgets_reach_a_real_orchestrator(
    cluster: Cluster,
    operator_factory: Callable[..., Operator],
    stack_factory: Callable[..., Stack],
) -> None:
    stack = stack_factory(
        orch_env={"TOLLGATE_ORCHESTRATOR_API_KEYS": "team-a:sk-test-a-" + "0" * 25}, tokens=TOKENS
    )
    await asyncio.to_thread(stack.start)
    await publish_endpoints(cluster, "tollgate-orchestrator", [stack.ports.orch_grpc])
    op = operator_factory(TOLLGATE_OPERATOR_RESYNC_SECONDS="0.5")
    await op.start(cluster)

    await cluster.create(budget("team-a", action="downgrade"), "costbudgets")
    await eventually(lambda: budget_limits(stack) == {("team-a", "month"): 200.0}, "the budget")
    assert cluster.get("costbudgets", "team-a")["status"]["orchestrators"] == 1

    # Orchestrators keep budgets in memory: a restarted one gets it back from the resync.
    stack.procs["orchestrator"].stop()
    await asyncio.to_thread(stack.start_orchestrator)
    await eventually(lambda: budget_limits(stack) == {("team-a", "month"): 200.0}, "the resync")

    # A second budget for the same tenant and period waits while the first exists...
    await cluster.create(budget("team-a-2", limitUSD=900), "costbudgets")
    await eventually(
        lambda: cluster.condition("costbudgets", "team-a-2", "Applied").get("reason") == "Conflict",
        "Conflict",
    )
    await asyncio.sleep(1.2)  # two resync periods
    assert budget_limits(stack) == {("team-a", "month"): 200.0}
    # ...and takes over when the first is deleted, rather than the budget being removed.
    await cluster.delete("costbudgets", "team-a")
    await eventually(lambda: budget_limits(stack) == {("team-a", "month"): 900.0}, "hand-over")
    await eventually(partial(applied, cluster, "costbudgets", "team-a-2"), "team-a-2 applied")
    # Deleting the last one removes the budget from the orchestrator.
    await cluster.delete("costbudgets", "team-a-2")
    await eventually(lambda: budget_limits(stack) == {}, "the removal")
    assert op.sample("tollgate_operator_pushes_total", target="orchestrator", result="ok") >= 4


async def test_resync_restores_the_policy_on_a_restarted_router(
    cluster: Cluster,
    operator_factory: Callable[..., Operator],
    routers: list[Stack],
    tmp_path: Path,
) -> None:
    (port,) = await start_routers(routers, tmp_path, 1)
    await publish_endpoints(cluster, ROUTER_SVC, [port])
    op = operator_factory(TOLLGATE_OPERATOR_RESYNC_SECONDS="0.5")
    await op.start(cluster)
    await cluster.create(one_model_policy("gpt-5-nano"), "routingpolicies")
    await eventually(partial(routes_to, port, {"gpt-5-nano"}), "the policy")

    # A router that restarts without the override file comes back on its base policy;
    # the operator's resync pushes the RoutingPolicy to it again.
    routers[0].procs["router"].stop()
    await asyncio.to_thread(routers[0].start_router)
    await eventually(partial(routes_to, port, {"gpt-5-nano"}), "the re-push")
    assert op.sample("tollgate_operator_pushes_total", target="router", result="changed") >= 2
