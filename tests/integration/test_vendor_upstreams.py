"""Gemini (OpenAI-compatible endpoint) and Azure OpenAI (v1 and classic) adapters, end to
end over HTTP: the orchestrator's real transport and dispatch (``Upstreams``,
``Dispatch``: vendor headers, URLs, the Gemini fixup leg) against

- aimock (independent; it serves ``/openai/deployments/{id}/chat/completions``,
  ``/openai/v1/...`` and ``/v1beta/openai/...``, and journals path, query and headers,
  credentials redacted but named): what we send;
- tollgate's simulator in its vendor flavours (``tollgate_simulator/vendors.py``): Gemini's
  quirks (stop alongside tool calls, calls without index or id, finish in its own chunk)
  arrive repaired as openai-python assembles them; Azure's auth and api-version checks;
  each vendor's error shapes.

In process rather than through the gateway's processes: the vendor modules register
themselves on import, and the orchestrator process imports them once the lead wires
them into ``providers/openai.py``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.integration.vendor_rig import (
    KEY,
    TOOL,
    WEATHER,
    Rig,
    assembled,
    gateway_on,
    running_aimock,
    running_sim,
    sdk,
    sim_call,
)
from tests.upstream_mocks import AIMock
from tollgate_common.policy import INTENTS, TIERS
from tollgate_orchestrator.providers import azure, gemini  # noqa: F401  (registrations)
from tollgate_orchestrator.retry import CLIENT, AttemptFailed
from tollgate_orchestrator.wiring import Gateway
from tools.stack import Stack

pytestmark = pytest.mark.integration

ROUTES = json.dumps({i: {t: ["g-flash"] for t in TIERS} for i in INTENTS})
PRICE = "input_per_mtok: 0.3, cached_input_per_mtok: 0.03, output_per_mtok: 2.5"


def policy_yaml(root: str) -> str:
    """Three providers on one server: Gemini's endpoint, Azure v1 and Azure classic."""
    return f"""
version: vendors-test
providers:
  gemini: {{type: gemini, base_url: "{root}/v1beta/openai/", api_key_env: H2_GEMINI_KEY}}
  azure1: {{type: azure, base_url: "{root}/openai/v1/", api_key_env: H2_AZURE_KEY}}
  azurec:
    type: azure
    base_url: "{root}/"
    api_key_env: H2_AZURE_KEY
    api_version: "2024-10-21"
  entra:
    type: azure
    base_url: "{root}/openai/v1/"
    api_key_env: H2_AZURE_KEY
    auth: bearer
models:
  g-flash: {{provider: gemini, upstream_model: gemini-2.5-flash, {PRICE}}}
  az-v1: {{provider: azure1, upstream_model: gpt-4o-mini, {PRICE}}}
  az-classic: {{provider: azurec, upstream_model: gpt-4o-mini, {PRICE}}}
  az-entra: {{provider: entra, upstream_model: gpt-4o-mini, {PRICE}}}
routes: {ROUTES}
default_model: g-flash
baseline_model: g-flash
"""


@pytest.fixture(autouse=True)
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("H2_GEMINI_KEY", KEY)
    monkeypatch.setenv("H2_AZURE_KEY", KEY)


# --- the simulator's vendor flavours -----------------------------------------------------


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_sim(tmp_path_factory) as stack:
        yield stack


@pytest.fixture
async def on_sim(sim: Stack) -> AsyncIterator[Rig]:
    v = Rig(policy_yaml(sim.sim_url))
    await sim_call(sim, "POST", "/_sim/reset")
    yield v
    await v.close()


async def test_gemini_quirks_arrive_repaired_whole_and_streamed(sim: Stack, on_sim: Rig) -> None:
    whole = await on_sim.complete("g-flash", tools=[TOOL])
    choice = whole["choices"][0]
    assert choice["finish_reason"] == "tool_calls"  # the simulator said "stop"
    call = choice["message"]["tool_calls"][0]
    assert call["id"].startswith("call_") and call["function"]["name"] == "get_weather"
    assert "thought_signature" in call["extra_content"]["google"]  # kept for the next turn

    chunks = await on_sim.stream("g-flash", tools=[TOOL])
    done = assembled(chunks)
    assert done.choices[0].finish_reason == "tool_calls"
    calls = done.choices[0].message.tool_calls or []
    assert [c.function.name for c in calls] == ["get_weather"] and calls[0].id.startswith("call_")
    json.loads(calls[0].function.arguments)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["prompt_tokens"] > 0
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes.count("tool_calls") == 1 and finishes[-1] == "tool_calls"

    journal = (await sim_call(sim, "GET", "/_sim/requests"))["requests"]
    assert [e["path"] for e in journal] == ["/v1beta/openai/chat/completions"] * 2
    assert journal[0]["model"] == "gemini-2.5-flash"
    assert journal[1]["body"]["stream_options"] == {"include_usage": True}


