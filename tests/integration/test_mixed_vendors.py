"""Routing across vendors, end to end: the gateway's processes (router, cache, two
orchestrators) and tollgate's simulator speaking each vendor's wire format.

One policy holds five providers of five types, each at its own path of the simulator:
OpenAI (``/v1``), Gemini's OpenAI-compatible endpoint (``/v1beta/openai/``), Azure's v1
API (``/openai/v1/``), Anthropic's Messages (``/v1/messages``, ``x-api-key``) and an
OpenAI-compatible server. With every key:

- ``model: auto`` sends small talk, code and math to models of three vendors;
- a vendor answering 503 (Gemini) or 529 (Anthropic) on every attempt falls back to
  another vendor's model, and the client gets a plain 200;
- the recount: on that mixed traffic (prompt-cached tokens, 5-minute and 1-hour cache
  writes, streams, a cache hit, every client API), each answer's cost is its usage x the
  policy's prices, and the orchestrator's cost and savings counters equal the recount
  to 1e-9.

A second orchestrator has only the OpenAI key: the router is told to skip the others
(``skip_providers``), so requests go straight to OpenAI models with no failed attempt,
and a request naming another vendor's model is refused with the missing env var named.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import orjson
import pytest

from tests.reliability.common import Samples, delta, fault, reset_sim, scrape
from tollgate_common.policy import INTENTS, TIERS, Policy, cost_usd, parse_policy
from tools.stack import DEV_KEY, Stack, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EPS = 1e-9
KEYS = ("H4_OPENAI_KEY", "H4_GEMINI_KEY", "H4_AZURE_KEY", "H4_ANTHROPIC_KEY", "H4_LOCAL_KEY")
LONG_SYSTEM = "You are a meticulous assistant for a shipping company. " * 90  # > 1024 tokens
MORE_SYSTEM = "Always answer in full sentences and cite the order number. " * 90

# catalog name -> (provider, upstream model, input, cached input, output $/Mtok)
MODELS: dict[str, tuple[str, str, float, float, float]] = {
    "flash": ("gemini", "gemini-2.5-flash", 0.30, 0.03, 2.50),
    "mini": ("openai", "gpt-4o-mini", 0.15, 0.075, 0.60),
    "reasoner": ("openai", "o4-mini", 1.10, 0.275, 4.40),
    "az-4o": ("azure", "my-gpt-4o", 2.50, 1.25, 10.00),
    "haiku": ("anthropic", "claude-haiku-4-5", 1.00, 0.10, 5.00),
    "llama": ("local", "llama-3.1-8b", 0.0, 0.0, 0.0),
}
# Per intent, every tier: small talk on Gemini, code on Claude, math on OpenAI.
CHAINS = {
    "chat": ["flash", "mini"],
    "code": ["haiku", "az-4o", "mini"],
    "math": ["reasoner", "flash"],
    "summarization": ["llama", "mini"],
    "extraction": ["mini", "flash"],
    "translation": ["flash", "mini"],
    "creative": ["az-4o", "mini"],
}
assert set(CHAINS) == set(INTENTS)


def policy_yaml(sim: str) -> str:
    models = {
        name: {
            "provider": p,
            "upstream_model": up,
            "input_per_mtok": i,
            "cached_input_per_mtok": c,
            "output_per_mtok": o,
            # Anthropic's own write prices (1.25x and 2x input); the others take the defaults.
            **(
                {"cache_write_per_mtok": 1.25, "cache_write_1h_per_mtok": 2.0}
                if p == "anthropic"
                else {}
            ),
            "capabilities": ["tools", "json", "vision", "streaming"],
        }
        for name, (p, up, i, c, o) in MODELS.items()
    }
    doc = {
        "version": "mixed-vendors-test",
        "providers": {
            "openai": {"base_url": f"{sim}/v1", "api_key_env": "H4_OPENAI_KEY"},
            "gemini": {
                "type": "gemini",
                "base_url": f"{sim}/v1beta/openai/",
                "api_key_env": "H4_GEMINI_KEY",
            },
            "azure": {
                "type": "azure",
                "base_url": f"{sim}/openai/v1/",
                "api_key_env": "H4_AZURE_KEY",
            },
            "anthropic": {
                "type": "anthropic",
                "base_url": f"{sim}/v1",
                "api_key_env": "H4_ANTHROPIC_KEY",
            },
            "local": {"type": "compatible", "base_url": f"{sim}/v1", "api_key_env": "H4_LOCAL_KEY"},
        },
        "models": models,
        "routes": {i: {t: CHAINS[i] for t in TIERS} for i in INTENTS},
        "default_model": "mini",
        "baseline_model": "az-4o",
        "cache": {"enabled": True, "ttl_seconds": 600},
    }
    return orjson.dumps(doc).decode()  # JSON is YAML


@dataclass
class Answer:
    """What one client was told, read from its own API's answer."""

    requested: str
    model: str
    cache: str
    cost: float
    prompt: int
    completion: int
    cached: int = 0
    write: int = 0
    write_1h: int = 0
    key: str = ""

    def recount(self, policy: Policy) -> float:
        if self.cache == "hit":
            return 0.0
        entry = policy.models[self.model]
        return cost_usd(entry, self.prompt, self.completion, self.cached, self.write, self.write_1h)


