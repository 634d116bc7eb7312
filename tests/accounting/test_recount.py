"""Truthful accounting (issue 3 §8): a mixed workload, then a recount from the responses.

The workload: routed and explicit requests, cache misses then hits (plain and streamed),
a model the operator added after start (pushed to the router, followed by the orchestrator),
a fallback after injected 500s, a retry after a 429 with Retry-After, streams with
``include_usage``, a reasoning model, a long cached system prefix, a gRPC ``Complete``,
budget rejections of a second tenant with a tiny budget, and the other client APIs
(Responses and Anthropic Messages, whole, streamed and cached; embeddings, cached by
default), each read from its own answer shape.

The recount, from what clients were told and the price table alone:
- every answer's cost == its usage x ``tollgate_common.policy`` prices, and
  sum(tollgate_llm_cost_usd_total) == sum(x-tollgate-cost-usd) == the recount, to 1e-9;
- token counters == the summed usage, type by type (cache hits spend no tokens);
- the orchestrator's cache hits + misses == the cache service's lookups;
- savings: cache == the stored entry's cost per hit; routing == baseline - chosen cost;
- budget rejections and spend agree with the responses.
Afterwards every catalog family of the router, cache and orchestrator has a sample.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx2
import openai
import orjson
import pytest
from openai import OpenAI

from tests.reliability.common import Samples, delta, fault, scrape, scrape_text, total
from tollgate.orchestrator.v1 import orchestrator_pb2, orchestrator_pb2_grpc
from tollgate.router.v1 import router_pb2, router_pb2_grpc
from tollgate_common.metrics.catalog import specs_for
from tollgate_common.policy import DEFAULT_POLICY_FILE, cost_usd, parse_policy
from tools.stack import DEV_KEY, Stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ADDED = "acme-mini"  # what an operator's RoutingPolicy adds while everything runs
PUSHED = DEFAULT_POLICY_FILE.read_text().replace(
    "models:\n",
    f"models:\n  {ADDED}: {{provider: openai, upstream_model: gpt-4o-mini, input_per_mtok: 0.3,"
    " cached_input_per_mtok: 0.1, output_per_mtok: 1.7}\n",
    1,
)
POLICY = parse_policy(PUSHED)
SMALL_KEY = "sk-small-team-0000000000000000000000000"
TINY = 0.000001  # the first request of the small team spends it; the next are refused
CONFIG = f"""
orchestrator:
  budgets:
    - {{tenant: small-team, period: day, limit_usd: {TINY}, action: reject}}
