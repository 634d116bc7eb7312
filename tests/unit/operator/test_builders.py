"""The operator's pure builders: spec -> policy YAML, budgets, PrometheusRules, conditions,
EndpointSlices -> addresses."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from tollgate_common.policy import INTENTS, TIERS, parse_policy
from tollgate_operator import builders as b

EXAMPLES = Path(__file__).resolve().parents[3] / "deploy" / "helm" / "tollgate" / "examples"


def _docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((EXAMPLES / name).read_text()) if d]


def policy_spec() -> dict[str, Any]:
    return copy.deepcopy(_docs("routingpolicy.yaml")[0]["spec"])


def budget_body(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "tollgate.dev/v1alpha1",
        "kind": "CostBudget",
        "metadata": {"name": "team-a-monthly", "namespace": "llm", "uid": "u-1"},
        "spec": {"tenant": "team-a", "period": "month", "limitUSD": 500, **spec},
    }


# --- RoutingPolicy ------------------------------------------------------------------------


def test_example_policy_converts_to_a_valid_policy() -> None:
    built = b.build_policy("default", "llm", policy_spec())
    p = built.policy
    assert p.version == built.version
    assert p.default_model == "gpt-4o-mini" and p.baseline_model == "gpt-4o"
    assert p.providers["openai"].api_key_env == "OPENAI_API_KEY"
    llama = p.models["llama-3.1-8b"]
    assert llama.upstream_model == "meta-llama/Llama-3.1-8B-Instruct"
    assert (llama.input_per_mtok, llama.output_per_mtok, llama.context_window) == (
        0.02,
        0.06,
        131072,
    )
    assert p.models["gpt-4o"].input_per_mtok == 2.5  # from the shipped price table
    assert p.tenants["team-research"].max_tier == "medium"
    assert p.chain("code", "small", "team-research") == ["gpt-4.1-nano", "gpt-4.1-mini"]
    assert p.cache.ttl_seconds == 3600
    # The routers load exactly this text: it parses on its own, version included.
    assert parse_policy(built.text).version == built.version
    assert built.text.startswith("# Written by tollgate-operator from RoutingPolicy llm/default")


def test_version_follows_content_only() -> None:
    a = b.build_policy("default", "llm", policy_spec())
    again = b.build_policy("default", "llm", policy_spec())
    assert (a.version, a.text) == (again.version, again.text)
    changed = policy_spec()
    changed["routes"]["chat"]["small"] = ["gpt-4o-mini"]
    assert b.build_policy("default", "llm", changed).version != a.version
    assert a.version.startswith("default-")


def test_unknown_model_in_a_chain_names_the_resource_field() -> None:
    spec = policy_spec()
    spec["routes"]["code"]["large"] = ["gpt-5", "no-such-model"]
    with pytest.raises(b.SpecError) as exc:
        b.build_policy("default", "llm", spec)
    assert "spec.routes.code.large[1]: unknown model 'no-such-model'" in str(exc.value)


def test_policy_errors_use_the_camel_case_field_names() -> None:
    spec = policy_spec()
    spec["defaultModel"] = "nope"
    spec["tenants"]["team-research"]["allowedModels"] = ["gpt-4o", "ghost"]
    with pytest.raises(b.SpecError) as exc:
        b.build_policy("default", "llm", spec)
    msg = str(exc.value)
    assert "spec.defaultModel: unknown model 'nope'" in msg
    assert "spec.tenants.team-research.allowedModels[1]: unknown model 'ghost'" in msg


def test_negative_price_is_refused_with_its_path() -> None:
    spec = policy_spec()
    spec["models"]["llama-3.1-8b"]["outputPerMTok"] = -1
    with pytest.raises(b.SpecError, match=r"spec\.models\.llama-3\.1-8b\.outputPerMTok"):
        b.build_policy("default", "llm", spec)


def test_missing_intent_is_refused() -> None:
    spec = policy_spec()
    del spec["routes"]["math"]
    with pytest.raises(b.SpecError, match=r"spec\.routes\.math: missing"):
        b.build_policy("default", "llm", spec)


@pytest.mark.parametrize(
    ("path", "field"),
    [((), "spec.colour"), (("providers", "openai"), "spec.providers.openai.base_url")],
)
def test_unknown_fields_are_refused(path: tuple[str, ...], field: str) -> None:
    spec = policy_spec()
    target = spec
    for key in path:
        target = target[key]
    target[field.rsplit(".", 1)[1]] = "x"
    with pytest.raises(b.SpecError, match=f"{field}: unknown field"):
        b.policy_from_spec(spec)


def test_camelize_leaves_model_names_and_free_text_alone() -> None:
    msg = "models.gpt-4.1.input_per_mtok: Input should be >= 0; a plain sentence"
    assert b.camelize_message(msg) == (
        "spec.models.gpt-4.1.inputPerMTok: Input should be >= 0; a plain sentence"
    )


# --- CostBudget ---------------------------------------------------------------------------------


def test_budget_defaults_match_the_crd_defaults() -> None:
    budget = b.budget_from_spec(budget_body()["spec"])
    assert budget.thresholds == (0.5, 0.8, 1.0)
    assert budget.action == "reject"
    assert budget.key == ("team-a", "month")


def test_thresholds_are_sorted_and_deduplicated() -> None:
    budget = b.budget_from_spec(budget_body(thresholds=[1.0, 0.5, 1.0, 1.5])["spec"])
    assert budget.thresholds == (0.5, 1.0, 1.5)


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"period": "week"}, "spec.period"),
        ({"limitUSD": 0}, "spec.limitUSD"),
        ({"limitUSD": "100"}, "spec.limitUSD"),
        ({"thresholds": [0.5, 2.5]}, r"spec.thresholds\[1\]"),
        ({"thresholds": [0]}, r"spec.thresholds\[0\]"),
        ({"thresholds": []}, "spec.thresholds"),
        ({"action": "block"}, "spec.action"),
        ({"tenant": "team a"}, "spec.tenant"),
        ({"notification": {"labels": {"bad-name": "x"}}}, "spec.notification.labels.bad-name"),
        ({"notification": {"labels": {"tenant": "x"}}}, "spec.notification.labels.tenant"),
        ({"notification": {"labels": {"team": 3}}}, "spec.notification.labels.team"),
        ({"notify": {}}, "spec.notify"),
    ],
)
def test_bad_budgets_name_the_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(b.SpecError, match=field):
        b.budget_from_spec(budget_body(**spec)["spec"])


def test_missing_tenant_is_refused() -> None:
    spec = budget_body()["spec"]
    del spec["tenant"]
    with pytest.raises(b.SpecError, match=r"spec\.tenant: required"):
        b.budget_from_spec(spec)


def test_budget_fields_fill_the_proto_message() -> None:
    from tollgate.orchestrator.v1 import orchestrator_pb2

    budget = b.budget_from_spec(budget_body(action="downgrade")["spec"])
    msg = orchestrator_pb2.Budget(**b.budget_fields(budget, "operator:llm/team-a-monthly"))
    assert (msg.tenant, msg.period, msg.limit_usd, msg.action) == (
        "team-a",
        "month",
        500.0,
        "downgrade",
    )
    assert list(msg.thresholds) == [0.5, 0.8, 1.0]
    assert msg.source == "operator:llm/team-a-monthly"


def test_prometheus_rule_has_one_alert_per_threshold() -> None:
    body = budget_body(
        thresholds=[0.5, 1.0],
        notification={"labels": {"team": "a", "channel": "llm-costs"}},
    )
    budget = b.budget_from_spec(body["spec"])
    rule = b.prometheus_rule(body, budget, {"release": "kps"})
    meta = rule["metadata"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["kind"] == "PrometheusRule"
    assert meta["name"] == "team-a-monthly-budget-alerts" and meta["namespace"] == "llm"
    assert meta["labels"]["release"] == "kps"
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "tollgate-operator"
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "tollgate.dev/v1alpha1",
            "kind": "CostBudget",
            "name": "team-a-monthly",
            "uid": "u-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    (group,) = rule["spec"]["groups"]
    half, full = group["rules"]
    spent = 'max by (tenant, period) (tollgate_budget_spent_usd{tenant="team-a",period="month"})'
    assert half["expr"] == f"{spent} / 500 >= 0.5"
    assert full["expr"] == f"{spent} / 500 >= 1"
    assert (half["alert"], full["alert"]) == ("TollgateBudgetThreshold", "TollgateBudgetExceeded")
    assert half["labels"] == {
        "severity": "warning",
        "threshold": "0.5",
        "budget": "llm/team-a-monthly",
        "team": "a",
        "channel": "llm-costs",
    }
    assert full["labels"]["severity"] == "critical"
    assert "50%" in half["annotations"]["summary"]
    assert "monthly" in half["annotations"]["summary"]
    assert "{{ $value | humanizePercentage }}" in full["annotations"]["description"]
    assert "rejected" in full["annotations"]["description"]


def test_notification_severity_is_reserved() -> None:
    body = budget_body(notification={"labels": {"severity": "info"}})
    with pytest.raises(b.SpecError, match="severity"):
        b.budget_from_spec(body["spec"])


def test_rule_expressions_only_use_catalog_metrics() -> None:
    from tollgate_common.metrics.catalog import CATALOG

    assert b.BUDGET_SPENT_METRIC in CATALOG
    assert "orchestrator" in CATALOG[b.BUDGET_SPENT_METRIC].services


def test_long_names_are_shortened_stably() -> None:
    long = "x" * 250
    name = b.child_name(long, "budget-alerts")
    assert len(name) <= 253 and name.endswith("-budget-alerts")
    assert name == b.child_name(long, "budget-alerts")
    body = budget_body()
    body["metadata"]["name"] = long
    rule = b.prometheus_rule(body, b.budget_from_spec(body["spec"]), {})
    assert "tollgate.dev/costbudget" not in rule["metadata"]["labels"]  # over 63 chars


def test_the_oldest_budget_owns_a_tenant_period() -> None:
    old = b.BudgetClaim("b", "2026-01-01T00:00:00Z", {})
    new = b.BudgetClaim("a", "2026-02-01T00:00:00Z", {})
    same_time = b.BudgetClaim("a0", "2026-01-01T00:00:00Z", {})
    assert b.budget_owner([new, old]) == old
    assert b.budget_owner([old, same_time]) == same_time
    assert b.budget_owner([]) is None


# --- conditions and status ----------------------------------------------------------------------


def test_transition_time_moves_only_when_the_status_flips() -> None:
    c1 = b.set_condition(
        [], type="Applied", status=True, reason="Applied", message="m", generation=1, now="t1"
    )
    c2 = b.set_condition(
        c1, type="Applied", status=True, reason="Applied", message="m2", generation=2, now="t2"
    )
    assert c2[0]["lastTransitionTime"] == "t1"
    assert (c2[0]["message"], c2[0]["observedGeneration"]) == ("m2", 2)
    c3 = b.set_condition(
        c2, type="Applied", status=False, reason="PushFailed", message="x", generation=2, now="t3"
    )
    assert (c3[0]["status"], c3[0]["lastTransitionTime"]) == ("False", "t3")
    c4 = b.set_condition(
        c3, type="Invalid", status=False, reason="Valid", message="ok", generation=2, now="t4"
    )
    assert [c["type"] for c in c4] == ["Applied", "Invalid"]


def test_status_changes_lists_only_what_differs() -> None:
    current = {"observedGeneration": 1, "routers": 2, "kopf": {"progress": {}}}
    desired = {"observedGeneration": 1, "routers": 3}
    assert b.status_changes(current, desired) == {"routers": 3}
    assert b.status_changes(desired, desired) == {}


# --- discovery ---------------------------------------------------------------------------------


def _slice(service: str, ports: list[dict[str, Any]], endpoints: list[dict[str, Any]], **kw: Any):
    return {
        "metadata": {"labels": {"kubernetes.io/service-name": service}},
        "addressType": kw.get("addressType", "IPv4"),
        "ports": ports,
        "endpoints": endpoints,
    }


def test_endpoint_addresses_keep_ready_endpoints_of_the_service() -> None:
    slices = [
        _slice(
            "router",
            [{"name": "metrics", "port": 9101}, {"name": "grpc", "port": 50051}],
            [
                {"addresses": ["10.0.0.1"], "conditions": {"ready": True}},
                {"addresses": ["10.0.0.2"]},  # unknown readiness counts as ready
                {"addresses": ["10.0.0.3"], "conditions": {"ready": False}},
                {"addresses": ["10.0.0.4"], "conditions": {"ready": True, "terminating": True}},
            ],
        ),
        _slice(
            "router",
            [{"name": "grpc", "port": 50051}],
            [{"addresses": ["fd00::5"]}],
            addressType="IPv6",
        ),
        _slice("cache", [{"name": "grpc", "port": 50052}], [{"addresses": ["10.0.0.9"]}]),
        _slice("router", [{"port": 50051}], [{"addresses": ["r.example"]}], addressType="FQDN"),
    ]
    assert b.endpoint_addresses(slices, "router", 50051) == [
        "10.0.0.1:50051",
        "10.0.0.2:50051",
        "[fd00::5]:50051",
    ]


def test_endpoint_port_falls_back_to_number_then_single_port() -> None:
    by_number = [_slice("r", [{"name": "x", "port": 1}, {"port": 7}], [{"addresses": ["a"]}])]
    assert b.endpoint_addresses(by_number, "r", 7) == ["a:7"]
    single = [_slice("r", [{"name": "rpc", "port": 9000}], [{"addresses": ["a"]}])]
    assert b.endpoint_addresses(single, "r", 50051) == ["a:9000"]
    ambiguous = [_slice("r", [{"port": 1}, {"port": 2}], [{"addresses": ["a"]}])]
    assert b.endpoint_addresses(ambiguous, "r", 3) == []


def test_backoff_grows_and_is_capped() -> None:
    delays = [b.backoff_delay(i) for i in range(10)]
    assert delays[:3] == [2.0, 4.0, 8.0]
    assert max(delays) == 120.0 and delays == sorted(delays)


def test_every_intent_and_tier_is_in_the_example() -> None:
    routes = policy_spec()["routes"]
    assert set(routes) == set(INTENTS)
    assert all(set(t) == set(TIERS) for t in routes.values())
