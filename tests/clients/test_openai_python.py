"""openai-python (sync ``OpenAI`` and ``AsyncOpenAI``) against tollgate.

Headers come from ``with_raw_response`` (whole answers) and
``with_streaming_response`` (streams).
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import AsyncIterator, Iterator
from typing import Any, cast

import pytest
from openai import AsyncOpenAI, OpenAI
from openai.types.chat import (
    ChatCompletionMessageFunctionToolCall,
    ChatCompletionMessageParam,
    ChatCompletionToolUnionParam,
)

from tests.clients import (
    OPENAI_TOOL,
    TOOL_NAME,
    TOOL_PROMPT,
    check_headers,
    check_stream_cost,
    check_tool_args,
    check_usage,
    settle,
)

pytestmark = pytest.mark.integration

VERSION = importlib.metadata.version("openai")
TOOLS = [cast(ChatCompletionToolUnionParam, OPENAI_TOOL)]


@pytest.fixture(scope="module")
def client(api_base: str, api_key: str) -> Iterator[OpenAI]:
    with OpenAI(base_url=api_base, api_key=api_key, max_retries=0, timeout=20) as c:
        yield c


@pytest.fixture
async def aclient(api_base: str, api_key: str) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=api_base, api_key=api_key, max_retries=0, timeout=20) as c:
        yield c


def msgs(text: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": text}]


def who(case: str) -> str:
    return f"openai-python {VERSION} {case}"


# --- sync -------------------------------------------------------------------------------


def test_sync_completion_then_cache_hit(client: OpenAI) -> None:
    req: dict[str, Any] = {
        "model": "auto",
        "temperature": 0,
        "messages": msgs("openai-python sync: name three rivers in Europe."),
    }
    first = client.chat.completions.with_raw_response.create(**req)
    check_headers(first.headers, "miss", who=who("sync create"))
    done = first.parse()
    text = done.choices[0].message.content
    assert text, f"empty answer: {done}"
    assert done.usage is not None
    check_usage(done.usage.prompt_tokens, done.usage.completion_tokens, done.usage.total_tokens)
    settle()
    second = client.chat.completions.with_raw_response.create(**req)
    check_headers(second.headers, "hit", who=who("sync create repeat"))
    assert second.parse().choices[0].message.content == text


def test_sync_stream_with_usage_then_cache_hit(client: OpenAI) -> None:
    req: dict[str, Any] = {
        "model": "auto",
        "temperature": 0,
        "messages": msgs("openai-python sync stream: describe a lighthouse at dusk."),
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    texts = []
    for cache in ("miss", "hit"):
        with client.chat.completions.with_streaming_response.create(**req) as resp:
            check_headers(resp.headers, cache, streamed=True, who=who(f"sync stream {cache}"))
            chunks = list(resp.parse())
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text, "no content in the stream"
        last = chunks[-1]
        assert last.usage is not None, f"the last chunk has no usage: {last}"
        check_usage(last.usage.prompt_tokens, last.usage.completion_tokens)
        check_stream_cost((last.model_extra or {}).get("x_tollgate_cost_usd"), cache)
        texts.append(text)
        settle()
    assert texts[0] == texts[1]


def test_sync_tool_call(client: OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="auto", temperature=0, messages=msgs(TOOL_PROMPT), tools=TOOLS
    )
    check_headers(raw.headers, "miss", who=who("sync tools"))
    choice = raw.parse().choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert len(calls) == 1, f"tool calls: {calls}"
    call = calls[0]
    assert isinstance(call, ChatCompletionMessageFunctionToolCall), f"not a function call: {call}"
    assert call.function.name == TOOL_NAME
    assert call.id
    check_tool_args(call.function.arguments)


def test_sync_stream_tool_call(client: OpenAI) -> None:
    with client.chat.completions.with_streaming_response.create(
        model="auto",
        messages=msgs(TOOL_PROMPT + " (streamed)"),
        tools=TOOLS,
        stream=True,
        stream_options={"include_usage": True},
    ) as resp:
        check_headers(resp.headers, "bypass", streamed=True, who=who("sync stream tools"))
        chunks = list(resp.parse())
    name, args, finish = "", "", None
    for c in chunks:
        for ch in c.choices:
            for tc in ch.delta.tool_calls or ():
                assert tc.index == 0
                name += (tc.function.name or "") if tc.function else ""
                args += (tc.function.arguments or "") if tc.function else ""
            finish = ch.finish_reason or finish
    assert name == TOOL_NAME and finish == "tool_calls"
    check_tool_args(args)
    assert chunks[-1].usage is not None
    check_usage(chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens)


# --- async ------------------------------------------------------------------------------


async def test_async_completion_then_cache_hit(aclient: AsyncOpenAI) -> None:
    req: dict[str, Any] = {
        "model": "auto",
        "temperature": 0,
        "messages": msgs("openai-python async: name three mountains in Asia."),
    }
    first = await aclient.chat.completions.with_raw_response.create(**req)
    check_headers(first.headers, "miss", who=who("async create"))
    done = first.parse()
    text = done.choices[0].message.content
    assert text
    assert done.usage is not None
    check_usage(done.usage.prompt_tokens, done.usage.completion_tokens, done.usage.total_tokens)
    settle()
    second = await aclient.chat.completions.with_raw_response.create(**req)
    check_headers(second.headers, "hit", who=who("async create repeat"))
    assert second.parse().choices[0].message.content == text


async def test_async_stream_with_usage_then_cache_hit(aclient: AsyncOpenAI) -> None:
    req: dict[str, Any] = {
        "model": "auto",
        "temperature": 0,
        "messages": msgs("openai-python async stream: describe a harbour at dawn."),
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    texts = []
    for cache in ("miss", "hit"):
        async with aclient.chat.completions.with_streaming_response.create(**req) as resp:
            check_headers(resp.headers, cache, streamed=True, who=who(f"async stream {cache}"))
            chunks = [c async for c in await resp.parse()]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text
        last = chunks[-1]
        assert last.usage is not None, f"the last chunk has no usage: {last}"
        check_usage(last.usage.prompt_tokens, last.usage.completion_tokens)
        check_stream_cost((last.model_extra or {}).get("x_tollgate_cost_usd"), cache)
        texts.append(text)
        settle()
    assert texts[0] == texts[1]


async def test_async_tool_call(aclient: AsyncOpenAI) -> None:
    raw = await aclient.chat.completions.with_raw_response.create(
        model="auto", messages=msgs(TOOL_PROMPT + " (async)"), tools=TOOLS
    )
    check_headers(raw.headers, "bypass", who=who("async tools"))
    choice = raw.parse().choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert len(calls) == 1, f"tool calls: {calls}"
    call = calls[0]
    assert isinstance(call, ChatCompletionMessageFunctionToolCall), f"not a function call: {call}"
    assert call.function.name == TOOL_NAME
    check_tool_args(call.function.arguments)


async def test_async_stream_tool_call(aclient: AsyncOpenAI) -> None:
    async with aclient.chat.completions.with_streaming_response.create(
        model="auto",
        messages=msgs(TOOL_PROMPT + " (async, streamed)"),
        tools=TOOLS,
        stream=True,
        stream_options={"include_usage": True},
    ) as resp:
        check_headers(resp.headers, "bypass", streamed=True, who=who("async stream tools"))
        chunks = [c async for c in await resp.parse()]
    name, args = "", ""
    for c in chunks:
        for ch in c.choices:
            for tc in ch.delta.tool_calls or ():
                name += (tc.function.name or "") if tc.function else ""
                args += (tc.function.arguments or "") if tc.function else ""
    assert name == TOOL_NAME
    check_tool_args(args)
    assert chunks[-1].usage is not None
    check_usage(chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens)
