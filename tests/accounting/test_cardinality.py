"""Bounded labels (issue 3 §7): 1,000 requests with random unknown models, random keys,
random paths and methods, and valid requests carrying random user ids, metadata and
request ids, in every client API (chat, Responses, Messages, embeddings, and stored
Responses fetched by random ids), must not mint series. Unknown values land as
``other``; no random value ever reaches a label or the exposition.

LiteLLM minted a permanent series for every junk model name (PR #39136) and leaked
memory through user and key labels (#12159): this is the test that keeps tollgate
from doing the same.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx2
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.reliability.common import AUTH, CHAT, scrape_text
from tollgate_common.metrics.catalog import specs_for
from tollgate_common.policy import INTENTS, load_policy
from tools.stack import DEV_KEY, Stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REQUESTS = 1000
CONCURRENCY = 16
KEYS = f"dev:{DEV_KEY},team-a:sk-team-a-0000000000000000000000000"
POLICY = load_policy()
# Growth allowed after the warm-up, in label sets (a histogram child counts once). A
# bounded family can still meet a legitimate new combination (a status it had not
# answered yet): a few, never one per request.
PER_FAMILY = 6
OVERALL = 25
PROMPTS = ("hi there, how are you?", "Write a Python function that reverses a list.")
# Label values that come from clients; each must be a configured value or "other".
ALLOWED = {
    "model": {*POLICY.models, "other"},
    "from_model": {*POLICY.models, "other"},
    "to_model": {*POLICY.models, "other"},
    "gen_ai_request_model": {*POLICY.models, "auto", "other"},
    "gen_ai_response_model": {*POLICY.models, "other"},
    "tenant": {"dev", "team-a", "other"},
    "route": {
        CHAT,
        "/v1/responses",
        "/v1/messages",
        "/v1/messages/count_tokens",
        "/v1/embeddings",
        "/v1/models",
        "/v1/models/{model_id}",
        "/v1/responses/{response_id}",
        "/v1/responses/{response_id}/input_items",
        "/healthz",
        "/readyz",
        "/metrics",
        "other",
    },
    "api": {"chat", "responses", "messages", "embeddings"},
    "method": {"GET", "POST", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS", "other"},
    "intent": {*INTENTS, "other"},
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(
        log_dir=tmp_path_factory.mktemp("cardinality"),
        sim_env={"TOLLGATE_SIM_LATENCY_SCALE": "0"},
        orch_env={"TOLLGATE_ORCHESTRATOR_API_KEYS": KEYS},
    )
    s.start()
    try:
        yield s
    finally:
        s.stop()


def urls(stack: Stack) -> dict[str, str]:
    return {
        "orchestrator": stack.orchestrator_metrics_url,
        "router": f"http://127.0.0.1:{stack.ports.router_metrics}",
        "cache": f"http://127.0.0.1:{stack.ports.cache_metrics}",
    }


Series = dict[str, set[tuple[tuple[str, str], ...]]]


def series(text: str) -> Series:
    """family -> label sets, with histogram buckets folded into their child."""
    out: Series = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
            out.setdefault(fam.name, set()).add(labels)
    return out


def rand() -> str:
    return "zz" + uuid.uuid4().hex[:12]


APIS = ("chat", "responses", "messages", "embeddings")
PATHS = {
    "chat": CHAT,
    "responses": "/v1/responses",
    "messages": "/v1/messages",
    "embeddings": "/v1/embeddings",
}


def api_body(api: str, model: str, text: str, **extra: Any) -> dict[str, Any]:
    """A valid request of one client API; ``model`` is a chat model (or ``auto``)."""
    if api == "embeddings":
        model = "text-embedding-3-small" if model != "auto" and model in POLICY.models else model
        return {"model": model, "input": text, **{k: v for k, v in extra.items() if k == "user"}}
    if api == "responses":
        return {"model": model, "input": text, "max_output_tokens": 16, **extra}
    if api == "messages":
        extra = {"metadata": {"user_id": extra["user"]}} if "user" in extra else {}
        return {"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": text}],
                **extra}  # fmt: skip
    return {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 16,
            **extra}  # fmt: skip


def junk_request(rng: random.Random) -> tuple[str, str, dict[str, str], bytes | None, str]:
    """(method, path, headers, body, the random values it carries)."""
    kind = rng.randrange(6)
    token = rand()
    rid = {"x-request-id": rand()}
    api = rng.choice(APIS)
    body: dict[str, Any]
    if kind == 0:  # an unknown model, shaped like a real one or not
        model = rng.choice([f"gpt-4o-{token}", token, f"{token}/llama-3"])
        body = api_body(api, model, "hi")
        return "POST", PATHS[api], {**AUTH, **rid}, as_json(body), model
    if kind == 1:  # a random key
        body = api_body(api, "auto", "hi")
        return (
            "POST",
            PATHS[api],
            {"authorization": f"Bearer sk-{token}", **rid},
            as_json(body),
            token,
        )
    if kind == 5:  # a stored Response by a random id, or a random model by id
        paths = [f"/v1/responses/resp_{token}", f"/v1/responses/resp_{token}/input_items"]
        path = rng.choice([*paths, f"/v1/models/{token}"])
        method = rng.choice(["GET", "DELETE"]) if path == paths[0] else "GET"
        return method, path, {**AUTH, **rid}, None, token
    if kind == 2:  # a random path
        path = rng.choice([f"/v1/{token}", f"/{token}", f"/v1/chat/completions/{token}"])
        return rng.choice(["GET", "POST"]), path, {**AUTH, **rid}, None, token
    if kind == 3:  # a random method on a real route
        method = rng.choice(["PUT", "DELETE", "PATCH", "OPTIONS"])
        return method, CHAT, {**AUTH, **rid}, None, token
    # a valid request full of per-user values that must stay out of labels
    extra: dict[str, Any] = {"user": token}
    if api in ("chat", "responses"):
        extra["metadata"] = {"customer": token}
    body = api_body(api, rng.choice(["auto", "gpt-4o-mini"]), rng.choice(PROMPTS), **extra)
    key = rng.choice([AUTH["authorization"], "Bearer sk-team-a-0000000000000000000000000"])
    return "POST", PATHS[api], {"authorization": key, **rid}, as_json(body), token


def as_json(body: dict[str, Any]) -> bytes:
    return orjson.dumps(body)


async def fire(base: str, n: int, seed: int) -> tuple[Counter[int], list[str]]:
    rng = random.Random(seed)
    plan = [junk_request(rng) for _ in range(n)]
    statuses: Counter[int] = Counter()
    it = iter(plan)
    async with httpx2.AsyncClient(base_url=base, timeout=30) as c:

        async def worker() -> None:
            for method, path, headers, body, _ in it:
                resp = await c.request(method, path, headers=headers, content=body)
                statuses[resp.status_code] += 1

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return statuses, [p[4] for p in plan]


def warm_up(base: str) -> None:
    """Every legitimate combination once (key x model x prompt, and each kind of junk),
    so the series they rightly create exist before the count starts."""
    asyncio.run(fire(base, 100, seed=1))
    with httpx2.Client(base_url=base, timeout=30) as c:
        for key in (AUTH["authorization"], "Bearer sk-team-a-0000000000000000000000000"):
            for api in APIS:
                for model in ("auto", "gpt-4o-mini"):
                    for prompt in PROMPTS:
                        for stream in (False, True) if api != "embeddings" else (False,):
                            body = api_body(api, model, prompt)
                            if stream:
                                body["stream"] = True
                            resp = c.post(
                                PATHS[api], content=as_json(body), headers={"authorization": key}
                            )
                            assert resp.status_code == 200, resp.text


def test_random_models_keys_and_paths_mint_no_series(stack: Stack) -> None:
    warm_up(stack.base_url)
    before = {svc: series(scrape_text(url)) for svc, url in urls(stack).items()}
    statuses, values = asyncio.run(fire(stack.base_url, REQUESTS // 2, seed=2))
    middle = {svc: series(scrape_text(url)) for svc, url in urls(stack).items()}
    more, values2 = asyncio.run(fire(stack.base_url, REQUESTS // 2, seed=3))
    statuses.update(more)
    texts = {svc: scrape_text(url) for svc, url in urls(stack).items()}
    after = {svc: series(t) for svc, t in texts.items()}

    assert statuses[500] == 0 and set(statuses) <= {200, 401, 404, 405}, statuses
    assert min(statuses[s] for s in (200, 401, 404, 405)) >= 50  # every kind was sent

    growth: dict[str, int] = {}
    for svc in after:
        for fam in {s.name.removesuffix("_total") for s in specs_for(svc)}:
            grew = len(after[svc].get(fam, set())) - len(before[svc].get(fam, set()))
            if grew:
                growth[f"{svc}:{fam}"] = grew
    assert all(g <= PER_FAMILY for g in growth.values()), growth
    assert sum(growth.values()) <= OVERALL, growth
    # Saturated: the second 500 requests, as random as the first, added (almost) nothing.
    late = sum(
        len(after[svc].get(f, set())) - len(middle[svc].get(f, set()))
        for svc in after
        for f in after[svc]
    )
    assert late <= 2, late

    # Client-supplied values are configured ones or "other"; random ones appear nowhere.
    for svc, fams in after.items():
        for fam, label_sets in fams.items():
            for labels in label_sets:
                for k, v in labels:
                    if k in ALLOWED:
                        assert v in ALLOWED[k], f"{svc} {fam} {k}={v!r}"
    whole = "\n".join(texts.values())
    leaked = [v for v in values + values2 if v in whole]
    assert not leaked, leaked[:3]
    orch = after["orchestrator"]["tollgate_http_requests"]
    assert any(("route", "other") in labels for labels in orch)  # random paths landed here
