"""Budget counters in the chart (H-6, M-2): their own Redis, never the cache's; per-replica
budgets refused unless asked for, and said loudly in NOTES."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest
import yaml

from tests.deploy.chart import (
    CHART,
    NAMESPACE,
    RELEASE,
    ROOT,
    Manifest,
    by_name,
    helm,
    render,
    render_args,
)

BUDGET = {"tenant": "a", "period": "day", "limit_usd": 1}
BUDGETS = json.dumps({"orchestrator": {"budgets": [BUDGET]}})
CACHE_REDIS = "redis://cache-redis:6379/0"
BUDGET_REDIS = "redis://budget-redis:6379/0"


def orchestrator_env(docs: list[Manifest]) -> dict[str, Any]:
    spec = by_name(docs, "Deployment", "-orchestrator")["spec"]["template"]["spec"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in spec["containers"][0]["env"]}


def cache_env(docs: list[Manifest]) -> dict[str, Any]:
    spec = by_name(docs, "Deployment", "-cache")["spec"]["template"]["spec"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in spec["containers"][0]["env"]}


def render_fails(sets: Sequence[str], set_json: Sequence[str] = ()) -> str:
    args = render_args(sets=sets)
    for s in set_json:
        args += ["--set-json", s]
    proc = helm(*args, check=False)
    assert proc.returncode != 0, "the render should have failed"
    return proc.stderr


def render_with(sets: Sequence[str], set_json: Sequence[str] = ()) -> list[Manifest]:
    args = render_args(sets=sets)
    for s in set_json:
        args += ["--set-json", s]
    return [d for d in yaml.safe_load_all(helm(*args).stdout) if d]


def notes(*sets: str) -> str:
    args = ["install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client"]
    for s in sets:
        args += ["--set", s]
    out = helm(*args).stdout
    return out[out.index("NOTES:") :]


def test_the_cache_redis_is_not_the_budget_redis() -> None:
    docs = render(sets=["services.cache.backend=redis", f"redis.url={CACHE_REDIS}"])
    assert cache_env(docs)["TOLLGATE_CACHE_REDIS_URL"] == CACHE_REDIS
    env = orchestrator_env(docs)
    assert not [k for k in env if "REDIS" in k]  # H-6: the orchestrator never gets it

    docs = render(
        sets=[
            "services.cache.backend=redis",
            f"redis.url={CACHE_REDIS}",
            f"budgets.redis.url={BUDGET_REDIS}",
        ]
    )
    env = orchestrator_env(docs)
    assert env["TOLLGATE_ORCHESTRATOR_BUDGET_REDIS_URL"] == BUDGET_REDIS
    assert "TOLLGATE_ORCHESTRATOR_REDIS_URL" not in env  # the old name stops the process
    assert cache_env(docs)["TOLLGATE_CACHE_REDIS_URL"] == CACHE_REDIS


def test_the_budget_redis_url_comes_from_its_own_secret() -> None:
    docs = render(sets=["budgets.redis.existingSecret=budget-redis", "budgets.redis.secretKey=url"])
    ref = orchestrator_env(docs)["TOLLGATE_ORCHESTRATOR_BUDGET_REDIS_URL"]["secretKeyRef"]
    assert ref == {"name": "budget-redis", "key": "url"}


def test_a_budget_redis_that_is_the_cache_redis_fails_the_render() -> None:
    err = render_fails([f"redis.url={CACHE_REDIS}", f"budgets.redis.url={CACHE_REDIS}"])
    assert "budgets.redis.url is redis.url" in err
    err = render_fails(
        [
            "redis.existingSecret=shared",
            "redis.secretKey=url",
            "budgets.redis.existingSecret=shared",
            "budgets.redis.secretKey=url",
        ]
    )
    assert "budgets.redis.existingSecret" in err
    # Another database of a separate URL is the operator's call (noeviction checked at start).
    render(sets=[f"redis.url={CACHE_REDIS}", "budgets.redis.url=redis://cache-redis:6379/1"])


def test_a_password_in_a_plain_budget_redis_url_is_refused_by_the_schema() -> None:
    err = render_fails(["budgets.redis.url=redis://:hunter2@budget-redis:6379/0"])
    assert "budgets" in err and "url" in err


@pytest.mark.parametrize(
    "sets",
    [
        [],  # the chart's 2 replicas
        ["services.orchestrator.replicas=1", "services.orchestrator.autoscaling.enabled=true"],
    ],
    ids=["replicas", "hpa-max"],
)
def test_budgets_over_several_replicas_without_redis_fail_the_render(sets: list[str]) -> None:
    err = render_fails(sets, [f"config={BUDGETS}"])
    assert "no budget Redis" in err and "budgets.perReplica=true" in err
    assert "budgets.redis.url" in err and "noeviction" in err


def test_per_replica_budgets_render_when_asked_for_or_when_they_cannot_differ() -> None:
    render_with(["budgets.perReplica=true"], [f"config={BUDGETS}"])
    render_with(["services.orchestrator.replicas=1"], [f"config={BUDGETS}"])
    render_with([f"budgets.redis.url={BUDGET_REDIS}"], [f"config={BUDGETS}"])
    render_with(
        ["budgets.perReplica=false"],
        ['services.orchestrator.env={"TOLLGATE_ORCHESTRATOR_LOG_LEVEL": "INFO"}'],
    )
    err = render_fails([], ['services.orchestrator.env={"TOLLGATE_ORCHESTRATOR_BUDGETS": "[]x"}'])
    assert "no budget Redis" in err  # budgets set through env count too


def test_notes_say_per_replica_loudly_and_noeviction_otherwise() -> None:
    text = notes()
    assert "budgets are PER REPLICA" in text and "up to 2" in text
    assert '"budget_store": "per-replica"' in text
    assert "PER REPLICA" not in notes("services.orchestrator.replicas=1")
    shared = notes(f"budgets.redis.url={BUDGET_REDIS}")
    assert "PER REPLICA" not in shared
    assert "noeviction" in shared and "429" in shared


def test_kind_gives_budgets_a_noeviction_redis_of_their_own() -> None:
    values = yaml.safe_load((CHART / "values" / "kind.yaml").read_text())
    docs = [d for d in yaml.safe_load_all((ROOT / "deploy/kind/redis.yaml").read_text()) if d]
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    services = {d["metadata"]["name"] for d in docs if d["kind"] == "Service"}

    def policy(name: str) -> str:
        args = deployments[name]["spec"]["template"]["spec"]["containers"][0]["args"]
        return str(args[args.index("--maxmemory-policy") + 1])

    budget_host = values["budgets"]["redis"]["url"].split("//")[1].split(":")[0]
    cache_host = values["redis"]["url"].split("//")[1].split(":")[0]
    assert budget_host != cache_host and {budget_host, cache_host} <= services
    assert policy(budget_host) == "noeviction"
    assert policy(cache_host) == "allkeys-lru"  # fine for a cache, fatal for budgets
