"""What happens to a RoutingPolicy or CostBudget: builders for the content, then the
pushes and API writes, summed up as the status to patch and the error kind to raise.

Kept apart from the kopf handlers so the flow reads top to bottom; every step that
decides something is a pure builder.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from tollgate_common.metrics import Children, Families
from tollgate_operator import builders as b
from tollgate_operator.config import OperatorSettings, split_addresses
from tollgate_operator.k8s import APIError, Kube, NotFound
from tollgate_operator.push import Pusher, PushResult, summarize

log = logging.getLogger(__name__)

POLICY_KEY = "policy.yaml"
RULE_PLURAL = "prometheusrules"
RULE_API = "monitoring.coreos.com/v1"
KINDS = ("RoutingPolicy", "CostBudget")
RESULTS = ("applied", "invalid", "failed", "ignored", "conflict", "deleted")
ERROR_REASONS = ("invalid", "push_failed", "api_error")

ErrorKind = Literal["", "permanent", "temporary"]


@dataclass(frozen=True)
class Outcome:
    """The status to show, the metric result, and whether kopf should retry."""

    status: dict[str, Any]
    result: str
    error: ErrorKind = ""
    message: str = ""
    reason: str = ""  # the error reason for the metric


class ReconcileError(Exception):
    """A delete could not finish; the handler retries it."""


@dataclass
class Context:
    settings: OperatorSettings
    namespace: str
    kube: Kube
    pusher: Pusher
    families: Families
    # Serialises a kind's reconciles, so a resync timer never pushes an older spec over
    # a newer one that a change handler is pushing.
    locks: dict[str, asyncio.Lock] = field(
        default_factory=lambda: {k: asyncio.Lock() for k in KINDS}
    )
    managed: dict[str, set[str]] = field(default_factory=lambda: {k: set() for k in KINDS})

    def __post_init__(self) -> None:
        fam = self.families
        self._results = Children(
            fam.counter("tollgate_operator_reconciles_total"),
            bind=[(k, r) for k in KINDS for r in RESULTS],
        )
        self._errors = Children(
            fam.counter("tollgate_operator_reconcile_errors_total"),
            bind=[(k, r) for k in KINDS for r in ERROR_REASONS],
        )
        self._duration = Children(
            fam.histogram("tollgate_operator_reconcile_duration_seconds"),
            bind=[(k,) for k in KINDS],
        )
        self._managed = Children(
            fam.gauge("tollgate_operator_managed_resources"), bind=[(k,) for k in KINDS]
        )

    def record(self, kind: str, outcome: Outcome, started: float) -> None:
        self._duration(kind).observe(time.monotonic() - started)
        self._results(kind, outcome.result).inc()
        if outcome.reason:
            self._errors(kind, outcome.reason).inc()

    def track(self, kind: str, name: str, present: bool) -> None:
        names = self.managed[kind]
        if present:
            names.add(name)
        else:
            names.discard(name)
        self._managed(kind).set(len(names))

    async def discover(self, target: Literal["router", "orchestrator"]) -> list[str]:
        s = self.settings
        if target == "router":
            explicit, service, port = s.router_addresses, s.router_service, s.router_grpc_port
        else:
            explicit = s.orchestrator_addresses
            service, port = s.orchestrator_service, s.orchestrator_grpc_port
        if explicit:
            addresses = split_addresses(explicit)
        else:
            slices = await self.kube.list(
                "discovery.k8s.io/v1",
                "endpointslices",
                self.namespace,
                f"{b.SERVICE_NAME_LABEL}={service}",
            )
            addresses = b.endpoint_addresses(slices, service, port)
        await self.pusher.forget_except(target, addresses)
        return addresses


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ident(body: Mapping[str, Any]) -> tuple[str, str, int | None, list[dict[str, Any]]]:
    meta = body.get("metadata", {})
    status = body.get("status") or {}
    return (
        meta["name"],
        meta.get("namespace", ""),
        meta.get("generation"),
        status.get("conditions") or [],
    )


class _Conditions:
    """Accumulates conditions for one object at one generation."""

    def __init__(self, current: list[dict[str, Any]], generation: int | None, now: str) -> None:
        self.items = current
        self.generation = generation
        self.now = now

    def set(self, type: str, status: bool, reason: str, message: str) -> None:
        self.items = b.set_condition(
            self.items,
            type=type,
            status=status,
            reason=reason,
            message=message,
            generation=self.generation,
            now=self.now,
        )


# --- RoutingPolicy ----------------------------------------------------------------------------


async def reconcile_policy(ctx: Context, body: Mapping[str, Any], now: str) -> Outcome:
    name, ns, gen, current = _ident(body)
    conds = _Conditions(current, gen, now)
    status: dict[str, Any] = {"observedGeneration": gen}
    prev_version = (body.get("status") or {}).get("policyVersion")
    keep = f"the routers keep version {prev_version}" if prev_version else "routing is unchanged"

    def done(result: str, error: ErrorKind = "", msg: str = "", reason: str = "") -> Outcome:
        return Outcome({**status, "conditions": conds.items}, result, error, msg, reason)

    try:
        built = b.build_policy(name, ns, body.get("spec") or {})
    except b.SpecError as exc:
        conds.set("Invalid", True, "ValidationFailed", str(exc))
        conds.set("Applied", False, "Invalid", f"not applied: {keep}")
        return done("invalid", "permanent", str(exc), "invalid")
    conds.set("Invalid", False, "Valid", "the policy passed validation")

    if name != ctx.settings.policy_name:
        msg = (
            f"only the RoutingPolicy named {ctx.settings.policy_name!r} is applied in "
            f"namespace {ns}: routers hold one policy"
        )
        conds.set("Applied", False, "Ignored", msg)
        return done("ignored")

    try:
        routers = await ctx.discover("router")
    except APIError as exc:
        conds.set("Applied", False, "DiscoveryFailed", f"listing router endpoints: {exc}")
        return done("failed", "temporary", str(exc), "api_error")
    results = await ctx.pusher.push_policy(routers, built.text, f"operator:{ns}/{name}")

    rejected = [r for r in results if r.rejected]
    if rejected:  # the router's own check disagrees: never persist what a router refuses
        msg = f"router {rejected[0].address} rejected it: {rejected[0].message}"
        conds.set("Invalid", True, "RejectedByRouter", msg)
        conds.set("Applied", False, "Invalid", f"not applied: {keep}")
        return done("invalid", "permanent", msg, "invalid")

    cm = ctx.settings.policy_configmap
    try:
        await ctx.kube.set_configmap_key(
            ns,
            cm,
            POLICY_KEY,
            built.text,
            {"tollgate.dev/source": f"{ns}/{name}", "tollgate.dev/policy-version": built.version},
        )
    except APIError as exc:
        conds.set("Applied", False, "PersistFailed", f"writing ConfigMap {cm}: {exc}")
        return done("failed", "temporary", str(exc), "api_error")

    ok = [r for r in results if r.ok]
    status["routers"] = len(ok)
    status["policyVersion"] = ok[0].version if ok and ok[0].version else built.version
    if len(ok) < len(results):
        msg = f"{summarize(results)}; saved to ConfigMap {cm}"
        conds.set("Applied", False, "PushFailed", msg)
        return done("failed", "temporary", msg, "push_failed")
    if results:
        msg = f"version {status['policyVersion']} pushed to {len(ok)} routers, saved to {cm}"
    else:
        msg = f"no ready router endpoints; saved to ConfigMap {cm}, which routers load at start"
    conds.set("Applied", True, "Applied", msg)
    return done("applied")


async def base_policy_text(ctx: Context) -> str | None:
    """The routers' base policy from the chart's ConfigMap, when the operator is told it."""
    name = ctx.settings.base_policy_configmap
    if not name:
        return None
    cm = await ctx.kube.get("v1", "configmaps", ctx.namespace, name)
    text = (cm.get("data") or {}).get(POLICY_KEY)
    return str(text) if text else None


async def delete_policy(ctx: Context, body: Mapping[str, Any]) -> None:
    """Deleting the applied policy removes the override key: routers watch that file and
    return to their base policy once the kubelet syncs the ConfigMap, and restarted ones
    load the base. With ``base_policy_configmap`` set, the base is also pushed at once."""
    name, ns, _, _ = _ident(body)
    if name != ctx.settings.policy_name:
        return
    try:
        await ctx.kube.set_configmap_key(ns, ctx.settings.policy_configmap, POLICY_KEY, None)
        text = await base_policy_text(ctx)
        routers = await ctx.discover("router") if text else []
    except APIError as exc:
        raise ReconcileError(f"restoring the base policy: {exc}") from exc
    if text:
        results = await ctx.pusher.push_policy(routers, text, f"operator:{ns}/{name} deleted")
        if not all(r.ok for r in results):
            raise ReconcileError(f"restoring the base policy: {summarize(results)}")


# --- CostBudget ----------------------------------------------------------------------------------


def claim_of(body: Mapping[str, Any]) -> tuple[tuple[str, str], b.BudgetClaim] | None:
    """The budget index entry of a CostBudget; None when its spec is invalid."""
    meta = body.get("metadata", {})
    try:
        budget = b.budget_from_spec(body.get("spec") or {})
    except b.SpecError:
        return None
    source = f"operator:{meta.get('namespace', '')}/{meta['name']}"
    claim = b.BudgetClaim(
        meta["name"], str(meta.get("creationTimestamp", "")), b.budget_fields(budget, source)
    )
    return budget.key, claim


async def reconcile_budget(
    ctx: Context, body: Mapping[str, Any], claims: Iterable[b.BudgetClaim], now: str
) -> Outcome:
    name, ns, gen, current = _ident(body)
    conds = _Conditions(current, gen, now)
    status: dict[str, Any] = {"observedGeneration": gen}

    def done(result: str, error: ErrorKind = "", msg: str = "", reason: str = "") -> Outcome:
        return Outcome({**status, "conditions": conds.items}, result, error, msg, reason)

    try:
        budget = b.budget_from_spec(body.get("spec") or {})
    except b.SpecError as exc:
        conds.set("Invalid", True, "ValidationFailed", str(exc))
        conds.set("Applied", False, "Invalid", "not applied")
        return done("invalid", "permanent", str(exc), "invalid")
    conds.set("Invalid", False, "Valid", "the budget passed validation")

    owner = b.budget_owner(claims)
    if owner is not None and owner.name != name:
        msg = (
            f"CostBudget {owner.name} already sets the {budget.period} budget of tenant "
            f"{budget.tenant}; this one applies once that one is deleted"
        )
        conds.set("Applied", False, "Conflict", msg)
        return done("conflict")

    rule = b.prometheus_rule(body, budget, ctx.settings.rule_labels)
    rule_name = rule["metadata"]["name"]
    status["prometheusRule"] = rule_name
    error: ErrorKind = ""
    try:
        await ctx.kube.apply(RULE_PLURAL, rule)
        n = len(rule["spec"]["groups"][0]["rules"])
        conds.set("AlertsReady", True, "RuleApplied", f"PrometheusRule {rule_name}: {n} alerts")
    except NotFound:
        # No Prometheus Operator CRDs: budgets still work; the resync retries the rule.
        msg = "the cluster serves no monitoring.coreos.com/v1 PrometheusRule; install its CRDs"
        conds.set("AlertsReady", False, "PrometheusRuleUnsupported", msg)
    except APIError as exc:
        conds.set("AlertsReady", False, "APIError", f"PrometheusRule {rule_name}: {exc}")
        error = "temporary"

    try:
        orchestrators = await ctx.discover("orchestrator")
    except APIError as exc:
        conds.set("Applied", False, "DiscoveryFailed", f"listing orchestrator endpoints: {exc}")
        return done("failed", "temporary", str(exc), "api_error")
    results = await ctx.pusher.push_budgets(
        orchestrators, [b.budget_fields(budget, f"operator:{ns}/{name}")]
    )
    ok = sum(r.ok for r in results)
    status["orchestrators"] = ok
    if ok < len(results):
        msg = summarize(results)
        conds.set("Applied", False, "PushFailed", msg)
        return done("failed", "temporary", msg, "push_failed")
    if results:
        msg = f"pushed to {ok} orchestrators"
    else:
        msg = "no ready orchestrator endpoints; the resync pushes it when they appear"
    conds.set("Applied", True, "Applied", msg)
    if error:
        return done("failed", error, "PrometheusRule write failed", "api_error")
    return done("applied")


async def delete_budget(
    ctx: Context, body: Mapping[str, Any], claims: Iterable[b.BudgetClaim]
) -> None:
    """Remove the budget from the orchestrators (or hand its tenant+period to the next
    CostBudget that names them) and delete its PrometheusRule. The rule's owner reference
    lets Kubernetes' garbage collector do the latter too; deleting it here also covers
    clusters (and emulators) without one."""
    name, ns, _, _ = _ident(body)
    rule_name = b.child_name(name, "budget-alerts")
    try:
        await ctx.kube.delete(RULE_API, RULE_PLURAL, ns, rule_name)  # gone already: fine
    except APIError as exc:
        raise ReconcileError(f"deleting PrometheusRule {rule_name}: {exc}") from exc

    entry = claim_of(body)
    if entry is None:
        return  # an invalid budget was never pushed
    key, mine = entry
    claims = list(claims)
    owner = b.budget_owner([mine, *[c for c in claims if c.name != name]])
    if owner is not None and owner.name != name:
        return  # it lost a conflict: the owner's budget stays
    survivors = [c for c in claims if c.name != name]
    try:
        orchestrators = await ctx.discover("orchestrator")
    except APIError as exc:
        raise ReconcileError(f"listing orchestrator endpoints: {exc}") from exc
    heir = b.budget_owner(survivors)
    results: list[PushResult]
    if heir is not None:
        results = await ctx.pusher.push_budgets(orchestrators, [dict(heir.fields)])
    else:
        results = await ctx.pusher.push_budgets(orchestrators, [], removed=[key])
    if not all(r.ok for r in results):
        raise ReconcileError(f"removing the budget: {summarize(results)}")