"""
EPS = 1e-9
LONG_SYSTEM = "You are a meticulous assistant for a shipping company. " * 90  # > 1024 tokens


@dataclass
class Answer:
    """What one client was told."""

    requested: str
    model: str
    cache: str
    cost: float
    prompt: int
    completion: int
    cached: int
    reasoning: int
    tenant: str = "dev"
    key: str = ""  # which request this was, to pair hits with the miss that stored them
    api: str = "chat"
    cache_write: int = 0

    def recount(self) -> float:
        if self.cache == "hit":
            return 0.0
        entry = POLICY.models[self.model]
        return cost_usd(entry, self.prompt, self.completion, self.cached, self.cache_write)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    logs: Path = tmp_path_factory.mktemp("recount")
    config = logs / "tollgate.yaml"
    config.write_text(CONFIG)
    s = Stack(
        log_dir=logs,
        sim_env={"TOLLGATE_SIM_LATENCY_SCALE": "0"},
        orch_env={
            "TOLLGATE_CONFIG": str(config),
            "TOLLGATE_ORCHESTRATOR_API_KEYS": f"dev:{DEV_KEY},small-team:{SMALL_KEY}",
            "TOLLGATE_ORCHESTRATOR_PROBE_INTERVAL_SECONDS": "0.3",
        },
    )
    s.start()
    try:
        push_policy(s)
        yield s
    finally:
        s.stop()


def push_policy(stack: Stack) -> None:
    """What the operator does with a RoutingPolicy; then wait until the orchestrator follows."""
    with grpc.insecure_channel(f"127.0.0.1:{stack.ports.router}") as ch:
        router_pb2_grpc.RouterStub(ch).UpdatePolicy(
            router_pb2.UpdatePolicyRequest(policy_yaml=PUSHED, source="operator:test/recount"),
            timeout=5,
            metadata=stack.caller_metadata("operator"),
        )
    c = OpenAI(base_url=stack.base_url + "/v1", api_key=DEV_KEY, max_retries=0)
    deadline = time.monotonic() + 15
    while ADDED not in {m.id for m in c.models.list()}:
        assert time.monotonic() < deadline, "the orchestrator never followed the pushed policy"
        time.sleep(0.1)
    c.close()


def _usage(u: Any) -> tuple[int, int, int, int]:
    if u is None:
        return 0, 0, 0, 0
    pd, cd = u.prompt_tokens_details, u.completion_tokens_details
    return (
        u.prompt_tokens,
        u.completion_tokens,
        (pd.cached_tokens or 0) if pd else 0,
        (cd.reasoning_tokens or 0) if cd else 0,
    )


def ask(c: OpenAI, key: str = "", tenant: str = "dev", **req: Any) -> Answer:
    raw = c.chat.completions.with_raw_response.create(**req)
    h = raw.headers
    if req.get("stream"):
        chunks = list(raw.parse())
        usage_chunks = [ch for ch in chunks if ch.usage is not None]
        assert len(usage_chunks) == 1, "include_usage must give exactly one usage chunk"
        usage = usage_chunks[0].usage
        cost = float(usage_chunks[0].model_extra["x_tollgate_cost_usd"])
    else:
        usage = raw.parse().usage
        cost = float(h["x-tollgate-cost-usd"])
    p, comp, cached, reasoning = _usage(usage)
    return Answer(req["model"], h["x-tollgate-model"], h["x-tollgate-cache"], cost, p, comp,
                  cached, reasoning, tenant, key)  # fmt: skip


def _events(raw: bytes) -> list[dict[str, Any]]:
    """The JSON data of each SSE event (named events or not)."""
    out = []
    for line in raw.split(b"\n"):
        if line.startswith(b"data: ") and line[6:].strip() not in (b"", b"[DONE]"):
            out.append(orjson.loads(line[6:]))
    return out


def ask_api(http: httpx2.Client, api: str, body: dict[str, Any], key: str = "") -> Answer:
    """One request of another client API over plain HTTP; usage and cost read from that
    API's own answer: headers for whole answers, the terminal events for streams."""
    path = {
        "responses": "/v1/responses",
        "messages": "/v1/messages",
        "embeddings": "/v1/embeddings",
    }
    r = http.post(path[api], json=body)
    assert r.status_code == 200, r.text
    h = r.headers
    cached = reasoning = write = 0
    if api == "embeddings":
        prompt, completion = r.json()["usage"]["prompt_tokens"], 0
        cost = float(h["x-tollgate-cost-usd"])
    elif api == "responses":
        if body.get("stream"):
            done = [e for e in _events(r.content) if e["type"] == "response.completed"]
            assert len(done) == 1, "one response.completed per stream"
            u, cost = done[0]["response"]["usage"], float(done[0]["x_tollgate_cost_usd"])
        else:
            u, cost = r.json()["usage"], float(h["x-tollgate-cost-usd"])
        prompt, completion = u["input_tokens"], u["output_tokens"]
        cached = (u.get("input_tokens_details") or {}).get("cached_tokens") or 0
        write = (u.get("input_tokens_details") or {}).get("cache_write_tokens") or 0
        reasoning = (u.get("output_tokens_details") or {}).get("reasoning_tokens") or 0
    else:  # Anthropic's input_tokens leaves out cache reads and writes
        if body.get("stream"):
            evs = _events(r.content)
            u = {}
            for e in evs:
                if e["type"] == "message_start":
                    u.update(e["message"]["usage"])
                elif e["type"] == "message_delta":
                    u.update({k: v for k, v in e["usage"].items() if v is not None})
            deltas = [e for e in evs if e["type"] == "message_delta"]
            assert len(deltas) == 1
            cost = float(deltas[0]["x_tollgate_cost_usd"])
        else:
            u, cost = r.json()["usage"], float(h["x-tollgate-cost-usd"])
        cached = u.get("cache_read_input_tokens") or 0
        write = u.get("cache_creation_input_tokens") or 0
        prompt, completion = u["input_tokens"] + cached + write, u["output_tokens"]
    return Answer(body["model"], h["x-tollgate-model"], h["x-tollgate-cache"], cost, prompt,
                  completion, cached, reasoning, "dev", key, api, write)  # fmt: skip