@dataclass
class Mixed:
    stack: Stack
    policy: Policy
    main: str  # base URL of the orchestrator with every key
    solo: str  # base URL of the orchestrator with only the OpenAI key
    solo_metrics: str

    def metrics(self) -> dict[str, Samples]:
        time.sleep(0.3)  # cache stores finish after the answers
        return {
            "main": scrape(self.stack.orchestrator_metrics_url),
            "solo": scrape(self.solo_metrics),
            "router": scrape(f"http://127.0.0.1:{self.stack.ports.router_metrics}"),
        }


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mixed]:
    logs: Path = tmp_path_factory.mktemp("mixed-vendors")
    stack = Stack(log_dir=logs, simulator=False, sim_env={"TOLLGATE_SIM_LATENCY_SCALE": "0"})
    policy_file = logs / "policy.yaml"
    text = policy_yaml(stack.sim_url)
    policy_file.write_text(text)
    stack.router_env["TOLLGATE_ROUTER_POLICY_FILE"] = str(policy_file)
    stack.orch_env.update(
        {
            "TOLLGATE_ORCHESTRATOR_POLICY_FILE": str(policy_file),
            "TOLLGATE_ORCHESTRATOR_RETRY_BASE_BACKOFF_SECONDS": "0.01",
        }
    )
    keys = {k: stack.sim_key for k in KEYS}
    solo_http = free_port()
    try:
        stack.start_sim()
        stack.start_router()
        stack.start_cache()
        stack.start_orchestrator("orchestrator", None, None, **keys)
        solo = stack.start_orchestrator(
            "solo", http_port=solo_http, grpc_port=free_port(), H4_OPENAI_KEY=stack.sim_key
        )
        assert solo is not None
        yield Mixed(
            stack,
            parse_policy(text, prices={}),
            stack.base_url,
            f"http://127.0.0.1:{solo_http}",
            stack.metrics_url("solo"),
        )
    finally:
        stack.stop()


def client(base: str) -> httpx2.Client:
    return httpx2.Client(base_url=base, headers={"authorization": f"Bearer {DEV_KEY}"}, timeout=30)


def _events(raw: bytes) -> list[dict[str, Any]]:
    return [
        orjson.loads(line[6:])
        for line in raw.split(b"\n")
        if line.startswith(b"data: ") and line[6:].strip() not in (b"", b"[DONE]")
    ]


def chat(
    http: httpx2.Client, text: str, model: str = "auto", system: str = "", **kw: Any
) -> Answer:
    msgs = [{"role": "system", "content": system}] if system else []
    body = {"model": model, "messages": [*msgs, {"role": "user", "content": text}], **kw}
    r = http.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    h = r.headers
    if kw.get("stream"):
        chunks = _events(r.content)
        last = [c for c in chunks if c.get("usage")]
        assert len(last) == 1
        u, cost = last[0]["usage"], float(last[0]["x_tollgate_cost_usd"])
    else:
        u, cost = r.json()["usage"], float(h["x-tollgate-cost-usd"])
    details = u.get("prompt_tokens_details") or {}
    return Answer(
        model,
        h["x-tollgate-model"],
        h["x-tollgate-cache"],
        cost,
        u["prompt_tokens"],
        u["completion_tokens"],
        details.get("cached_tokens") or 0,
        details.get("cache_write_tokens") or 0,
        details.get("cache_write_1h_tokens") or 0,
    )


def messages(http: httpx2.Client, body: dict[str, Any]) -> Answer:
    """Anthropic's usage leaves reads and writes out of ``input_tokens``."""
    r = http.post("/v1/messages", json=body)
    assert r.status_code == 200, r.text
    h = r.headers
    if body.get("stream"):
        u: dict[str, Any] = {}
        cost = -1.0
        for e in _events(r.content):
            if e["type"] == "message_start":
                u.update(e["message"]["usage"])
            elif e["type"] == "message_delta":
                u.update({k: v for k, v in e["usage"].items() if v is not None})
                cost = float(e["x_tollgate_cost_usd"])
    else:
        u, cost = r.json()["usage"], float(h["x-tollgate-cost-usd"])
    read = u.get("cache_read_input_tokens") or 0
    write = u.get("cache_creation_input_tokens") or 0
    long = (u.get("cache_creation") or {}).get("ephemeral_1h_input_tokens") or 0
    prompt = u["input_tokens"] + read + write
    return Answer(
        body["model"],
        h["x-tollgate-model"],
        h["x-tollgate-cache"],
        cost,
        prompt,
        u["output_tokens"],
        read,
        write,
        long,
    )


