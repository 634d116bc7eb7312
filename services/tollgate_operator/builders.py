"""Pure builders, dict in and dict out: custom resources into policy YAML, budgets,
PrometheusRules, status conditions, and EndpointSlices into addresses.

Nothing here does I/O, so all of it is unit-tested without a cluster.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from tollgate_common.budgets import (
    DEFAULT_ACTION,
    DEFAULT_THRESHOLDS,
    validate_budget,
)
from tollgate_common.policy import Policy, PolicyError, parse_policy
from tollgate_operator import API_VERSION

# --- RoutingPolicy -> policy YAML ---------------------------------------------------------


class SpecError(ValueError):
    """A custom resource's spec is malformed; the message names the field (``spec.x.y``)."""


# CR field (camelCase, the Kubernetes convention) -> policy field (snake_case).
_TOP = {
    "providers": "providers",
    "models": "models",
    "routes": "routes",
    "defaultModel": "default_model",
    "baselineModel": "baseline_model",
    "tenants": "tenants",
    "cache": "cache",
    "embeddings": "embeddings",
}
_PROVIDER = {
    "type": "type",
    "baseURL": "base_url",
    "apiKeyEnv": "api_key_env",
    "apiKeyFile": "api_key_file",
    "auth": "auth",
    "apiVersion": "api_version",
    "apis": "apis",
}
_MODEL = {
    "provider": "provider",
    "upstreamModel": "upstream_model",
    "inputPerMTok": "input_per_mtok",
    "cachedInputPerMTok": "cached_input_per_mtok",
    "outputPerMTok": "output_per_mtok",
    "cacheWritePerMTok": "cache_write_per_mtok",
    "cacheWrite1hPerMTok": "cache_write_1h_per_mtok",
    "contextWindow": "context_window",
    "capabilities": "capabilities",
    "kind": "kind",
    "dimensions": "dimensions",
}
_TENANT = {"routes": "routes", "allowedModels": "allowed_models", "maxTier": "max_tier"}
_CACHE = {"enabled": "enabled", "ttlSeconds": "ttl_seconds"}
# ``fallbacks`` maps model names to model names: its keys are not renamed.
_EMBEDDINGS = {"defaultModel": "default_model", "fallbacks": "fallbacks"}
_TO_CAMEL = {
    snake: camel
    for table in (_TOP, _PROVIDER, _MODEL, _TENANT, _CACHE, _EMBEDDINGS)
    for camel, snake in table.items()
}


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise SpecError(f"{where}: must be an object")
    return value


def _rename(value: Any, table: Mapping[str, str], where: str) -> dict[str, Any]:
    obj = _mapping(value, where)
    unknown = sorted(k for k in obj if k not in table)
    if unknown:
        raise SpecError(f"{where}.{unknown[0]}: unknown field")
    return {table[k]: v for k, v in obj.items()}


def _named(value: Any, table: Mapping[str, str], where: str) -> dict[str, Any]:
    return {
        str(name): _rename(entry, table, f"{where}.{name}")
        for name, entry in _mapping(value, where).items()
    }


def policy_from_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A RoutingPolicy spec as the policy document the routers load (no version yet)."""
    top = _rename(spec, _TOP, "spec")
    out: dict[str, Any] = {}
    for key, value in top.items():
        if key == "providers":
            out[key] = _named(value, _PROVIDER, "spec.providers")
        elif key == "models":
            out[key] = _named(value, _MODEL, "spec.models")
        elif key == "tenants":
            out[key] = _named(value, _TENANT, "spec.tenants")
        elif key == "cache":
            out[key] = _rename(value, _CACHE, "spec.cache")
        elif key == "embeddings":
            out[key] = _rename(value, _EMBEDDINGS, "spec.embeddings")
        else:
            out[key] = value
    return out


def policy_version(name: str, policy: Mapping[str, Any]) -> str:
    """Content-addressed, so the same spec always yields the same version and a re-push
    after a restart is a no-op for the routers."""
    body = {k: v for k, v in policy.items() if k != "version"}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:10]
    return f"{name}-{digest}"


def policy_yaml(policy: Mapping[str, Any], source: str) -> str:
    header = f"# Written by tollgate-operator from RoutingPolicy {source}; do not edit.\n"
    return header + yaml.safe_dump(dict(policy), sort_keys=True, default_flow_style=False)


def camelize_message(message: str) -> str:
    """Turn the policy model's field paths (``models.x.input_per_mtok: ...``) into the
    resource's (``spec.models.x.inputPerMTok: ...``) so the condition names what to edit."""
    parts = []
    for part in message.split("; "):
        path, sep, rest = part.partition(": ")
        if sep and " " not in path:
            segs = []
            for seg in path.split("."):
                base, bracket, index = seg.partition("[")  # allowed_models[1]
                segs.append(_TO_CAMEL.get(base, base) + bracket + index)
            part = f"spec.{'.'.join(segs)}: {rest}"
        parts.append(part)
    return "; ".join(parts)