def other_apis(stack: Stack) -> list[Answer]:
    """Responses, Messages and Embeddings: routed, explicit, streamed, and cached."""
    out: list[Answer] = []
    auth = {"authorization": f"Bearer {DEV_KEY}"}
    with httpx2.Client(base_url=stack.base_url, headers=auth, timeout=30) as http:
        for stream in (False, True):
            out.append(
                ask_api(
                    http,
                    "responses",
                    {"model": "auto", "stream": stream, "input": "Summarize the plot of Macbeth."},
                )
            )
            out.append(
                ask_api(
                    http,
                    "responses",
                    {"model": "o4-mini", "stream": stream, "input": "Is 97 prime? Think."},
                )
            )
            out.append(
                ask_api(
                    http,
                    "messages",
                    {
                        "model": "gpt-4o-mini",
                        "max_tokens": 200,
                        "stream": stream,
                        "system": LONG_SYSTEM,
                        "messages": [{"role": "user", "content": "Where is my order?"}],
                    },
                )
            )
        for _ in range(2):  # a miss that stores, then a hit, in each API
            out.append(
                ask_api(
                    http,
                    "responses",
                    {"model": "auto", "temperature": 0, "input": "Name 7 primes."},
                    key="responses-cached",
                )
            )
            out.append(
                ask_api(
                    http,
                    "messages",
                    {
                        "model": "gpt-4.1-mini",
                        "temperature": 0,
                        "max_tokens": 100,
                        "messages": [{"role": "user", "content": "Name 8 primes."}],
                    },
                    key="messages-cached",
                )
            )
            out.append(
                ask_api(
                    http,
                    "embeddings",
                    {"model": "text-embedding-3-small", "input": ["a parcel", "a refund"]},
                    key="embeddings-cached",
                )
            )
        out.append(ask_api(http, "embeddings", {"model": "auto", "input": "where is it?"}))
    return out


def msgs(text: str, system: str | None = None) -> list[dict[str, str]]:
    out = [{"role": "system", "content": system}] if system else []
    return [*out, {"role": "user", "content": text}]


STREAM: dict[str, Any] = {"stream": True, "stream_options": {"include_usage": True}}


def workload(stack: Stack) -> tuple[list[Answer], int]:
    """(answers, budget rejections)."""
    out: list[Answer] = []
    c = OpenAI(base_url=stack.base_url + "/v1", api_key=DEV_KEY, max_retries=0, timeout=30)
    small = OpenAI(base_url=stack.base_url + "/v1", api_key=SMALL_KEY, max_retries=0, timeout=30)
    # Routed requests across intents and tiers: routing savings against gpt-4o.
    for text in (
        "hi! how are you today?",
        "Write a Python function that parses a CSV file and returns the rows as dicts.",
        "Translate 'good morning, my friend' into Spanish.",
        "Summarize the plot of Hamlet in three sentences.",
        "Prove that the square root of 2 is irrational, step by step.",
    ):
        out.append(ask(c, model="auto", messages=msgs(text)))
        out.append(ask(c, model="auto", messages=msgs(text + " (streamed)"), **STREAM))
    # Cache: misses that store, then hits that replay, plain and streamed.
    for i, extra in enumerate(({}, STREAM, {})):
        req: dict[str, Any] = {
            "model": "auto",
            "messages": msgs(f"Name {i + 3} primes."),
            "temperature": 0,
        }
        for _ in range(2):
            out.append(ask(c, key=f"cached-{i}", **req, **extra))
    # A fallback after two 500s on gpt-4.1 (both of its attempts), then a retry after
    # a 429 with Retry-After: 1 on gpt-4.1-mini.
    fault(stack, {"model": "gpt-4.1", "status": 500, "count": 2})
    out.append(ask(c, model="gpt-4.1", messages=msgs("Refactor this loop into a comprehension.")))
    fault(stack, {"model": "gpt-4.1-mini", "status": 429, "count": 1, "retry_after": 1})
    out.append(ask(c, model="gpt-4.1-mini", messages=msgs("List three rivers in Peru.")))
    # The operator's model, whole and streamed, with a long prefix (cached prompt tokens).
    out.append(ask(c, model=ADDED, messages=msgs("Where is my order?", LONG_SYSTEM)))
    out.append(ask(c, model=ADDED, messages=msgs("And my refund?", LONG_SYSTEM), **STREAM))
    # A reasoning model (reasoning tokens) and a long system prefix (cached prompt tokens).
    out.append(ask(c, model="o4-mini", messages=msgs("What is 17 * 23? Think it through.")))
    out.append(ask(c, model="gpt-4o-mini", messages=msgs("Where is my parcel?", LONG_SYSTEM)))
    out.append(ask(c, model="o4-mini", messages=msgs("Is 91 prime?", LONG_SYSTEM), **STREAM))
    # The small team: one admitted request spends its budget; the next ones are refused.
    out.append(ask(small, tenant="small-team", model="gpt-4o-mini", messages=msgs("hello")))
    rejected = 0
    for _ in range(3):
        with pytest.raises(openai.RateLimitError) as info:
            small.chat.completions.create(model="gpt-4o-mini", messages=msgs("hello again"))  # type: ignore[arg-type]
        assert info.value.code == "insufficient_quota"
        assert info.value.response.headers["x-should-retry"] == "false"
        rejected += 1
    out.append(grpc_complete(stack))
    out += other_apis(stack)
    # Concurrent plain and streamed requests: the counters must add up under contention.
    with ThreadPoolExecutor(8) as pool:
        jobs = [
            pool.submit(
                ask,
                c,
                model="auto",
                messages=msgs(f"Quick tip {i} for tidy code."),
                **(STREAM if i % 2 else {}),
            )
            for i in range(16)
        ]
        out += [j.result() for j in jobs]
    c.close()
    small.close()
    return out, rejected


