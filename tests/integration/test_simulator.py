"""The simulator as a real process, driven by the official openai and anthropic SDKs;
raw bodies and stream events are also checked against OpenAI's OpenAPI document."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import httpx2
import openai
import orjson
import pytest
from anthropic import AsyncAnthropic
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam

from tests.contract.openai_contract import assert_valid
from tools.stack import Stack, base_env

pytestmark = pytest.mark.integration

USER: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Explain what an LLM gateway does."}
]
WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


# The simulator checks a key as a provider does; every test here sends this one.
KEY = "x"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """An instant simulator (latency_scale 0) shared by the module; reset per test."""
    stack = Stack(
        log_dir=tmp_path_factory.mktemp("sim"),
        sim_env={"TOLLGATE_SIM_LATENCY_SCALE": "0"},
        sim_key=KEY,
    )
    try:
        stack.start_sim()
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def slow_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A simulator with real latency (from a latency file) and a fixed model list."""
    tmp = tmp_path_factory.mktemp("slow_sim")
    lat = tmp / "latency.yaml"
    lat.write_text("'*': {fixed_ms: 10, per_token_ms: 100}\n")
    stack = Stack(
        log_dir=tmp,
        sim_key=KEY,
        sim_env={"TOLLGATE_SIM_LATENCY_FILE": str(lat), "TOLLGATE_SIM_MODELS": "slow-model,other"},
    )
    try:
        stack.start_sim()
        yield stack
    finally:
        stack.stop()


class Control:
    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session, self.url = session, url

    async def call(self, method: str, path: str, json: Any = None) -> Any:
        async with self.session.request(method, self.url + path, json=json) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()

    async def fault(self, **fault: Any) -> None:
        await self.call("POST", "/_sim/faults", fault)

    async def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("GET", "/_sim/stats")
        return result


@pytest.fixture
async def ctl(sim: Stack) -> AsyncIterator[Control]:
    async with aiohttp.ClientSession(headers=AUTH) as session:
        c = Control(session, sim.sim_url)
        await c.call("POST", "/_sim/reset")
        yield c


def client(stack: Stack, **kw: Any) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=f"{stack.sim_url}/v1", api_key=KEY, max_retries=0, **kw)


async def test_deterministic_answer_and_usage(sim: Stack, ctl: Control) -> None:
    async with client(sim) as c:
        a = await c.chat.completions.create(model="gpt-4o-mini", messages=USER)
        b = await c.chat.completions.create(model="gpt-4o-mini", messages=USER)
    assert a.object == "chat.completion" and a.id != b.id
    assert (
        a.choices[0].message.content
        and a.choices[0].message.content == b.choices[0].message.content
    )
    assert a.usage and b.usage and a.usage == b.usage
    assert a.usage.total_tokens == a.usage.prompt_tokens + a.usage.completion_tokens
    assert a.usage.prompt_tokens_details and a.usage.prompt_tokens_details.cached_tokens == 0
    assert a.choices[0].finish_reason == "stop" and a.model == "gpt-4o-mini"


async def test_usage_grows_with_prompt_and_reasoning_models_reason(
    sim: Stack, ctl: Control
) -> None:
    async with client(sim) as c:
        short = await c.chat.completions.create(
            model="gpt-4.1", messages=[{"role": "user", "content": "hi"}]
        )
        long = await c.chat.completions.create(
            model="gpt-4.1", messages=[{"role": "user", "content": "Summarise this. " * 200}]
        )
        reasoning = await c.chat.completions.create(
            model="o4-mini", messages=USER, max_completion_tokens=2000
        )
    assert short.usage and long.usage and long.usage.prompt_tokens > short.usage.prompt_tokens + 500
    assert reasoning.usage and reasoning.usage.completion_tokens_details
    assert reasoning.usage.completion_tokens_details.reasoning_tokens
    assert (
        reasoning.usage.completion_tokens_details.reasoning_tokens
        < reasoning.usage.completion_tokens
    )