@dataclass(frozen=True)
class BuiltPolicy:
    text: str
    version: str
    policy: Policy


def build_policy(name: str, namespace: str, spec: Mapping[str, Any]) -> BuiltPolicy:
    """Spec -> checked policy YAML. Raises ``SpecError`` with a precise ``spec.`` path."""
    doc = policy_from_spec(spec)
    version = policy_version(name, doc)
    text = policy_yaml({**doc, "version": version}, f"{namespace}/{name}")
    try:
        policy = parse_policy(text)
    except PolicyError as exc:
        raise SpecError(camelize_message(str(exc))) from exc
    return BuiltPolicy(text, version, policy)


# --- CostBudget -----------------------------------------------------------------------------

LABEL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
# Labels the rule sets itself; a notification label may not replace them (M-8: severity
# decides who gets paged, so a CostBudget author may not set it).
RESERVED_LABELS = frozenset(
    {"alertname", "tenant", "period", "threshold", "budget", "severity", "namespace", "job"}
)
# Label values are copied into PrometheusRule labels, which Prometheus templates ({{ }}
# and $ expansions): plain, short text only.
LABEL_VALUE_RE = re.compile(r"^[A-Za-z0-9 ._:/@+-]{0,128}$")
MAX_NOTIFICATION_LABELS = 16
_BUDGET_FIELDS = frozenset({"tenant", "period", "limitUSD", "thresholds", "action", "notification"})


@dataclass(frozen=True)
class CostBudget:
    tenant: str
    period: str
    limit_usd: float
    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS
    action: str = "reject"
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        return (self.tenant, self.period)


# validate_budget's field names -> the resource's.
_BUDGET_CAMEL = {"limit_usd": "limitUSD"}


def budget_from_spec(spec: Mapping[str, Any]) -> CostBudget:
    """Check a CostBudget spec (``tollgate_common.budgets.validate_budget`` with the CRD
    schema's stricter rules, plus label names) and fill in the defaults the API server
    would have applied."""
    spec = _mapping(spec, "spec")
    unknown = sorted(k for k in spec if k not in _BUDGET_FIELDS)
    if unknown:
        raise SpecError(f"spec.{unknown[0]}: unknown field")
    for req in ("tenant", "period", "limitUSD"):
        if req not in spec:
            raise SpecError(f"spec.{req}: required")
    raw = spec.get("thresholds", list(DEFAULT_THRESHOLDS))
    if not isinstance(raw, list) or not raw:
        raise SpecError("spec.thresholds: must be a non-empty list")
    action = spec.get("action", DEFAULT_ACTION)
    problems = validate_budget(
        spec["tenant"], spec["period"], spec["limitUSD"], action, raw, resource=True
    )
    if problems:
        name, _, message = problems[0].partition(": ")
        base, bracket, index = name.partition("[")
        raise SpecError(f"spec.{_BUDGET_CAMEL.get(base, base)}{bracket}{index}: {message}")
    thresholds = sorted({float(t) for t in raw})
    notification = _mapping(spec.get("notification", {}), "spec.notification")
    if set(notification) - {"labels"}:
        raise SpecError(f"spec.notification.{sorted(set(notification) - {'labels'})[0]}: unknown")
    labels = _mapping(notification.get("labels", {}), "spec.notification.labels")
    for k, v in labels.items():
        where = f"spec.notification.labels.{k}"
        if not LABEL_NAME_RE.match(k):
            raise SpecError(f"{where}: not a valid Prometheus label name")
        if k in RESERVED_LABELS:
            raise SpecError(f"{where}: reserved, the operator sets it")
        if not isinstance(v, str):
            raise SpecError(f"{where}: must be a string")
        if not LABEL_VALUE_RE.match(v):
            raise SpecError(
                f"{where}: up to 128 letters, digits, spaces and ._:/@+- (no templates)"
            )
    if len(labels) > MAX_NOTIFICATION_LABELS:
        raise SpecError(f"spec.notification.labels: at most {MAX_NOTIFICATION_LABELS} labels")
    return CostBudget(
        spec["tenant"],
        spec["period"],
        float(spec["limitUSD"]),
        tuple(thresholds),
        action,
        dict(labels),
    )