def grpc_complete(stack: Stack) -> Answer:
    body = orjson.dumps({"model": "auto", "messages": msgs("Say hello over gRPC.")})
    with grpc.insecure_channel(f"127.0.0.1:{stack.ports.orch_grpc}") as ch:
        resp = orchestrator_pb2_grpc.OrchestratorStub(ch).Complete(
            orchestrator_pb2.CompleteRequest(request_json=body),
            metadata=(("authorization", f"Bearer {DEV_KEY}"),),
            timeout=30,
        )
    u = orjson.loads(resp.response_json)["usage"]
    return Answer(
        "auto",
        resp.model,
        resp.cache,
        resp.cost_usd,
        u["prompt_tokens"],
        u["completion_tokens"],
        u.get("prompt_tokens_details", {}).get("cached_tokens", 0),
        u.get("completion_tokens_details", {}).get("reasoning_tokens", 0),
    )


def urls(stack: Stack) -> dict[str, str]:
    return {
        "orchestrator": stack.orchestrator_metrics_url,
        "router": f"http://127.0.0.1:{stack.ports.router_metrics}",
        "cache": f"http://127.0.0.1:{stack.ports.cache_metrics}",
    }


def settled(stack: Stack) -> dict[str, Samples]:
    """Scrape every service once background work (cache stores after answers) is done."""
    time.sleep(0.3)
    return {svc: scrape(url) for svc, url in urls(stack).items()}


@pytest.fixture(scope="module")
def recount(stack: Stack) -> tuple[list[Answer], int, dict[str, Samples], dict[str, Samples]]:
    before = settled(stack)
    answers, rejected = workload(stack)
    after = settled(stack)
    return answers, rejected, before, after


Run = tuple[list[Answer], int, dict[str, Samples], dict[str, Samples]]


def test_every_cost_is_usage_times_the_price_table(recount: Run) -> None:
    answers, _, before, after = recount
    for a in answers:
        assert a.cost == pytest.approx(a.recount(), rel=1e-11, abs=1e-15), a
    told = sum(a.cost for a in answers)
    priced = sum(a.recount() for a in answers)
    counted = delta(before["orchestrator"], after["orchestrator"], "tollgate_llm_cost_usd_total")
    assert abs(counted - told) <= EPS, (counted, told)
    assert abs(told - priced) <= EPS, (told, priced)
    assert told > 0
    # The operator's model is counted under its own name, and nothing fell into "other".
    added = sum(a.cost for a in answers if a.model == ADDED)
    o = before["orchestrator"], after["orchestrator"]
    assert added > 0
    assert abs(delta(*o, "tollgate_llm_cost_usd_total", model=ADDED) - added) <= EPS
    assert delta(*o, "tollgate_llm_cost_usd_total", model="other") == 0
    # Each client API's spend is counted under its own label.
    for api in ("chat", "responses", "messages", "embeddings"):
        told_api = sum(a.cost for a in answers if a.api == api)
        assert told_api > 0, api
        assert abs(delta(*o, "tollgate_llm_cost_usd_total", api=api) - told_api) <= EPS, api


def test_token_counters_equal_the_summed_usage(recount: Run) -> None:
    answers, _, before, after = recount
    spent = [a for a in answers if a.cache != "hit"]
    want = {
        "prompt": sum(a.prompt for a in spent),
        "completion": sum(a.completion for a in spent),
        "cached_prompt": sum(a.cached for a in spent),
        "reasoning": sum(a.reasoning for a in spent),
        "cache_write_prompt": sum(a.cache_write for a in spent),
    }
    assert want["cached_prompt"] > 0 and want["reasoning"] > 0  # the workload covers them
    o = before["orchestrator"], after["orchestrator"]
    for kind, n in want.items():
        assert delta(*o, "tollgate_llm_tokens_total", type=kind) == n, kind
    # The OTel GenAI histograms saw the same input and output tokens.
    genai = "gen_ai_client_token_usage_sum"
    assert delta(*o, genai, gen_ai_token_type="input") == want["prompt"]
    assert delta(*o, genai, gen_ai_token_type="output") == want["completion"]


