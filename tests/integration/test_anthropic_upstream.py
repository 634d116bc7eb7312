"""The native Anthropic Messages adapter end to end over HTTP: chat requests to a provider
of ``type: anthropic`` go to ``POST /v1/messages`` (``translate/chat_messages``,
``providers/anthropic``) through the orchestrator's real transport and dispatch, against

- aimock (independent; it serves ``/v1/messages`` with Anthropic's shapes and journals
  path, headers and body, credentials redacted, and with ``AIMOCK_API_KEYS`` refuses a
  request without the key): what we send, and that what comes back is a Message as
  ``anthropic.types.Message`` reads it, translated into a chat completion as
  openai-python reads it; a 529 ``overloaded_error`` falls back to the next model;
- tollgate's simulator: prompt-cache usage with 1-hour writes, and Anthropic's
  ``x-api-key``/``anthropic-version`` checks and error shapes.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import orjson
import pytest
from anthropic.types import Message
from openai.types.responses import Response

from tests.integration.vendor_rig import (
    KEY,
    TOOL,
    WEATHER,
    ChainRouter,
    Rig,
    assembled,
    gateway_on,
    request,
    running_aimock,
    running_sim,
    sdk,
    sim_call,
)
from tests.upstream_mocks import AIMock
from tollgate_common.policy import INTENTS, TIERS, parse_policy
from tollgate_orchestrator.dialects import messages as messages_dialect
from tollgate_orchestrator.dialects import responses as responses_dialect
from tollgate_orchestrator.dialects.chat import usage_of as chat_usage_of
from tollgate_orchestrator.retry import SERVER, AttemptFailed
from tollgate_orchestrator.translate.chat_messages import TRANSLATION
from tollgate_orchestrator.validation import Limits
from tollgate_orchestrator.wiring import Gateway
from tools.stack import Stack

pytestmark = pytest.mark.integration

SDK_VERSION = str(anthropic.AsyncAnthropic(api_key="x").default_headers["anthropic-version"])
ROUTES = json.dumps({i: {t: ["claude"] for t in TIERS} for i in INTENTS})
PRICE = "input_per_mtok: 1.0, cached_input_per_mtok: 0.1, output_per_mtok: 5.0"


def policy_yaml(root: str) -> str:
    """Anthropic (x-api-key), Anthropic with a bearer, and an OpenAI fallback, one server."""
    return f"""
version: anthropic-test
providers:
  anthropic: {{type: anthropic, base_url: "{root}/v1/", api_key_env: H1_ANTHROPIC_KEY}}
  bearer: {{type: anthropic, base_url: "{root}", api_key_env: H1_ANTHROPIC_KEY, auth: bearer}}
  openai: {{type: openai, base_url: "{root}/v1/", api_key_env: H1_OPENAI_KEY}}
models:
  claude: {{provider: anthropic, upstream_model: claude-haiku-4-5, {PRICE}}}
  claude-bearer: {{provider: bearer, upstream_model: claude-haiku-4-5, {PRICE}}}
  claude-busy: {{provider: anthropic, upstream_model: claude-overloaded, {PRICE}}}
  gpt: {{provider: openai, upstream_model: gpt-4o-mini, {PRICE}}}
routes: {ROUTES}
default_model: claude
baseline_model: claude
"""


class Anthropic(Rig):
    def __init__(self, root: str) -> None:
        super().__init__(policy_yaml(root))

    async def message(self, name: str, **body: Any) -> Message:
        """The upstream's own answer to the translated request, as anthropic-python reads it."""
        req = TRANSLATION.request(request(**body))
        raw, _ = await self.upstreams.complete(self.target(name), req, 10.0)
        return Message.model_validate_json(raw)


@pytest.fixture(autouse=True)
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("H1_ANTHROPIC_KEY", KEY)
    monkeypatch.setenv("H1_OPENAI_KEY", KEY)


# --- aimock -------------------------------------------------------------------------------