def budget_fields(budget: CostBudget, source: str) -> dict[str, Any]:
    """Keyword arguments of the orchestrator's ``Budget`` message."""
    return {
        "tenant": budget.tenant,
        "period": budget.period,
        "limit_usd": budget.limit_usd,
        "action": budget.action,
        "thresholds": list(budget.thresholds),
        "source": source,
    }


def owner_reference(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body.get("metadata", {})
    return {
        "apiVersion": body.get("apiVersion", API_VERSION),
        "kind": body.get("kind", ""),
        "name": meta.get("name", ""),
        "uid": meta.get("uid", ""),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child_name(owner: str, suffix: str, limit: int = 253) -> str:
    """``<owner>-<suffix>``, shortened with a hash when it would exceed ``limit``."""
    name = f"{owner}-{suffix}"
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{owner[: limit - len(suffix) - 10]}-{digest}-{suffix}"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def _promql_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


BUDGET_SPENT_METRIC = "tollgate_budget_spent_usd"
ALERT_THRESHOLD = "TollgateBudgetThreshold"
ALERT_EXCEEDED = "TollgateBudgetExceeded"
ALERT_FOR = "1m"
_ADVERB = {"day": "daily", "month": "monthly"}
_CONSEQUENCE = {"reject": "rejected", "downgrade": "downgraded to the cheapest tier"}
MANAGED_BY = {
    "app.kubernetes.io/managed-by": "tollgate-operator",
    "app.kubernetes.io/part-of": "tollgate",
}


def budget_rules(budget: CostBudget, budget_ref: str) -> list[dict[str, Any]]:
    """One alert per threshold on the spend/limit ratio. Replicas share budget counters,
    so each reports the same spend: ``max``, not ``sum``."""
    selector = f"tenant={_promql_str(budget.tenant)},period={_promql_str(budget.period)}"
    spent = f"max by (tenant, period) ({BUDGET_SPENT_METRIC}{{{selector}}})"
    rules = []
    for t in budget.thresholds:
        over = t >= 1.0
        pct = _num(round(t * 100, 2))
        labels = {
            **budget.labels,
            "severity": "critical" if over else "warning",
            "threshold": _num(t),
            "budget": budget_ref,
        }
        rules.append(
            {
                "alert": ALERT_EXCEEDED if over else ALERT_THRESHOLD,
                "expr": f"{spent} / {_num(budget.limit_usd)} >= {_num(t)}",
                "for": ALERT_FOR,
                "labels": labels,
                "annotations": {
                    "summary": (
                        f"Tenant {budget.tenant} has spent {pct}% of its "
                        f"{_ADVERB[budget.period]} LLM budget."
                    ),
                    "description": (
                        "Spend is {{ $value | humanizePercentage }} of the "
                        f"{_num(budget.limit_usd)} USD {_ADVERB[budget.period]} budget of tenant "
                        f"{budget.tenant} (CostBudget {budget_ref}). At 100% its requests are "
                        f"{_CONSEQUENCE[budget.action]}."
                    ),
                },
            }
        )
    return rules


def prometheus_rule(
    body: Mapping[str, Any], budget: CostBudget, extra_labels: Mapping[str, str]
) -> dict[str, Any]:
    """The PrometheusRule a CostBudget owns (deleting the budget deletes it)."""
    meta = body.get("metadata", {})
    name, namespace = meta.get("name", ""), meta.get("namespace", "")
    labels = {**extra_labels, **MANAGED_BY}
    if len(name) <= 63:
        labels["tollgate.dev/costbudget"] = name
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": child_name(name, "budget-alerts"),
            "namespace": namespace,
            "labels": labels,
            "ownerReferences": [owner_reference(body)],
        },
        "spec": {
            "groups": [
                {
                    "name": f"tollgate-budget.{namespace}.{name}",
                    "rules": budget_rules(budget, f"{namespace}/{name}"),
                }
            ]
        },
    }


