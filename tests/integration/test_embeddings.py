"""POST /v1/embeddings with real processes (simulator upstream): float and base64
answers passed through, cached by default, priced per input token, budgeted, counted,
and routed by name (no chat model on this path, no embedding model on chat's).

Bodies are read raw (httpx2) so that no SDK decodes base64 or fills anything in.
"""

from __future__ import annotations

import base64
import struct
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import httpx2
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tollgate_common.policy import load_policy
from tools.stack import DEV_KEY, Stack

pytestmark = pytest.mark.integration

POLICY = load_policy()
SMALL, LARGE = "text-embedding-3-small", "text-embedding-3-large"
BROKE = "sk-embed-broke-" + "0" * 25  # a tenant whose reject budget one request spends
KEYS = f"dev:{DEV_KEY},broke:{BROKE}"
BUDGETS = [{"tenant": "broke", "period": "day", "limit_usd": 1e-9, "action": "reject"}]
STORE_SETTLE_SECONDS = 0.2  # the cache stores in the background (tests/clients/__init__.py)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(
        log_dir=tmp_path_factory.mktemp("embeddings-stack"),
        orch_env={
            "TOLLGATE_ORCHESTRATOR_API_KEYS": KEYS,
            "TOLLGATE_ORCHESTRATOR_BUDGETS": orjson.dumps(BUDGETS).decode(),
        },
    )
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def http(stack: Stack) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=stack.base_url, timeout=30) as c:
        yield c


def embed(http: httpx2.Client, key: str = DEV_KEY, **body: Any) -> httpx2.Response:
    return http.post("/v1/embeddings", json=body, headers={"authorization": f"Bearer {key}"})


def fresh(text: str = "embed me") -> str:
    """An input no other test sends: its first request is a cache miss."""
    return f"{text} {uuid.uuid4().hex}"


def sim_calls(stack: Stack) -> int:
    with urllib.request.urlopen(stack.sim_url + "/_sim/stats", timeout=5) as resp:
        return int(orjson.loads(resp.read())["total"])


def scrape(stack: Stack, name: str, **match: str) -> float:
    with urllib.request.urlopen(stack.orchestrator_metrics_url, timeout=5) as resp:
        text = resp.read().decode()
    return sum(
        s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in match.items())
    )


def price(model: str) -> float:
    return (POLICY.models[model].input_per_mtok or 0.0) / 1e6


def floats_of(b64: str) -> tuple[float, ...]:
    raw = base64.b64decode(b64)
    assert len(raw) % 4 == 0, "base64 embeddings are little-endian float32s"
    return struct.unpack(f"<{len(raw) // 4}f", raw)


def test_float_answer_priced_per_input_token(http: httpx2.Client) -> None:
    inputs = [fresh("one"), fresh("two")]
    r = embed(http, model="auto", input=inputs)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list"
    assert [d["index"] for d in body["data"]] == [0, 1]
    for d in body["data"]:
        assert d["object"] == "embedding"
        assert d["embedding"] and all(isinstance(x, float) for x in d["embedding"])
    assert r.headers["x-tollgate-model"] == SMALL
    assert r.headers["x-tollgate-cache"] == "miss"
    assert r.headers["x-tollgate-intent"] == "other"
    tokens = body["usage"]["prompt_tokens"]
    assert tokens > 0
    assert float(r.headers["x-tollgate-cost-usd"]) == pytest.approx(tokens * price(SMALL))


def test_base64_is_passed_through_and_cached_apart_from_float(http: httpx2.Client) -> None:
    text = fresh("encodings")
    floats = embed(http, model=SMALL, input=text)
    assert floats.status_code == 200, floats.text
    time.sleep(STORE_SETTLE_SECONDS)
    b64 = embed(http, model=SMALL, input=text, encoding_format="base64")
    assert b64.status_code == 200, b64.text
    assert b64.headers["x-tollgate-cache"] == "miss"  # another answer, another key
    vector = b64.json()["data"][0]["embedding"]
    assert isinstance(vector, str)
    assert len(floats_of(vector)) == len(floats.json()["data"][0]["embedding"])