def test_cache_hits_plus_misses_equal_the_cache_services_lookups(recount: Run) -> None:
    answers, _, before, after = recount
    o, k = (before["orchestrator"], after["orchestrator"]), (before["cache"], after["cache"])
    hits = delta(*o, "tollgate_cache_results_total", result="hit")
    misses = delta(*o, "tollgate_cache_results_total", result="miss")
    assert hits == sum(a.cache == "hit" for a in answers) == 6  # 3 chat, 1 per other API
    # Embeddings are cached by default: the one `auto` embedding is a miss as well.
    assert misses == sum(a.cache == "miss" for a in answers) == 7
    for api in ("responses", "messages", "embeddings"):
        assert delta(*o, "tollgate_cache_results_total", result="hit", api=api) == 1, api
    assert hits + misses == delta(*k, "tollgate_cache_lookups_total")
    assert hits == delta(*k, "tollgate_cache_lookups_total", result="hit")
    assert delta(*o, "tollgate_llm_requests_total", outcome="cache_hit") == hits
    served = sum(a.cache != "hit" for a in answers)
    assert delta(*o, "tollgate_llm_requests_total", outcome="success") == served


def test_savings_equal_the_recount(recount: Run) -> None:
    answers, _, before, after = recount
    stored = {a.key: a.cost for a in answers if a.cache == "miss"}
    cache_saved = sum(stored[a.key] for a in answers if a.cache == "hit")
    baseline = POLICY.models[POLICY.baseline_model]
    routing_saved = 0.0
    for a in answers:
        if a.api == "embeddings":
            continue  # no baseline: an embedding model is chosen by name
        if a.requested == "auto" and a.cache != "hit" and a.model != POLICY.baseline_model:
            base = cost_usd(baseline, a.prompt, a.completion, a.cached)
            routing_saved += max(0.0, base - a.cost)
    o = before["orchestrator"], after["orchestrator"]
    assert cache_saved > 0 and routing_saved > 0
    assert abs(delta(*o, "tollgate_savings_usd_total", source="cache") - cache_saved) <= EPS
    assert abs(delta(*o, "tollgate_savings_usd_total", source="routing") - routing_saved) <= EPS
    k = before["cache"], after["cache"]
    assert abs(delta(*k, "tollgate_cache_saved_usd_total") - cache_saved) <= EPS


def test_retries_fallbacks_and_budgets_match_the_workload(recount: Run) -> None:
    answers, rejected, before, after = recount
    o = before["orchestrator"], after["orchestrator"]
    fell = [a for a in answers if a.requested == "gpt-4.1"]
    assert fell[0].model != "gpt-4.1"  # served by its fallback
    assert delta(*o, "tollgate_llm_fallbacks_total", from_model="gpt-4.1") == 1
    assert delta(*o, "tollgate_llm_retries_total", reason="server_error") == 1
    assert delta(*o, "tollgate_llm_retries_total", reason="rate_limit") == 1
    chat = [a for a in answers if a.api == "chat"]
    assert [a.model for a in chat if a.requested == "gpt-4.1-mini"] == ["gpt-4.1-mini"]
    assert delta(*o, "tollgate_llm_upstream_errors_total") == 3
    rejects = delta(*o, "tollgate_budget_actions_total", tenant="small-team", action="reject")
    assert rejects == rejected == 3
    small = sum(a.cost for a in answers if a.tenant == "small-team")
    spent = total(after["orchestrator"], "tollgate_budget_spent_usd", tenant="small-team")
    assert abs(spent - small) <= EPS
    statuses = {
        code: delta(
            *o, "tollgate_http_requests_total", route="/v1/chat/completions", status_code=code
        )
        for code in ("200", "429")
    }
    assert statuses == {"200": len(chat) - 1, "429": rejected}  # one answer came over gRPC


# Families that cannot have a sample after this workload, and why.
NO_SAMPLE_BY_DESIGN: dict[str, str] = {}


def test_every_catalog_family_has_a_sample(stack: Stack, recount: Run) -> None:
    missing = []
    for svc, url in urls(stack).items():
        present = {
            s.split("{")[0].split(" ")[0]
            for s in scrape_text(url).splitlines()
            if s and not s.startswith("#")
        }
        for spec in specs_for(svc):
            names = {spec.name}
            if spec.kind == "histogram":
                names = {f"{spec.name}_count"}
            if not names & present and spec.name not in NO_SAMPLE_BY_DESIGN:
                missing.append(f"{svc}: {spec.name}")
    assert not missing, missing