async def test_max_tokens_truncates_with_length(sim: Stack, ctl: Control) -> None:
    async with client(sim) as c:
        r = await c.chat.completions.create(model="gpt-4o", messages=USER, max_tokens=3)
    assert r.choices[0].finish_reason == "length" and r.usage and r.usage.completion_tokens == 3


async def test_stream_chunks_and_final_usage(sim: Stack, ctl: Control) -> None:
    async with client(sim) as c:
        plain = await c.chat.completions.create(model="gpt-4o-mini", messages=USER)
        stream = await c.chat.completions.create(
            model="gpt-4o-mini",
            messages=USER,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
        no_usage = await c.chat.completions.create(model="gpt-4o-mini", messages=USER, stream=True)
        chunks2 = [chunk async for chunk in no_usage]
    assert len(chunks) > 5 and all(ch.object == "chat.completion.chunk" for ch in chunks)
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == plain.choices[0].message.content
    assert chunks[-1].choices == [] and chunks[-1].usage == plain.usage
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert (
        all(ch.usage is None for ch in chunks2) and chunks2[-1].choices[0].finish_reason == "stop"
    )


async def test_429_with_retry_after_then_success(sim: Stack, ctl: Control) -> None:
    await ctl.fault(model="gpt-4o", status=429, count=2, retry_after=3)
    async with client(sim) as c:
        for _ in range(2):
            with pytest.raises(openai.RateLimitError) as err:
                await c.chat.completions.create(model="gpt-4o", messages=USER)
            assert err.value.response.headers["retry-after"] == "3"
            assert err.value.code == "rate_limit_exceeded"
        # Another model is not affected; the third call to gpt-4o succeeds.
        await c.chat.completions.create(model="gpt-4o-mini", messages=USER)
        ok = await c.chat.completions.create(model="gpt-4o", messages=USER)
    assert ok.choices[0].message.content
    stats = await ctl.stats()
    assert stats["calls"] == {"gpt-4o": 3, "gpt-4o-mini": 1} and stats["total"] == 4
    assert stats["faults_injected"] == 2 and stats["pending_faults"] == []


async def test_sdk_retries_honour_retry_after(sim: Stack, ctl: Control) -> None:
    await ctl.fault(model="*", status=429, retry_after=0.1)
    async with AsyncOpenAI(base_url=f"{sim.sim_url}/v1", api_key=KEY, max_retries=1) as c:
        ok = await asyncio.wait_for(
            c.chat.completions.create(model="gpt-4o", messages=USER),
            timeout=30,
        )
    assert ok.choices[0].message.content and (await ctl.stats())["calls"]["gpt-4o"] == 2


async def test_queued_star_and_5xx_faults(sim: Stack, ctl: Control) -> None:
    await ctl.call(
        "POST", "/_sim/faults", [{"model": "*", "status": 500}, {"model": "a", "status": 503}]
    )
    async with client(sim) as c:
        with pytest.raises(openai.InternalServerError) as e500:
            await c.chat.completions.create(model="b", messages=USER)
        with pytest.raises(openai.InternalServerError) as e503:
            await c.chat.completions.create(model="a", messages=USER)
        await c.chat.completions.create(model="a", messages=USER)
    assert e500.value.status_code == 500 and e503.value.status_code == 503
    assert isinstance(e503.value.body, dict) and e503.value.body["type"] == "server_error"


async def test_clearing_faults(sim: Stack, ctl: Control) -> None:
    await ctl.fault(model="*", status=500, count=100)
    assert len((await ctl.call("GET", "/_sim/faults"))["pending_faults"]) == 1
    await ctl.call("DELETE", "/_sim/faults")
    async with client(sim) as c:
        await c.chat.completions.create(model="gpt-4o", messages=USER)
    await ctl.fault(model="*", status=500)
    await ctl.call("POST", "/_sim/reset")
    stats = await ctl.stats()
    assert stats == {
        "calls": {},
        "apis": {},
        "total": 0,
        "faults_injected": 0,
        "stream_disconnects": 0,
        "pending_faults": [],
    }


async def test_bad_fault_is_rejected(sim: Stack, ctl: Control) -> None:
    async with ctl.session.post(f"{sim.sim_url}/_sim/faults", json={"status": 700}) as resp:
        assert resp.status == 400
        assert "status" in (await resp.json())["error"]["message"]


async def test_mid_stream_error_breaks_after_first_chunk(sim: Stack, ctl: Control) -> None:
    await ctl.fault(model="gpt-4o", mid_stream_error=True)
    got = []
    async with client(sim) as c:
        stream = await c.chat.completions.create(model="gpt-4o", messages=USER, stream=True)
        with pytest.raises(openai.APIConnectionError):
            async for chunk in stream:
                got.append(chunk)
        assert len(got) == 1 and got[0].choices[0].delta.content
        # A plain request under the same fault gets a truncated body.
        await ctl.fault(model="gpt-4o", mid_stream_error=True)
        with pytest.raises(openai.APIConnectionError):
            await c.chat.completions.create(model="gpt-4o", messages=USER)
        # The fault is spent: the next stream completes.
        stream = await c.chat.completions.create(model="gpt-4o", messages=USER, stream=True)
        assert [ch async for ch in stream][-1].choices[0].finish_reason == "stop"


async def test_slow_success_fault_trips_client_timeout(sim: Stack, ctl: Control) -> None:
    await ctl.fault(model="gpt-4o", status=200, delay_ms=3000)
    async with client(sim, timeout=0.3) as c:
        with pytest.raises(openai.APITimeoutError):
            await c.chat.completions.create(model="gpt-4o", messages=USER)
        ok = await c.chat.completions.create(model="gpt-4o", messages=USER)
    assert ok.choices[0].message.content


async def test_malformed_requests_get_openai_400(sim: Stack, ctl: Control) -> None:
    url = f"{sim.sim_url}/v1/chat/completions"
    async with ctl.session.post(
        url, data=b'{"model": "x", "messages": [', headers={"content-type": "application/json"}
    ) as resp:
        assert resp.status == 400
        err = (await resp.json())["error"]
        assert (
            set(err) == {"message", "type", "param", "code"}
            and err["type"] == "invalid_request_error"
        )
    async with ctl.session.post(url, json={"model": "x"}) as resp:
        assert resp.status == 400 and (await resp.json())["error"]["param"] == "messages"
    async with client(sim) as c:
        with pytest.raises(openai.BadRequestError) as err400:
            await c.chat.completions.create(model="x", messages=[])
    assert err400.value.param == "messages"
    async with ctl.session.get(f"{sim.sim_url}/v1/nope") as resp:
        assert resp.status == 404


async def test_tool_calls(sim: Stack, ctl: Control) -> None:
    messages: Any = [{"role": "user", "content": "What is the weather in Paris? Call get_weather."}]
    async with client(sim) as c:
        r = await c.chat.completions.create(
            model="gpt-4.1", messages=messages, tools=[WEATHER_TOOL]
        )
        stream = await c.chat.completions.create(
            model="gpt-4.1", messages=messages, tools=[WEATHER_TOOL], stream=True
        )
        chunks = [ch async for ch in stream]
        plain = await c.chat.completions.create(
            model="gpt-4.1",
            messages=[{"role": "user", "content": "Tell me a joke"}],
            tools=[WEATHER_TOOL],
        )
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    call: Any = choice.message.tool_calls[0]
    assert (
        call.type == "function"
        and call.function.name == "get_weather"
        and call.id.startswith("call_")
    )
    assert "city" in call.function.arguments
    deltas: Any = [d for ch in chunks if ch.choices for d in ch.choices[0].delta.tool_calls or []]
    assert deltas[0].id == call.id and deltas[0].function.name == "get_weather"
    assert "".join(d.function.arguments or "" for d in deltas) == call.function.arguments
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert plain.choices[0].finish_reason == "stop" and not plain.choices[0].message.tool_calls


async def test_models_lists_catalog_and_seen(sim: Stack, ctl: Control) -> None:
    async with client(sim) as c:
        await c.chat.completions.create(model="my-local-llama", messages=USER)
        ids = [m.id async for m in c.models.list()]
        got = await c.models.retrieve("gpt-4o-mini")
    assert {"gpt-4o-mini", "o3", "gpt-5", "my-local-llama"} <= set(ids)
    assert got.id == "gpt-4o-mini"


async def test_configured_model_list_rejects_unknown_models(slow_sim: Stack) -> None:
    async with client(slow_sim) as c:
        assert sorted([m.id async for m in c.models.list()]) == ["other", "slow-model"]
        with pytest.raises(openai.NotFoundError) as err:
            await c.chat.completions.create(model="gpt-4o", messages=USER)
    assert err.value.code == "model_not_found" and err.value.param == "model"


async def test_stream_is_written_incrementally_and_client_disconnect_is_seen(
    slow_sim: Stack,
) -> None:
    """100 ms per token: the first chunks arrive while the rest is still being produced,
    and leaving early stops the generation (the simulator counts the disconnect)."""
    async with aiohttp.ClientSession(headers=AUTH) as session:
        ctl = Control(session, slow_sim.sim_url)
        await ctl.call("POST", "/_sim/reset")
        async with client(slow_sim) as c:
            stream = await c.chat.completions.create(model="slow-model", messages=USER, stream=True)
            got = []
            async for chunk in stream:
                got.append(chunk)
                if len(got) == 2:
                    break
            await stream.close()
        assert got[0].choices[0].delta.role == "assistant"
        for _ in range(100):  # does not hang: bounded poll
            if (await ctl.stats())["stream_disconnects"] == 1:
                break
            await asyncio.sleep(0.05)
        assert (await ctl.stats())["stream_disconnects"] == 1


def test_bad_setting_exits_2_naming_the_env_var(tmp_path: Path) -> None:
    env = base_env({"TOLLGATE_SIM_LATENCY_SCALE": "-1", "TOLLGATE_SIM_PORT": "1"})
    proc = subprocess.run(
        [sys.executable, "-m", "tollgate_simulator"],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2 and b"TOLLGATE_SIM_LATENCY_SCALE" in proc.stderr


async def test_a_wrong_or_missing_key_is_refused_as_a_provider_does(sim: Stack) -> None:
    url = f"{sim.sim_url}/v1/chat/completions"
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as session:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            async with session.post(url, json=body, headers=headers) as resp:
                assert resp.status == 401
                assert (await resp.json())["error"]["code"] == "invalid_api_key"
        async with session.get(f"{sim.sim_url}/healthz") as resp:
            assert resp.status == 200  # probes and /_sim controls need no key


# --- Responses, Embeddings, Messages ------------------------------------------------------

RESPONSES_TOOL: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city",
    "parameters": WEATHER_TOOL["function"]["parameters"],
    "strict": True,
}
ANTHROPIC_TOOL: Any = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": WEATHER_TOOL["function"]["parameters"],
}
ASK = "Explain what an LLM gateway does."