def test_an_identical_request_is_a_cache_hit_without_an_upstream_call(
    stack: Stack, http: httpx2.Client
) -> None:
    body: dict[str, Any] = {"model": "auto", "input": [fresh("cached")], "encoding_format": "float"}
    first = embed(http, **body)
    assert first.status_code == 200 and first.headers["x-tollgate-cache"] == "miss"
    time.sleep(STORE_SETTLE_SECONDS)
    before = sim_calls(stack)
    second = embed(http, **{**body, "user": "another end user"})  # not part of the key
    assert second.status_code == 200
    assert second.headers["x-tollgate-cache"] == "hit"
    assert second.headers["x-tollgate-cost-usd"] == "0"
    assert second.content == first.content
    assert sim_calls(stack) == before


def test_an_explicit_model_is_served_and_priced_as_itself(http: httpx2.Client) -> None:
    r = embed(http, model=LARGE, input=fresh("large"), dimensions=256)
    assert r.status_code == 200, r.text
    assert r.headers["x-tollgate-model"] == LARGE
    assert len(r.json()["data"][0]["embedding"]) == 256  # passed through: the upstream shortens
    tokens = r.json()["usage"]["prompt_tokens"]
    assert float(r.headers["x-tollgate-cost-usd"]) == pytest.approx(tokens * price(LARGE))


def test_tokens_and_cost_are_counted_under_the_embeddings_api(
    stack: Stack, http: httpx2.Client
) -> None:
    labels = {"model": SMALL, "api": "embeddings"}
    tokens0 = scrape(stack, "tollgate_llm_tokens_total", type="prompt", **labels)
    cost0 = scrape(stack, "tollgate_llm_cost_usd_total", **labels)
    r = embed(http, model="auto", input=[fresh("metrics")] * 3)
    assert r.status_code == 200, r.text
    tokens = r.json()["usage"]["prompt_tokens"]
    assert scrape(stack, "tollgate_llm_tokens_total", type="prompt", **labels) == tokens0 + tokens
    assert scrape(stack, "tollgate_llm_tokens_total", type="completion", **labels) == 0
    assert scrape(stack, "tollgate_llm_cost_usd_total", **labels) == pytest.approx(
        cost0 + float(r.headers["x-tollgate-cost-usd"])
    )
    assert scrape(stack, "tollgate_llm_requests_total", outcome="success", **labels) >= 1


def test_the_budget_rejects_embeddings_too(http: httpx2.Client) -> None:
    first = embed(http, key=BROKE, model="auto", input=fresh("spend the budget " * 20))
    assert first.status_code == 200, first.text  # under the limit: admitted, and spends it
    second = embed(http, key=BROKE, model="auto", input=fresh("over budget"))
    assert second.status_code == 429, second.text
    assert second.json()["error"]["code"] == "insufficient_quota"


@pytest.mark.parametrize("model", ["gpt-4o-mini", "auto-not-a-model"])
def test_no_chat_or_unknown_model_on_the_embeddings_path(
    stack: Stack, http: httpx2.Client, model: str
) -> None:
    before = sim_calls(stack)
    r = embed(http, model=model, input="x")
    err = r.json()["error"]
    assert err["param"] == "model"
    if model == "gpt-4o-mini":
        assert r.status_code == 400 and "not an embedding model" in err["message"]
    else:
        assert r.status_code == 404 and err["code"] == "model_not_found"
    assert sim_calls(stack) == before


def test_no_embedding_model_on_the_chat_path(stack: Stack, http: httpx2.Client) -> None:
    before = sim_calls(stack)
    r = http.post(
        "/v1/chat/completions",
        json={"model": SMALL, "messages": [{"role": "user", "content": "hi"}]},
        headers={"authorization": f"Bearer {DEV_KEY}"},
    )
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "model" and "embedding model" in err["message"]
    assert sim_calls(stack) == before


def test_bad_input_is_a_400_naming_the_field(http: httpx2.Client) -> None:
    r = embed(http, model="auto", input=["ok", ""])
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "input[1]"
    r = embed(http, model="auto", input="x", encoding_format="int8")
    assert r.status_code == 400 and r.json()["error"]["param"] == "encoding_format"


def test_the_openapi_document_describes_the_path(http: httpx2.Client) -> None:
    op = http.get("/openapi.json").json()["paths"]["/v1/embeddings"]["post"]
    body = op["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["model", "input"]
    assert body["properties"]["encoding_format"]["enum"] == ["float", "base64"]
    assert op["security"] == [{"bearerAuth": []}]
    assert {"400", "401", "403", "404", "429"} <= set(op["responses"])