async def test_gemini_text_stream_keeps_usage_for_pricing(on_sim: Rig) -> None:
    chunks = await on_sim.stream("g-flash", messages=[{"role": "user", "content": "Say hello."}])
    done = assembled(chunks)
    assert done.choices[0].finish_reason == "stop" and done.choices[0].message.content
    usage = chunks[-1]["usage"]
    assert usage["completion_tokens"] > 0 and chunks[-1]["choices"] == []


async def test_gemini_errors_come_in_googles_list_shape(sim: Stack, on_sim: Rig) -> None:
    await sim_call(sim, "POST", "/_sim/faults", {"model": "gemini-2.5-flash", "status": 400})
    with pytest.raises(AttemptFailed) as info:
        await on_sim.complete("g-flash")
    f = info.value.failure
    assert f.status == 400 and f.error_class == CLIENT
    body: Any = f.body
    if isinstance(body, list):  # until the transport unwraps Gemini's list
        body = body[0]["error"]
    assert body["status"] == "INVALID_ARGUMENT"


async def test_azure_classic_and_v1_reach_their_paths_with_the_key(sim: Stack, on_sim: Rig) -> None:
    classic = await on_sim.complete("az-classic", messages=[{"role": "user", "content": "hi"}])
    assert "prompt_filter_results" in classic  # Azure's own field passes through
    v1 = await on_sim.complete("az-v1", messages=[{"role": "user", "content": "hi"}])
    entra = await on_sim.complete("az-entra", messages=[{"role": "user", "content": "hi"}])
    assert classic["model"] == v1["model"] == entra["model"] == "gpt-4o-mini"
    chunks = await on_sim.stream("az-classic", messages=[{"role": "user", "content": "hi"}])
    assert chunks[0]["choices"] == [] and "prompt_filter_results" in chunks[0]
    assert assembled(chunks).choices[0].finish_reason == "stop"
    journal = (await sim_call(sim, "GET", "/_sim/requests"))["requests"]
    paths = [(e["path"], e["query"]) for e in journal]
    dep = "/openai/deployments/gpt-4o-mini/chat/completions"
    assert paths == [
        (dep, "api-version=2024-10-21"),
        ("/openai/v1/chat/completions", ""),
        ("/openai/v1/chat/completions", ""),
        (dep, "api-version=2024-10-21"),
    ]


async def test_azure_refuses_a_wrong_key_and_a_missing_api_version(sim: Stack) -> None:
    url = f"{sim.sim_url}/openai/deployments/d1/chat/completions"
    body = {"messages": [{"role": "user", "content": "hi"}]}
    async with httpx2.AsyncClient() as c:
        wrong = await c.post(url + "?api-version=2024-10-21", json=body, headers={"api-key": "no"})
        missing = await c.post(url, json=body, headers={"api-key": KEY})
        ok = await c.post(url + "?api-version=2024-10-21", json=body, headers={"api-key": KEY})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "401"
    assert missing.status_code == 404 and missing.json()["error"]["message"] == "Resource not found"
    assert ok.status_code == 200 and ok.json()["model"] == "d1"  # the deployment answers


# --- aimock: what we send, as an independent server records it ---------------------------


def aimock_fixtures() -> list[dict[str, Any]]:
    return [
        {
            "match": {"userMessage": "tg-azure-404"},
            "response": {
                "error": {
                    "message": "The API deployment does not exist.",
                    "code": "DeploymentNotFound",
                },
                "status": 404,
            },
        },
        {
            "match": {"toolName": "get_weather"},
            "response": {
                "toolCalls": [{"name": "get_weather", "arguments": {"city": "Paris"}}],
                "usage": {"prompt_tokens": 31, "completion_tokens": 9},
            },
        },
        {
            "match": {},
            "response": {
                "content": "plain answer",
                "usage": {"prompt_tokens": 12, "completion_tokens": 3},
            },
        },
    ]