@dataclass(frozen=True)
class BudgetClaim:
    """What the budget index keeps per CostBudget, to settle who owns a tenant+period."""

    name: str
    created: str
    fields: Mapping[str, Any]


def budget_owner(claims: Iterable[BudgetClaim]) -> BudgetClaim | None:
    """Orchestrators key budgets by tenant and period; when two CostBudgets name the same
    pair, the oldest (then the first by name) wins and the other reports a conflict."""
    return min(claims, key=lambda c: (c.created, c.name), default=None)


# --- status conditions ------------------------------------------------------------------------


def set_condition(
    conditions: Iterable[Mapping[str, Any]],
    *,
    type: str,
    status: bool,
    reason: str,
    message: str,
    generation: int | None,
    now: str,
) -> list[dict[str, Any]]:
    """metav1.Condition semantics: lastTransitionTime moves only when the status flips."""
    value = "True" if status else "False"
    out: list[dict[str, Any]] = []
    found = False
    for cond in conditions:
        if cond.get("type") != type:
            out.append(dict(cond))
            continue
        found = True
        same = cond.get("status") == value
        out.append(_condition(type, value, reason, message, generation, now, cond, same))
    if not found:
        out.append(_condition(type, value, reason, message, generation, now, {}, False))
    return out


def _condition(
    type: str,
    value: str,
    reason: str,
    message: str,
    generation: int | None,
    now: str,
    old: Mapping[str, Any],
    keep_time: bool,
) -> dict[str, Any]:
    cond: dict[str, Any] = {
        "type": type,
        "status": value,
        "reason": reason,
        "message": message[:32768],
        "lastTransitionTime": old.get("lastTransitionTime", now) if keep_time else now,
    }
    if generation is not None:
        cond["observedGeneration"] = generation
    return cond


def status_changes(current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of ``desired`` that differ from ``current``: what a status patch must carry."""
    return {k: v for k, v in desired.items() if current.get(k) != v}


# --- discovery ---------------------------------------------------------------------------------

SERVICE_NAME_LABEL = "kubernetes.io/service-name"


def endpoint_addresses(
    slices: Iterable[Mapping[str, Any]], service: str, port: int, port_name: str = "grpc"
) -> list[str]:
    """Ready ``host:port`` targets of a Service from its EndpointSlices.

    The port is the one named ``port_name``, else the one numbered ``port``, else the
    slice's only port. An endpoint whose ``ready`` is unset counts as ready (the API
    says consumers should treat unknown as ready)."""
    out: set[str] = set()
    for s in slices:
        labels = s.get("metadata", {}).get("labels") or {}
        if labels.get(SERVICE_NAME_LABEL) != service:
            continue
        if s.get("addressType", "IPv4") not in ("IPv4", "IPv6"):
            continue
        ports = s.get("ports") or []
        chosen = next((p.get("port") for p in ports if p.get("name") == port_name), None)
        if chosen is None:
            numbers = [p.get("port") for p in ports]
            chosen = port if port in numbers or not numbers else None
            if chosen is None and len(numbers) == 1:
                chosen = numbers[0]
        if chosen is None:
            continue
        for ep in s.get("endpoints") or []:
            cond = ep.get("conditions") or {}
            if cond.get("ready") is False or cond.get("terminating") is True:
                continue
            addrs = ep.get("addresses") or []
            if addrs:  # addresses of one endpoint are fungible: use the first
                host = addrs[0]
                out.add(f"[{host}]:{chosen}" if ":" in host else f"{host}:{chosen}")
    return sorted(out)


def backoff_delay(retry: int, base: float = 2.0, cap: float = 120.0) -> float:
    """Delay before retry number ``retry`` (0-based) of a failed push."""
    return float(min(cap, base * 2 ** min(retry, 16)))
