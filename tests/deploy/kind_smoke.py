"""Smoke test of a tollgate installed on kind, run by deploy/kind/e2e.sh through
port-forwards (not collected by pytest; its pure parts are unit-tested):

1. completions through the openai SDK: plain, a repeat answered from the cache, a stream;
2. Prometheus scrapes every ServiceMonitor target of the release and they are up;
3. every rule group shipped in the chart's files/alerts/ is loaded;
4. the chart's sample RoutingPolicy (examples/), with its chat routes moved to another
   model of its catalog, changes the model chosen once the operator applies it.

    python -m tests.deploy.kind_smoke --base-url http://127.0.0.1:18080 \\
        --api-keys-file keys.yaml --prometheus http://127.0.0.1:19090 \\
        --namespace tollgate --release tollgate --chart deploy/helm/tollgate
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

# One prompt per intent that the router's heuristics classify without doubt.
PROMPTS = {
    "chat": "Hi there! How is your day going?",
    "code": "Write a Python function that reverses a linked list.",
    "math": "Solve for x: 3x + 7 = 22. Show the steps.",
    "summarization": "Summarize in one sentence: The meeting covered budgets and hiring.",
    "translation": "Translate to French: good morning, my friend.",
    "extraction": "Extract the names as JSON from: Alice met Bob in Paris.",
    "creative": "Write a short poem about autumn leaves.",
}


def log(msg: str) -> None:
    print(f"kind-smoke: {msg}", flush=True)


def eventually(what: str, probe: Callable[[], T | None], timeout: float, every: float = 3) -> T:
    """Poll until probe returns something truthy; fail with `what` after timeout."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            got = probe()
            if got:
                return got
        except Exception as exc:  # a port-forward or a pod may still be starting
            last = exc
        time.sleep(every)
    raise SystemExit(f"kind-smoke: timed out after {timeout:.0f}s waiting for {what} ({last})")


# --- pure helpers (unit-tested) ------------------------------------------------------