def aimock_fixtures() -> list[dict[str, Any]]:
    return [
        {
            "match": {"model": "claude-overloaded"},
            "response": {
                "error": {"type": "overloaded_error", "message": "Overloaded"},
                "status": 529,
            },
        },
        {
            "match": {"toolName": "get_weather"},
            "response": {
                "toolCalls": [{"name": "get_weather", "arguments": {"city": "Paris"}}],
                "usage": {"input_tokens": 31, "output_tokens": 9},
            },
        },
        {
            "match": {"userMessage": "think first"},
            "response": {
                "content": "42",
                "reasoning": "six times seven",
                "usage": {"input_tokens": 20, "output_tokens": 30},
            },
        },
        {
            "match": {},
            "response": {
                "content": "plain answer",
                "usage": {"input_tokens": 12, "output_tokens": 3},
            },
        },
    ]


@pytest.fixture(scope="module")
def aimock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AIMock]:
    with running_aimock(tmp_path_factory, "anthropic", aimock_fixtures(), (KEY,)) as mock:
        yield mock


@pytest.fixture
async def on_aimock(aimock: AIMock) -> AsyncIterator[Anthropic]:
    aimock.reset_journal()
    a = Anthropic(aimock.url)
    yield a
    await a.close()


async def test_aimock_sees_messages_path_headers_and_body(
    aimock: AIMock, on_aimock: Anthropic
) -> None:
    body: dict[str, Any] = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": WEATHER},
        ],
        "tools": [TOOL],
        "tool_choice": "required",
        "stop": ["END"],
        "user": "u-1",
    }
    whole = await on_aimock.complete("claude", **body)
    choice = whole["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    call = choice["message"]["tool_calls"][0]
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}
    assert whole["usage"]["prompt_tokens"] == 31 and whole["usage"]["completion_tokens"] == 9
    native = await on_aimock.message("claude", **body)  # the upstream's own answer
    assert native.stop_reason == "tool_use" and native.content[0].type == "tool_use"
    await on_aimock.complete("claude-bearer", messages=[{"role": "user", "content": "hi"}])

    journal = aimock.journal()  # journaled at all: the key arrived (AIMOCK_API_KEYS)
    assert [e["path"] for e in journal] == ["/v1/messages"] * 3
    heads = [{k.lower(): v for k, v in e["headers"].items()} for e in journal]
    assert "x-api-key" in heads[0] and "authorization" not in heads[0]
    assert "authorization" in heads[2] and "x-api-key" not in heads[2]  # auth: bearer
    assert all(h["anthropic-version"] == SDK_VERSION for h in heads)
    assert heads[0]["user-agent"].startswith("AsyncAnthropic/Python")
    # aimock journals its own reading of the Anthropic body (as chat): the system prompt
    # came from ``system``, the tool's parameters from ``input_schema``.
    sent = journal[0]["body"]
    assert sent["model"] == "claude-haiku-4-5" and sent["max_tokens"] == 4096
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": WEATHER},
    ]
    assert sent["tools"][0]["function"]["parameters"] == TOOL["function"]["parameters"]
    assert not sent.get("stream")


async def test_aimock_streams_tool_calls_and_usage(aimock: AIMock, on_aimock: Anthropic) -> None:
    chunks = await on_aimock.stream("claude", tools=[TOOL])
    done = assembled(chunks)
    assert done.choices[0].finish_reason == "tool_calls"
    calls = done.choices[0].message.tool_calls or []
    assert json.loads(calls[0].function.arguments) == {"city": "Paris"}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["prompt_tokens"] == 31
    assert chunks[-1]["usage"]["completion_tokens"] == 9
    assert aimock.journal()[0]["body"]["stream"] is True


