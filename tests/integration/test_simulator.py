"""The simulator as a real process, driven by the official openai SDK."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam

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