def _routes_in(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        routes = node.get("routes")
        if isinstance(routes, dict):
            yield routes
        for v in node.values():
            yield from _routes_in(v)
    elif isinstance(node, list):
        for v in node:
            yield from _routes_in(v)


def primaries(routes: dict[str, Any], intent: str) -> set[str]:
    """First model of every tier's chain for an intent."""
    tiers = routes.get(intent) or {}
    return {chain[0] for chain in tiers.values() if isinstance(chain, list) and chain}


def _embedding(entry: Any) -> bool:
    return isinstance(entry, dict) and entry.get("kind") == "embedding"


def with_changed_route(
    example: dict[str, Any], default_policy: dict[str, Any], intent: str = "chat"
) -> tuple[dict[str, Any], str]:
    """A copy of the RoutingPolicy example that sends every tier of `intent` to one chat
    model of its catalog that the default policy never picks first for that intent, so that
    applying it visibly changes routing (the example itself may route like the default,
    or to a self-hosted model that kind does not have). Returns the copy and the model."""
    doc = copy.deepcopy(example)
    spec = doc.get("spec") or {}
    routes = next((r for r in _routes_in(spec) if r), None)
    if routes is None:
        raise ValueError("the RoutingPolicy example has no routes")
    models = spec.get("models") or {}
    # Routes name chat models only: an embedding model in either catalog is no target.
    catalog = [
        m
        for m in models
        if m in default_policy["models"]
        and not _embedding(models[m])
        and not _embedding(default_policy["models"][m])
    ]
    before = primaries(default_policy["routes"], intent)
    model = next((m for m in catalog if m not in before), None)
    if model is None:
        raise ValueError(f"the example's catalog has no model to move {intent} to")
    routes[intent] = {tier: [model] for tier in ("small", "medium", "large")}
    return doc, model


def find_routing_policy(chart: Path) -> tuple[Path, dict[str, Any]]:
    for path in sorted((chart / "examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "RoutingPolicy":
                return path, doc
    raise SystemExit(f"kind-smoke: no RoutingPolicy example in {chart / 'examples'}")


def rule_groups(chart: Path) -> set[str]:
    groups: set[str] = set()
    for path in sorted((chart / "files" / "alerts").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        if isinstance(doc, dict) and "groups" in doc:
            groups |= {g["name"] for g in doc["groups"]}
    return groups


def scrape_pools(service_monitors: list[str], namespace: str) -> set[str]:
    """Prometheus scrape pool names of the release's ServiceMonitors (one endpoint each)."""
    return {f"serviceMonitor/{namespace}/{name}/0" for name in service_monitors}


def kubectl_names(namespace: str, resource: str, selector: str) -> list[str]:
    out = subprocess.run(
        ["kubectl", "-n", namespace, "get", resource, "-l", selector, "-o", "name"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line.split("/", 1)[1] for line in out.split()]


# --- the checks ----------------------------------------------------------------------


def prom_get(base: str, path: str, **params: str) -> Any:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}" if params else f"{base}{path}"
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = json.load(resp)
    if body.get("status") != "success":
        raise RuntimeError(f"{path}: {body}")
    return body["data"]


def check_completions(base_url: str, key: str) -> None:
    import openai

    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=key, timeout=60, max_retries=2)
    eventually("/readyz", lambda: urllib.request.urlopen(f"{base_url}/readyz", timeout=5), 120)

    def ask(prompt: str) -> tuple[str, dict[str, str]]:
        raw = client.chat.completions.with_raw_response.create(
            model="auto", temperature=0, messages=[{"role": "user", "content": prompt}]
        )
        done = raw.parse()
        content = done.choices[0].message.content or ""
        assert content, "empty completion"
        return content, {k.lower(): v for k, v in raw.headers.items()}

    first, h1 = ask(PROMPTS["code"])
    for header in ("x-tollgate-model", "x-tollgate-intent", "x-tollgate-cost-usd"):
        assert h1.get(header), f"missing {header}"
    log(f"completion ok: model={h1['x-tollgate-model']} intent={h1['x-tollgate-intent']}")
    # The repeat may land on the other orchestrator replica: the Redis cache is shared.
    second, h2 = ask(PROMPTS["code"])
    assert h2.get("x-tollgate-cache") == "hit", f"repeat was not a cache hit: {h2}"
    assert second == first and float(h2["x-tollgate-cost-usd"]) == 0.0
    log("cache hit on the repeat, cost 0")

    chunks = 0
    stream = client.chat.completions.create(
        model="auto",
        stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": PROMPTS["creative"]}],
    )
    usage = None
    for chunk in stream:
        chunks += 1
        usage = chunk.usage or usage
    assert chunks > 1 and usage is not None, f"stream: {chunks} chunks, usage {usage}"
    log(f"stream ok: {chunks} chunks, {usage.total_tokens} tokens")


def check_prometheus(prom: str, namespace: str, release: str, chart: Path) -> None:
    monitors = kubectl_names(namespace, "servicemonitors", f"app.kubernetes.io/instance={release}")
    assert len(monitors) == 4, f"expected 4 ServiceMonitors, got {monitors}"
    pools = scrape_pools(monitors, namespace)

    def targets_up() -> bool:
        active = prom_get(prom, "/api/v1/targets", state="active")["activeTargets"]
        ours = [t for t in active if t["scrapePool"] in pools]
        seen = {t["scrapePool"] for t in ours}
        down = [t["scrapeUrl"] for t in ours if t["health"] != "up"]
        if seen != pools or down:
            log(f"waiting for targets: missing {sorted(pools - seen)}, down {down}")
            return False
        return True

    eventually("every ServiceMonitor target up", targets_up, 300, every=10)
    log(f"targets up: {sorted(pools)}")

    query = f'count({{namespace="{namespace}",__name__=~"tollgate_.+"}})'
    series = prom_get(prom, "/api/v1/query", query=query)
    assert series["result"] and float(series["result"][0]["value"][1]) > 0, "no tollgate_ series"

    expected = rule_groups(chart)
    if not expected:
        log("no rule files in files/alerts/: nothing to check in /api/v1/rules")
        return

    def rules_loaded() -> bool:
        loaded = {g["name"] for g in prom_get(prom, "/api/v1/rules")["groups"]}
        return expected <= loaded

    eventually(f"rule groups {sorted(expected)} loaded", rules_loaded, 300, every=10)
    log(f"rule groups loaded: {sorted(expected)}")


def check_routing_policy(base_url: str, key: str, namespace: str, chart: Path) -> None:
    import openai

    path, example = find_routing_policy(chart)
    default_file = chart / "files" / "policy" / "default-policy.yaml"
    default_policy = yaml.safe_load(default_file.read_text())
    intent = "chat"
    doc, target = with_changed_route(example, default_policy, intent)
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=key, timeout=60, max_retries=2)

    def route() -> tuple[str, str]:
        raw = client.chat.completions.with_raw_response.create(
            model="auto",
            messages=[{"role": "user", "content": PROMPTS[intent]}],
            extra_headers={"Cache-Control": "no-cache"},
        )
        raw.parse()
        return raw.headers["x-tollgate-intent"], raw.headers["x-tollgate-model"]

    got_intent, before = route()
    assert got_intent == intent, f"prompt for {intent} was classified as {got_intent}"
    assert before != target, f"{intent} already goes to {target}"
    manifest = yaml.safe_dump(doc)
    kubectl = ["kubectl", "-n", namespace]
    subprocess.run([*kubectl, "apply", "-f", "-"], input=manifest, text=True, check=True)
    try:
        eventually(
            f"{intent} routed to {target} after applying {path.name} (chat -> {target})",
            lambda: route()[1] == target,
            180,
        )
        log(f"RoutingPolicy from {path.name}: {intent} moved from {before} to {target}")
    finally:
        subprocess.run([*kubectl, "delete", "-f", "-"], input=manifest, text=True, check=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Smoke test of tollgate on kind (deploy/kind/e2e.sh).")
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--api-keys-file", type=Path, required=True)
    ap.add_argument("--prometheus", required=True)
    ap.add_argument("--namespace", required=True)
    ap.add_argument("--release", required=True)
    ap.add_argument("--chart", type=Path, required=True)
    args = ap.parse_args(argv)
    keys = yaml.safe_load(args.api_keys_file.read_text())
    first = next(iter(keys.values()))  # a key, or a list of keys
    key = str(first[0] if isinstance(first, list) else first)
    check_completions(args.base_url, key)
    check_prometheus(args.prometheus, args.namespace, args.release, args.chart)
    check_routing_policy(args.base_url, key, args.namespace, args.chart)
    log("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