async def test_aimock_thinking_comes_back_as_reasoning_content(
    aimock: AIMock, on_aimock: Anthropic
) -> None:
    ask = [{"role": "user", "content": "think first: what is 6 x 7?"}]
    whole = await on_aimock.complete("claude", messages=ask, reasoning_effort="low")
    msg = whole["choices"][0]["message"]
    assert msg["content"] == "42" and msg["reasoning_content"] == "six times seven"
    chunks = await on_aimock.stream("claude", messages=ask, reasoning_effort="low")
    thought = "".join(
        c["choices"][0]["delta"].get("reasoning_content") or "" for c in chunks if c["choices"]
    )
    assert thought == "six times seven" and assembled(chunks).choices[0].message.content == "42"
    assert aimock.journal()[0]["body"]["max_tokens"] == 2048 + 4096  # above the budget


async def test_aimock_529_is_a_retryable_server_failure(on_aimock: Anthropic) -> None:
    with pytest.raises(AttemptFailed) as info:
        await on_aimock.complete("claude-busy", messages=[{"role": "user", "content": "hi"}])
    f = info.value.failure
    assert f.status == 529 and f.error_class == SERVER and f.retryable
    assert isinstance(f.body, dict) and f.body["type"] == "overloaded_error"


# --- the whole gateway, the openai SDK as its client ---------------------------------------


@pytest.fixture
async def gateway(
    aimock: AIMock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Gateway]:
    aimock.reset_journal()
    gw = gateway_on(policy_yaml(aimock.url), tmp_path, monkeypatch, "claude-busy", "gpt")
    yield gw
    await gw.close()


async def test_a_529_from_anthropic_falls_back_to_the_next_vendor(
    aimock: AIMock, gateway: Gateway
) -> None:
    async with sdk(gateway) as client:
        whole = await client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "hello there"}]
        )
    assert whole.choices[0].message.content == "plain answer"
    paths = [e["path"] for e in aimock.journal()]
    assert paths[-1] == "/v1/chat/completions"  # the OpenAI fallback answered
    assert paths[:-1] and set(paths[:-1]) == {"/v1/messages"}  # after Anthropic's 529s


async def test_the_openai_sdk_streams_from_anthropic_through_the_gateway(
    aimock: AIMock, gateway: Gateway
) -> None:
    gateway.pipeline.router = ChainRouter(parse_policy(policy_yaml(aimock.url)), "claude")
    async with (
        sdk(gateway) as client,
        client.chat.completions.stream(
            model="auto",
            messages=[{"role": "user", "content": WEATHER}],
            tools=[TOOL],
            stream_options={"include_usage": True},
        ) as stream,
    ):
        async for _ in stream:
            pass
        done = await stream.get_final_completion()
    assert done.choices[0].finish_reason == "tool_calls"
    call = (done.choices[0].message.tool_calls or [])[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments)
    assert done.usage is not None and done.usage.prompt_tokens == 31
    assert [e["path"] for e in aimock.journal()] == ["/v1/messages"]


# --- the simulator: prompt-cache usage, Anthropic's auth and errors -------------------------


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_sim(tmp_path_factory) as stack:
        yield stack


@pytest.fixture
async def on_sim(sim: Stack) -> AsyncIterator[Anthropic]:
    a = Anthropic(sim.sim_url)
    await sim_call(sim, "POST", "/_sim/reset")
    yield a
    await a.close()


LONG = "The quick brown fox jumps over the lazy dog. " * 400  # over the 1,024-token minimum
CACHED = {"type": "text", "text": LONG, "cache_control": {"type": "ephemeral", "ttl": "1h"}}


async def test_sim_one_hour_cache_writes_reach_chat_usage_whole_and_streamed(
    on_sim: Anthropic,
) -> None:
    # Two breakpoints: the simulator reads the first prefix and writes the rest.
    turn = [{**CACHED, "text": "Summarize this too: " + LONG}]
    ask = [{"role": "system", "content": [CACHED]}, {"role": "user", "content": turn}]
    whole = await on_sim.complete("claude", messages=ask)
    u = chat_usage_of(whole["usage"])
    assert u.cached > 1024 and u.cache_write > 1024 and u.cache_write_1h == u.cache_write
    assert u.prompt >= u.cache_write + u.cached  # chat's prompt includes the cache
    chunks = await on_sim.stream("claude", messages=ask)
    streamed = chat_usage_of(chunks[-1]["usage"])
    assert (streamed.cache_write, streamed.cache_write_1h) == (u.cache_write, u.cache_write_1h)
    assert assembled(chunks).choices[0].message.content