def responses(http: httpx2.Client, body: dict[str, Any]) -> Answer:
    r = http.post("/v1/responses", json=body)
    assert r.status_code == 200, r.text
    u = r.json()["usage"]
    details = u.get("input_tokens_details") or {}
    return Answer(
        body["model"],
        r.headers["x-tollgate-model"],
        r.headers["x-tollgate-cache"],
        float(r.headers["x-tollgate-cost-usd"]),
        u["input_tokens"],
        u["output_tokens"],
        details.get("cached_tokens") or 0,
        details.get("cache_write_tokens") or 0,
    )


TALK = "hi! how are you today?"
CODE = "Write a Python function that parses a CSV file and returns the rows as dicts."
MATH = "Prove that the square root of 2 is irrational, step by step."


def provider(m: Mixed, model: str) -> str:
    return m.policy.models[model].provider


def test_auto_sends_talk_code_and_math_to_three_vendors(mixed: Mixed) -> None:
    with client(mixed.main) as http:
        talk, code, math = (chat(http, t) for t in (TALK, CODE, MATH))
    assert (talk.model, code.model, math.model) == ("flash", "haiku", "reasoner")
    vendors = {provider(mixed, a.model) for a in (talk, code, math)}
    assert vendors == {"gemini", "anthropic", "openai"}


def test_a_vendor_outage_falls_back_to_another_vendor(mixed: Mixed) -> None:
    before = mixed.metrics()["main"]
    attempts = 2  # retry_max_attempts: the model fails on each, then the chain moves on
    with client(mixed.main) as http:
        fault(mixed.stack, {"model": "gemini-2.5-flash", "status": 503, "count": attempts})
        talk = chat(http, TALK + " (while Gemini is down)")
        fault(mixed.stack, {"model": "claude-haiku-4-5", "status": 529, "count": attempts})
        code = chat(http, CODE + " Use the csv module.")
    assert (talk.model, provider(mixed, talk.model)) == ("mini", "openai")
    assert (code.model, provider(mixed, code.model)) == ("az-4o", "azure")
    after = mixed.metrics()["main"]
    moved = {
        (a, b): delta(before, after, "tollgate_llm_fallbacks_total", from_model=a, to_model=b)
        for a, b in (("flash", "mini"), ("haiku", "az-4o"))
    }
    assert moved == {("flash", "mini"): 1, ("haiku", "az-4o"): 1}
    reset_sim(mixed.stack)


def test_with_one_key_the_other_vendors_are_skipped(mixed: Mixed) -> None:
    before = mixed.metrics()
    with client(mixed.solo) as http:
        answers = [chat(http, t + " (one key)") for t in (TALK, CODE, MATH)]
        answers.append(
            chat(http, "Name three rivers.", stream=True, stream_options={"include_usage": True})
        )
        named = http.post(
            "/v1/chat/completions",
            json={"model": "flash", "messages": [{"role": "user", "content": "hi"}]},
        )
        msg = http.post(
            "/v1/messages",
            json={
                "model": "haiku",
                "max_tokens": 50,
                "messages": [{"role": "user", "content": "hi"}],
            },
        )
    assert {provider(mixed, a.model) for a in answers} == {"openai"}
    after = mixed.metrics()
    s, r = (before["solo"], after["solo"]), (before["router"], after["router"])
    # Straight to OpenAI: no attempt on a keyless provider, so no fallback at all.
    assert delta(*s, "tollgate_llm_fallbacks_total") == 0
    assert delta(*s, "tollgate_llm_requests_total", outcome="success") == len(answers)
    assert delta(*r, "tollgate_router_fallbacks_total", reason="provider_unavailable") >= 2
    # A named model of a keyless provider: refused, in each client's shape, naming the env var.
    assert named.status_code == 400
    err = named.json()["error"]
    assert (err["code"], err["param"]) == ("model_not_available", "model")
    assert "H4_GEMINI_KEY" in err["message"] and mixed.stack.sim_key not in named.text
    assert msg.status_code == 400
    assert msg.json()["type"] == "error"
    assert msg.json()["error"]["type"] == "invalid_request_error"
    assert "H4_ANTHROPIC_KEY" in msg.json()["error"]["message"]


