"""A dialect is an addition: this test-only one is defined, registered and served here,
through the whole pipeline (budget, route, cache, attempts, accounting, metrics), and no
pipeline or face module knows it exists.

It speaks a toy API, ``POST /v1/test/plain`` with ``{"model", "prompt"}``, answered by
``{"text"}`` (or ``data: {"delta"}`` events), and translates to Chat Completions.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import httpx2
import orjson
import pytest
from prometheus_client import CollectorRegistry

from tollgate_common.config import load_settings
from tollgate_orchestrator.config import OrchestratorSettings
from tollgate_orchestrator.dialects.registry import register, unregister
from tollgate_orchestrator.errors import ApiError, bad_request
from tollgate_orchestrator.http_api import build_app
from tollgate_orchestrator.sse import DONE, data_of
from tollgate_orchestrator.types import LlmRequest
from tollgate_orchestrator.validation import Limits, decode_json, parse_chat_request
from tollgate_orchestrator.wiring import Gateway
from tools.stack import DEV_KEY, free_port

from .fakes import FakeRouter, FakeUpstream

AUTH = {"authorization": f"Bearer {DEV_KEY}"}


class PlainDialect:
    name = "plain"
    summary = "A toy completion API (test only)"
    path = "/v1/test/plain"
    api = "openai.chat"

    def parse(self, raw: bytes, limits: Limits) -> LlmRequest:
        data = decode_json(raw)
        if not isinstance(data, dict) or not isinstance(data.get("prompt"), str):
            raise bad_request("prompt", "'prompt' must be a string.")
        chat = {
            "model": data.get("model", "auto"),
            "messages": [{"role": "user", "content": data["prompt"]}],
            "stream": bool(data.get("stream")),
            "temperature": 0,
        }
        return parse_chat_request(chat, limits)

    def render(self, body: bytes) -> bytes:
        completion = orjson.loads(body)
        return orjson.dumps({"text": completion["choices"][0]["message"]["content"]})

    async def render_stream(self, events: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for ev in events:
            payload = data_of(ev.rstrip(b"\n"))
            if payload is None or payload == DONE:
                continue
            chunk = orjson.loads(payload)
            for choice in chunk.get("choices") or ():
                text = (choice.get("delta") or {}).get("content")
                if text:
                    yield b"data: " + orjson.dumps({"delta": text}) + b"\n\n"
        yield b"data: end\n\n"

    def error_body(self, err: ApiError) -> bytes:
        return orjson.dumps({"problem": err.message, "field": err.param})

    def authorization(self, headers: Mapping[str, str]) -> str | None:
        return headers.get("authorization")

    def openapi(self, limits: Limits) -> dict[str, Any]:
        return {}


@pytest.fixture
def plain() -> Iterator[PlainDialect]:
    d = PlainDialect()
    register(d)
    yield d
    unregister(d)


@pytest.fixture
async def served(
    plain: PlainDialect, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[httpx2.AsyncClient, Gateway, FakeUpstream]]:
    dead = f"127.0.0.1:{free_port()}"
    for k in [k for k in os.environ if k.startswith("TOLLGATE_")]:
        monkeypatch.delenv(k)
    settings = load_settings(
        OrchestratorSettings,
        "orchestrator",
        router_addr=dead,
        cache_addr=dead,
        upstream_base_url=f"http://{dead}/v1",
    )
    gw = Gateway(settings, CollectorRegistry())
    gw.ready = True
    upstream = FakeUpstream()
    gw.pipeline.upstreams = upstream
    gw.pipeline.router = FakeRouter(["gpt-4o-mini"])
    transport = httpx2.ASGITransport(app=build_app(gw))
    async with httpx2.AsyncClient(transport=transport, base_url="http://gw") as client:
        yield client, gw, upstream
    await gw.close()


def sample(gw: Gateway, name: str, **labels: str) -> float:
    return gw.families.registry.get_sample_value(name, labels) or 0.0


async def test_a_registered_dialect_is_served_through_the_whole_pipeline(served: Any) -> None:
    client, gw, upstream = served
    resp = await client.post("/v1/test/plain", json={"prompt": "say hi"}, headers=AUTH)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"text": "hello world"}
    assert resp.headers["x-tollgate-model"] == "gpt-4o-mini"
    cost = float(resp.headers["x-tollgate-cost-usd"])
    assert cost > 0
    # Upstream it was Chat Completions, as the dialect translated it.
    assert upstream.payloads[0]["messages"] == [{"role": "user", "content": "say hi"}]
    llm = {
        "provider": "openai",
        "model": "gpt-4o-mini",
        "intent": "chat",
        "tenant": "dev",
        "api": "chat",
    }
    assert sample(gw, "tollgate_llm_cost_usd_total", **llm) == cost
    assert sample(gw, "tollgate_llm_requests_total", **llm, outcome="success") == 1
    http = {"method": "POST", "route": "/v1/test/plain", "status_code": "200"}
    assert sample(gw, "tollgate_http_requests_total", **http) == 1


async def test_a_registered_dialect_streams_and_answers_errors_in_its_own_shape(
    served: Any,
) -> None:
    client, gw, _ = served
    body = {"prompt": "say hi", "stream": True}
    async with client.stream("POST", "/v1/test/plain", json=body, headers=AUTH) as resp:
        lines = [line async for line in resp.aiter_lines() if line]
    assert lines[-1] == "data: end"
    text = "".join(orjson.loads(line[6:])["delta"] for line in lines[:-1])
    assert text == "".join(f"w{i} " for i in range(5))
    llm = {
        "provider": "openai",
        "model": "gpt-4o-mini",
        "intent": "chat",
        "tenant": "dev",
        "api": "chat",
    }
    assert sample(gw, "tollgate_llm_requests_total", **llm, outcome="success") == 1
    assert gw.admissions.slots.used == 0

    bad = await client.post("/v1/test/plain", json={"prompt": 3}, headers=AUTH)
    assert bad.status_code == 400
    assert bad.json() == {"problem": "'prompt' must be a string.", "field": "prompt"}
    unauth = await client.post("/v1/test/plain", json={"prompt": "x"})
    assert unauth.status_code == 401 and "problem" in unauth.json()