async def test_sim_529_overloaded_and_anthropics_auth_checks(sim: Stack, on_sim: Anthropic) -> None:
    await sim_call(sim, "POST", "/_sim/faults", {"model": "claude-haiku-4-5", "status": 529})
    with pytest.raises(AttemptFailed) as info:
        await on_sim.complete("claude", messages=[{"role": "user", "content": "hi"}])
    f = info.value.failure
    assert f.status == 529 and f.retryable
    assert isinstance(f.body, dict) and f.body["type"] == "overloaded_error"

    url = f"{sim.sim_url}/v1/messages"
    body = {
        "model": "claude-haiku-4-5",
        "max_tokens": 8,
        "messages": [{"role": "user", "content": "hi"}],
    }
    async with httpx2.AsyncClient() as c:
        no_version = await c.post(url, json=body, headers={"x-api-key": KEY})
        wrong_key = await c.post(
            url, json=body, headers={"x-api-key": "no", "anthropic-version": SDK_VERSION}
        )
        ok = await c.post(
            url, json=body, headers={"x-api-key": KEY, "anthropic-version": SDK_VERSION}
        )
    assert no_version.status_code == 400 and no_version.json()["type"] == "error"
    assert wrong_key.status_code == 401
    assert wrong_key.json()["error"]["type"] == "authentication_error"
    assert Message.model_validate(ok.json()).usage.input_tokens > 0


async def test_sim_journal_has_the_raw_messages_body(sim: Stack, on_sim: Anthropic) -> None:
    await on_sim.complete(
        "claude",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": WEATHER}],
        tools=[TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        parallel_tool_calls=False,
        stop="END",
        user="u-1",
        response_format={"type": "json_object"},
    )
    await on_sim.complete("claude", reasoning_effort="high", max_tokens=30000)
    journal = (await sim_call(sim, "GET", "/_sim/requests"))["requests"]
    assert [e["path"] for e in journal] == ["/v1/messages"] * 2
    sent, thinking = journal[0]["body"], journal[1]["body"]
    assert sent["tool_choice"] == {
        "type": "tool",
        "name": "get_weather",
        "disable_parallel_tool_use": True,
    }
    assert sent["stop_sequences"] == ["END"] and sent["metadata"] == {"user_id": "u-1"}
    assert sent["system"][0] == {"type": "text", "text": "Be brief."}
    assert "JSON" in sent["system"][-1]["text"]  # json_object: an instruction
    assert sent["tools"][0]["input_schema"] == TOOL["function"]["parameters"]
    assert thinking["thinking"] == {"type": "enabled", "budget_tokens": 24576}  # within the cap
    assert thinking["max_tokens"] == 30000  # the client's cap holds the thinking too


async def test_responses_and_messages_clients_reach_anthropic_too(
    aimock: AIMock, on_aimock: Anthropic
) -> None:
    target = on_aimock.target("claude")
    ask = {"model": "m", "input": "hello there", "max_output_tokens": 64}
    req = responses_dialect.DIALECT.parse(orjson.dumps(ask), Limits())
    raw, usage = await on_aimock.dispatch.complete(target, req, 10.0)  # responses->chat->messages
    response = Response.model_validate_json(raw)
    assert response.output_text == "plain answer" and usage.prompt == 12
    native = {"model": "m", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}
    mreq = messages_dialect.DIALECT.parse(orjson.dumps(native), Limits())
    assert on_aimock.dispatch.legs(target, mreq) == ()  # Messages goes as it is
    raw, _ = await on_aimock.dispatch.complete(target, mreq, 10.0)
    assert Message.model_validate_json(raw).content[0].type == "text"
    journal = aimock.journal()
    assert [e["path"] for e in journal] == ["/v1/messages"] * 2
    assert journal[0]["body"]["max_tokens"] == 64