def _cache_blocks(ttl: str | None) -> list[dict[str, Any]]:
    """Two cache breakpoints: the first prefix is read, the rest up to the second written."""
    second: dict[str, Any] = {"type": "ephemeral", **({"ttl": ttl} if ttl else {})}
    return [
        {"type": "text", "text": LONG_SYSTEM, "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": MORE_SYSTEM, "cache_control": second},
    ]


def workload(http: httpx2.Client) -> list[Answer]:
    out: list[Answer] = []
    stream: dict[str, Any] = {"stream": True, "stream_options": {"include_usage": True}}
    for text in (TALK, CODE, MATH, "Summarize the plot of Hamlet.", "Write a haiku about rain."):
        out.append(chat(http, text + " (recount)"))
        out.append(chat(http, text + " (recount, streamed)", **stream))
    # Named models of each vendor, a long system prefix on each (prompt-cached tokens).
    for model in ("mini", "flash", "az-4o", "llama", "haiku"):
        out.append(chat(http, "Where is my parcel?", model=model, system=LONG_SYSTEM))
    # Anthropic's cache writes, 5-minute and 1-hour, whole and streamed.
    for ttl in (None, "1h"):
        for streamed in (False, True):
            body = {
                "model": "haiku",
                "max_tokens": 120,
                "stream": streamed,
                "system": _cache_blocks(ttl),
                "messages": [{"role": "user", "content": f"Where is order {ttl} {streamed}?"}],
            }
            out.append(messages(http, body))
    # Messages to the router's choice, Responses to Gemini (translated through chat).
    out.append(
        messages(
            http,
            {"model": "auto", "max_tokens": 80, "messages": [{"role": "user", "content": TALK}]},
        )
    )
    out.append(responses(http, {"model": "auto", "input": "Translate 'good night' to French."}))
    # A miss that stores, then a hit that replays: cache savings.
    for _ in range(2):
        a = chat(http, "Name 5 primes.", temperature=0)
        a.key = "primes"
        out.append(a)
    return out


def test_recount_holds_on_mixed_vendor_traffic(mixed: Mixed) -> None:
    reset_sim(mixed.stack)
    before = mixed.metrics()["main"]
    with client(mixed.main) as http:
        answers = workload(http)
    after = mixed.metrics()["main"]
    o = before, after
    p = mixed.policy
    # The traffic covers what it must: several vendors, reads, both kinds of writes, a hit.
    spent = [a for a in answers if a.cache != "hit"]
    assert len({provider(mixed, a.model) for a in spent}) >= 4
    assert sum(a.cached for a in spent) > 0
    assert sum(a.write - a.write_1h for a in spent) > 0 and sum(a.write_1h for a in spent) > 0
    assert [a.cache for a in answers if a.key] == ["miss", "hit"]
    for a in answers:
        assert a.cost == pytest.approx(a.recount(p), rel=1e-11, abs=1e-15), a
    told = sum(a.cost for a in answers)
    priced = sum(a.recount(p) for a in answers)
    counted = delta(*o, "tollgate_llm_cost_usd_total")
    assert told > 0
    assert abs(counted - told) <= EPS and abs(told - priced) <= EPS, (counted, told, priced)
    for vendor in {provider(mixed, a.model) for a in spent}:
        share = sum(a.recount(p) for a in spent if provider(mixed, a.model) == vendor)
        assert abs(delta(*o, "tollgate_llm_cost_usd_total", provider=vendor) - share) <= EPS
    # Token counters, type by type, cache writes included.
    want = {
        "prompt": sum(a.prompt for a in spent),
        "completion": sum(a.completion for a in spent),
        "cached_prompt": sum(a.cached for a in spent),
        "cache_write_prompt": sum(a.write for a in spent),
    }
    for kind, n in want.items():
        assert delta(*o, "tollgate_llm_tokens_total", type=kind) == n, kind
    # Savings: routing against the one baseline model, cache by the stored cost.
    baseline = p.models[p.baseline_model]
    routing = sum(
        max(0.0, cost_usd(baseline, a.prompt, a.completion, a.cached, a.write, a.write_1h) - a.cost)
        for a in spent
        if a.requested == "auto" and a.model != p.baseline_model
    )
    stored = {a.key: a.cost for a in answers if a.key and a.cache == "miss"}
    cache = sum(stored[a.key] for a in answers if a.key and a.cache == "hit")
    assert routing > 0 and cache > 0
    assert abs(delta(*o, "tollgate_savings_usd_total", source="routing") - routing) <= EPS
    assert abs(delta(*o, "tollgate_savings_usd_total", source="cache") - cache) <= EPS