def claude(stack: Stack, **kw: Any) -> AsyncAnthropic:
    return AsyncAnthropic(base_url=stack.sim_url, api_key=KEY, max_retries=0, **kw)


async def sse(resp: aiohttp.ClientResponse) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) of every event of a named-event SSE stream."""
    assert resp.status == 200, await resp.text()
    out = []
    for block in (await resp.text()).split("\n\n"):
        if not block.strip():
            continue
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        out.append((lines["event"], orjson.loads(lines["data"])))
    return out


async def test_responses_create_and_stream_with_the_sdk(sim: Stack, ctl: Control) -> None:
    async with client(sim) as c:
        plain = await c.responses.create(model="gpt-4.1", input=ASK)
        async with c.responses.stream(model="gpt-4.1", input=ASK) as stream:
            kinds = [event.type async for event in stream]
            final = await stream.get_final_response()
        # Codex's shape: stateless, hosted tools beside function tools, encrypted reasoning.
        codex = await c.responses.create(
            model="gpt-5",
            input=[{"role": "user", "content": "Call get_weather for Lima."}],
            tools=[RESPONSES_TOOL, {"type": "web_search"}],
            store=False,
            include=["reasoning.encrypted_content"],
            reasoning={"effort": "low"},
        )
    assert plain.status == "completed" and plain.output_text and plain.usage
    assert final.output_text == plain.output_text and final.usage == plain.usage
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "[DONE]" not in kinds and kinds.count("response.output_text.delta") > 5
    reasoning, call = codex.output
    assert reasoning.type == "reasoning" and reasoning.encrypted_content
    assert call.type == "function_call" and call.name == "get_weather"
    assert codex.usage and codex.usage.output_tokens_details.reasoning_tokens > 0
    stats = await ctl.stats()
    assert stats["apis"] == {"responses": 3} and stats["calls"] == {"gpt-4.1": 2, "gpt-5": 1}


async def test_responses_raw_answer_and_every_event_match_openais_schema(
    sim: Stack, ctl: Control
) -> None:
    url = f"{sim.sim_url}/v1/responses"
    body = {"model": "o4-mini", "input": "Call get_weather for Oslo.", "tools": [RESPONSES_TOOL]}
    extras: list[dict[str, Any]] = [{}, {"tools": []}]  # with and without a tool call
    for extra in extras:
        async with ctl.session.post(url, json={**body, **extra}) as resp:
            assert resp.status == 200
            assert_valid("Response", await resp.json())
        async with ctl.session.post(url, json={**body, **extra, "stream": True}) as resp:
            events = await sse(resp)
        for name, data in events:
            assert name == data["type"]
            assert_valid("ResponseStreamEvent", data)
        assert [d["sequence_number"] for _, d in events] == list(range(len(events)))


async def test_embeddings_with_the_sdk_float_and_base64(sim: Stack, ctl: Control) -> None:
    texts = ["first document", "second document"]
    async with client(sim) as c:
        # The SDK asks for base64 by default and decodes it: the same floats must come out.
        default = await c.embeddings.create(model="text-embedding-3-small", input=texts)
        floats = await c.embeddings.create(
            model="text-embedding-3-small", input=texts, encoding_format="float"
        )
        short = await c.embeddings.create(model="text-embedding-3-large", input="x", dimensions=256)
    assert [d.embedding for d in default.data] == [d.embedding for d in floats.data]
    assert len(floats.data[0].embedding) == 1536 and len(short.data[0].embedding) == 256
    assert floats.usage.prompt_tokens == floats.usage.total_tokens == 4 + 4
    async with ctl.session.post(
        f"{sim.sim_url}/v1/embeddings", json={"model": "text-embedding-3-small", "input": texts}
    ) as resp:
        assert_valid("CreateEmbeddingResponse", await resp.json())
    async with client(sim) as c:
        with pytest.raises(openai.BadRequestError) as err:
            await c.embeddings.create(model="text-embedding-3-small", input="")
    assert err.value.param == "input"


async def test_messages_create_and_stream_with_the_anthropic_sdk(sim: Stack, ctl: Control) -> None:
    turn: Any = [{"role": "user", "content": "Call get_weather for Oslo."}]
    async with claude(sim) as c:
        plain = await c.messages.create(
            model="claude-sonnet-4-5", max_tokens=512, messages=[{"role": "user", "content": ASK}]
        )
        async with c.messages.stream(
            model="claude-sonnet-4-5", max_tokens=512, messages=[{"role": "user", "content": ASK}]
        ) as stream:
            text = "".join([t async for t in stream.text_stream])
            streamed = await stream.get_final_message()
        tool = await c.messages.create(
            model="claude-sonnet-4-5", max_tokens=512, messages=turn, tools=[ANTHROPIC_TOOL]
        )
        async with c.messages.stream(
            model="claude-sonnet-4-5", max_tokens=512, messages=turn, tools=[ANTHROPIC_TOOL]
        ) as stream:
            tool_streamed = await stream.get_final_message()
    assert plain.stop_reason == "end_turn" and plain.content[0].type == "text"
    assert text == plain.content[0].text
    assert [b.model_dump(exclude={"parsed_output"}) for b in streamed.content] == [
        b.model_dump() for b in plain.content
    ]
    assert streamed.usage.output_tokens == plain.usage.output_tokens
    assert streamed.usage.input_tokens == plain.usage.input_tokens
    assert tool.stop_reason == "tool_use" and tool_streamed.stop_reason == "tool_use"
    assert tool.content[0].type == "tool_use" and tool_streamed.content[0].type == "tool_use"
    assert tool_streamed.content[0].input == tool.content[0].input
    assert tool_streamed.content[0].id == tool.content[0].id
    assert tool.content[0].name == "get_weather" and "city" in tool.content[0].input
    assert (await ctl.stats())["apis"] == {"messages": 4}


async def test_messages_prompt_caching_usage(sim: Stack, ctl: Control) -> None:
    system: Any = [
        {"type": "text", "text": "House rules. " * 600, "cache_control": {"type": "ephemeral"}}
    ]
    async with claude(sim) as c:
        msg = await c.messages.create(
            model="claude-sonnet-4-5",
            max_tokens=64,
            system=system,
            messages=[{"role": "user", "content": ASK}],
        )
        counted = await c.messages.count_tokens(
            model="claude-sonnet-4-5", system=system, messages=[{"role": "user", "content": ASK}]
        )
    u = msg.usage
    assert u.cache_read_input_tokens and u.cache_read_input_tokens >= 1024
    assert u.input_tokens + u.cache_read_input_tokens == counted.input_tokens


async def test_messages_auth_version_and_errors_in_anthropics_shape(sim: Stack) -> None:
    url = f"{sim.sim_url}/v1/messages"
    body = {
        "model": "claude-haiku-4-5",
        "max_tokens": 8,
        "messages": [{"role": "user", "content": "hi"}],
    }
    version = {"anthropic-version": "2023-06-01"}
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json=body, headers={**version, "x-api-key": KEY}) as resp:
            assert resp.status == 200 and resp.headers["request-id"].startswith("req_")
            assert (await resp.json())["type"] == "message"
        for auth in ({"x-api-key": "wrong"}, {}):
            async with session.post(url, json=body, headers={**version, **auth}) as resp:
                assert resp.status == 401
                assert await resp.json() == {
                    "type": "error",
                    "error": {"type": "authentication_error", "message": "invalid x-api-key"},
                }
        async with session.post(url, json=body, headers={"x-api-key": KEY}) as resp:
            assert (
                resp.status == 400
                and "anthropic-version" in (await resp.json())["error"]["message"]
            )
    robot: Any = [{"role": "robot", "content": "x"}]
    async with claude(sim) as c:
        with pytest.raises(anthropic.BadRequestError) as err:
            await c.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=robot)
    assert isinstance(err.value.body, dict) and err.value.body["type"] == "error"
    assert err.value.body["error"]["type"] == "invalid_request_error"
    assert err.value.body["error"]["message"].startswith("messages.0.role")


async def test_status_faults_answer_in_each_apis_error_shape(sim: Stack, ctl: Control) -> None:
    await ctl.call(
        "POST",
        "/_sim/faults",
        [
            {"model": "claude-haiku-4-5", "status": 429, "retry_after": 2},
            {"model": "claude-haiku-4-5", "status": 529},
            {"model": "gpt-4.1", "status": 503},
            {"model": "text-embedding-3-small", "status": 500},
        ],
    )
    async with claude(sim) as c:
        with pytest.raises(anthropic.RateLimitError) as limited:
            await c.messages.create(
                model="claude-haiku-4-5", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
            )
        with pytest.raises(anthropic.InternalServerError) as overloaded:
            await c.messages.create(
                model="claude-haiku-4-5", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
            )
    assert limited.value.response.headers["retry-after"] == "2"
    assert limited.value.body == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "Rate limit reached (simulated)."},
    }
    assert overloaded.value.status_code == 529
    assert isinstance(overloaded.value.body, dict)
    assert overloaded.value.body["error"]["type"] == "overloaded_error"
    async with client(sim) as c:
        with pytest.raises(openai.InternalServerError) as unavailable:
            await c.responses.create(model="gpt-4.1", input="hi")
        with pytest.raises(openai.InternalServerError) as broken:
            await c.embeddings.create(model="text-embedding-3-small", input="hi")
    assert unavailable.value.status_code == 503 and unavailable.value.code == "service_unavailable"
    assert broken.value.status_code == 500 and isinstance(broken.value.body, dict)
    assert broken.value.body["type"] == "server_error"
    stats = await ctl.stats()
    assert stats["faults_injected"] == 4 and stats["pending_faults"] == []


async def test_mid_stream_faults_break_after_content_started(sim: Stack, ctl: Control) -> None:
    await ctl.fault(model="gpt-4.1", mid_stream_error=True, after_chunks=2)
    await ctl.fault(model="claude-haiku-4-5", mid_stream_error=True)
    async with client(sim) as c:
        stream = await c.responses.create(model="gpt-4.1", input=ASK, stream=True)
        got = []
        with pytest.raises(openai.APIConnectionError):
            async for event in stream:
                got.append(event.type)
    # The opening events, then exactly two deltas, and never the end.
    assert got[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert got[4:] == ["response.output_text.delta"] * 2
    seen = []
    async with claude(sim) as c:
        # The anthropic SDK lets the transport's error through from a stream's body.
        with pytest.raises((anthropic.APIConnectionError, httpx2.TransportError)):
            async with c.messages.stream(
                model="claude-haiku-4-5", max_tokens=64, messages=[{"role": "user", "content": ASK}]
            ) as mstream:
                async for mevent in mstream:
                    seen.append(mevent.type)
    assert "message_start" in seen and "message_stop" not in seen
    assert seen.count("text") == 1  # the helper's event per text delta
    # A plain embeddings call under the same kind of fault gets half a body.
    await ctl.fault(model="text-embedding-3-small", mid_stream_error=True)
    async with client(sim) as c:
        with pytest.raises(openai.APIConnectionError):
            await c.embeddings.create(model="text-embedding-3-small", input="hi")


async def test_journal_records_what_reached_each_api_without_credentials(
    sim: Stack, ctl: Control
) -> None:
    async with client(sim) as c:
        await c.responses.create(
            model="gpt-4.1", input="hi", previous_response_id="resp_earlier", store=True
        )
        await c.embeddings.create(model="text-embedding-3-small", input="hi")
    async with claude(sim) as c:
        await c.messages.create(
            model="claude-haiku-4-5",
            max_tokens=8,
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"anthropic-beta": "prompt-caching-2024-07-31"},
        )
    entries = (await ctl.call("GET", "/_sim/requests"))["requests"]
    assert [(e["api"], e["path"], e["model"]) for e in entries] == [
        ("responses", "/v1/responses", "gpt-4.1"),
        ("embeddings", "/v1/embeddings", "text-embedding-3-small"),
        ("messages", "/v1/messages", "claude-haiku-4-5"),
    ]
    assert entries[0]["body"]["previous_response_id"] == "resp_earlier"
    assert entries[2]["headers"]["anthropic-beta"] == "prompt-caching-2024-07-31"
    assert all("authorization" not in e["headers"] for e in entries)
    await ctl.call("POST", "/_sim/reset")
    assert (await ctl.call("GET", "/_sim/requests"))["requests"] == []
