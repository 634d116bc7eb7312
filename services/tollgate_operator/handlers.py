"""The kopf handlers: thin wrappers that run a reconcile, patch the status it returns,
and turn its error kind into kopf's retry semantics (invalid input never retries)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import kopf

from tollgate_operator import GROUP, VERSION
from tollgate_operator import builders as b
from tollgate_operator import reconcile as r

POLICIES = (GROUP, VERSION, "routingpolicies")
BUDGETS = (GROUP, VERSION, "costbudgets")
DELETE_RETRIES = 8
INDEX = "budget_index"  # kopf passes an index as the kwarg named after its function


def _apply(outcome: r.Outcome, body: Mapping[str, Any], patch: kopf.Patch, retry: int) -> None:
    for key, value in b.status_changes(body.get("status") or {}, outcome.status).items():
        patch.status[key] = value
    if outcome.error == "permanent":
        raise kopf.PermanentError(outcome.message)
    if outcome.error == "temporary":
        raise kopf.TemporaryError(outcome.message, delay=b.backoff_delay(retry))


def _claims(index: kopf.Index[Any, Any], body: Mapping[str, Any]) -> list[b.BudgetClaim]:
    entry = r.claim_of(body)
    if entry is None:
        return []
    return list(index.get(entry[0], []))


def register(registry: kopf.OperatorRegistry, ctx: r.Context) -> None:
    """Register every handler into ``registry``, closing over the operator's context."""
    interval = ctx.settings.resync_seconds

    async def policy(body: kopf.Body, patch: kopf.Patch, retry: int, resync: bool) -> None:
        started = time.monotonic()
        async with ctx.locks["RoutingPolicy"]:
            outcome = await r.reconcile_policy(ctx, body, r.now_iso())
        ctx.record("RoutingPolicy", outcome, started)
        ctx.track("RoutingPolicy", body["metadata"]["name"], True)
        if resync:  # the next tick is the retry; only the status is updated
            outcome = r.Outcome(outcome.status, outcome.result)
        _apply(outcome, body, patch, retry)

    @kopf.on.resume(*POLICIES, id="reconcile", registry=registry)
    @kopf.on.create(*POLICIES, id="reconcile", registry=registry)
    @kopf.on.update(*POLICIES, id="reconcile", registry=registry)
    async def policy_changed(body: kopf.Body, patch: kopf.Patch, retry: int, **_: Any) -> None:
        await policy(body, patch, retry, resync=False)

    @kopf.timer(
        *POLICIES, id="resync", interval=interval, initial_delay=interval, registry=registry
    )
    async def policy_resync(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        await policy(body, patch, 0, resync=True)

    @kopf.on.delete(*POLICIES, id="cleanup", retries=DELETE_RETRIES, registry=registry)
    async def policy_deleted(body: kopf.Body, retry: int, **_: Any) -> None:
        started = time.monotonic()
        try:
            async with ctx.locks["RoutingPolicy"]:
                await r.delete_policy(ctx, body)
        except r.ReconcileError as exc:
            raise kopf.TemporaryError(str(exc), delay=b.backoff_delay(retry)) from exc
        ctx.record("RoutingPolicy", r.Outcome({}, "deleted"), started)
        ctx.track("RoutingPolicy", body["metadata"]["name"], False)

    @kopf.index(*BUDGETS, id=INDEX, registry=registry)
    def budget_index(body: kopf.Body, **_: Any) -> dict[Any, Any] | None:
        entry = r.claim_of(body)
        return None if entry is None else {entry[0]: entry[1]}

    async def budget(
        body: kopf.Body, patch: kopf.Patch, retry: int, index: kopf.Index[Any, Any], resync: bool
    ) -> None:
        started = time.monotonic()
        async with ctx.locks["CostBudget"]:
            outcome = await r.reconcile_budget(ctx, body, _claims(index, body), r.now_iso())
        ctx.record("CostBudget", outcome, started)
        ctx.track("CostBudget", body["metadata"]["name"], True)
        if resync:
            outcome = r.Outcome(outcome.status, outcome.result)
        _apply(outcome, body, patch, retry)

    @kopf.on.resume(*BUDGETS, id="reconcile", registry=registry)
    @kopf.on.create(*BUDGETS, id="reconcile", registry=registry)
    @kopf.on.update(*BUDGETS, id="reconcile", registry=registry)
    async def budget_changed(body: kopf.Body, patch: kopf.Patch, retry: int, **kw: Any) -> None:
        await budget(body, patch, retry, kw[INDEX], resync=False)

    @kopf.timer(*BUDGETS, id="resync", interval=interval, initial_delay=interval, registry=registry)
    async def budget_resync(body: kopf.Body, patch: kopf.Patch, **kw: Any) -> None:
        await budget(body, patch, 0, kw[INDEX], resync=True)

    @kopf.on.delete(*BUDGETS, id="cleanup", retries=DELETE_RETRIES, registry=registry)
    async def budget_deleted(body: kopf.Body, retry: int, **kw: Any) -> None:
        started = time.monotonic()
        try:
            async with ctx.locks["CostBudget"]:
                await r.delete_budget(ctx, body, _claims(kw[INDEX], body))
        except r.ReconcileError as exc:
            raise kopf.TemporaryError(str(exc), delay=b.backoff_delay(retry)) from exc
        ctx.record("CostBudget", r.Outcome({}, "deleted"), started)
        ctx.track("CostBudget", body["metadata"]["name"], False)

    @kopf.on.cleanup(id="close-channels", registry=registry)
    async def close_channels(**_: Any) -> None:
        await ctx.pusher.close()