@pytest.fixture(scope="module")
def aimock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AIMock]:
    with running_aimock(tmp_path_factory, "vendors", aimock_fixtures()) as mock:
        yield mock


@pytest.fixture
async def on_aimock(aimock: AIMock) -> AsyncIterator[Rig]:
    aimock.reset_journal()
    v = Rig(policy_yaml(aimock.url))
    yield v
    await v.close()


async def test_aimock_sees_each_vendors_path_headers_and_body(
    aimock: AIMock, on_aimock: Rig
) -> None:
    for name in ("az-classic", "az-v1", "az-entra", "g-flash"):
        whole = await on_aimock.complete(name, tools=[TOOL], store=True)
        assert whole["choices"][0]["finish_reason"] == "tool_calls"
    journal = aimock.journal()
    assert [e["path"] for e in journal] == [
        "/openai/deployments/gpt-4o-mini/chat/completions?api-version=2024-10-21",
        "/openai/v1/chat/completions",
        "/openai/v1/chat/completions",
        "/v1beta/openai/chat/completions",
    ]
    heads = [{k.lower() for k in e["headers"]} for e in journal]
    assert "api-key" in heads[0] and "authorization" not in heads[0]
    assert "api-key" in heads[1] and "authorization" not in heads[1]
    assert "authorization" in heads[2] and "api-key" not in heads[2]  # Entra bearer
    assert "authorization" in heads[3] and "api-key" not in heads[3]  # Gemini bearer
    assert all(e["body"]["model"] == "gpt-4o-mini" for e in journal[:3])
    assert journal[3]["body"]["model"] == "gemini-2.5-flash"
    assert journal[0]["body"]["tools"][0]["function"]["name"] == "get_weather"
    assert "store" in journal[0]["body"] and "store" not in journal[3]["body"]  # Gemini refuses it


async def test_aimock_streams_tool_calls_and_usage_through_each_vendor(
    on_aimock: Rig,
) -> None:
    for name in ("az-classic", "az-v1", "g-flash"):
        chunks = await on_aimock.stream(name, tools=[TOOL])
        done = assembled(chunks)
        assert done.choices[0].finish_reason == "tool_calls"
        calls = done.choices[0].message.tool_calls or []
        assert json.loads(calls[0].function.arguments) == {"city": "Paris"}
        usage = [c["usage"] for c in chunks if c.get("usage")]
        assert usage and usage[-1]["prompt_tokens"] == 31


async def test_aimock_azure_error_passes_as_a_client_error(on_aimock: Rig) -> None:
    with pytest.raises(AttemptFailed) as info:
        await on_aimock.complete(
            "az-classic", messages=[{"role": "user", "content": "tg-azure-404"}]
        )
    f = info.value.failure
    assert f.status == 404 and isinstance(f.body, dict)
    assert f.body.get("code") == "DeploymentNotFound"


# --- the whole gateway, the openai SDK as its client -------------------------------------


@pytest.fixture
async def gateway(
    sim: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Gateway]:
    gw = gateway_on(policy_yaml(sim.sim_url), tmp_path, monkeypatch, "g-flash")
    yield gw
    await gw.close()


async def test_the_openai_sdk_through_the_gateway_sees_gemini_repaired(gateway: Gateway) -> None:
    async with sdk(gateway) as client:
        whole = await client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": WEATHER}], tools=[TOOL]
        )
        assert whole.choices[0].finish_reason == "tool_calls"
        assert (whole.choices[0].message.tool_calls or [])[0].id.startswith("call_")
        assert whole.usage is not None and whole.usage.prompt_tokens > 0
        async with client.chat.completions.stream(
            model="auto",
            messages=[{"role": "user", "content": WEATHER + " (streamed)"}],
            tools=[TOOL],
            stream_options={"include_usage": True},
        ) as stream:
            async for _ in stream:
                pass
            done = await stream.get_final_completion()
    assert done.choices[0].finish_reason == "tool_calls"
    call = (done.choices[0].message.tool_calls or [])[0]
    assert call.function.name == "get_weather" and call.id.startswith("call_")
    assert done.usage is not None and done.usage.completion_tokens > 0
