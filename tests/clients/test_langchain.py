"""LangChain ``ChatOpenAI`` (langchain-openai) against tollgate.

``stream_usage=True`` is set: behind a custom base URL LangChain leaves it off, and a
stream then carries no usage. Headers are reachable with ``include_response_headers=True``:
``response_metadata["headers"]`` on an invoke's message and on a stream's first chunk.
"""

from __future__ import annotations

import importlib.metadata
from typing import Any

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_openai import ChatOpenAI

from tests.clients import (
    OPENAI_TOOL,
    TOOL_NAME,
    TOOL_PROMPT,
    check_headers,
    check_tool_args,
    check_usage,
    settle,
)

pytestmark = pytest.mark.integration

VERSIONS = {p: importlib.metadata.version(p) for p in ("langchain-openai", "langchain-core")}


def who(case: str) -> str:
    return f"langchain-openai {VERSIONS['langchain-openai']} {case}"


def chat(api_base: str, api_key: str, **kwargs: Any) -> ChatOpenAI:
    return ChatOpenAI(
        model="auto",
        base_url=api_base,
        api_key=api_key,  # type: ignore[arg-type]
        stream_usage=True,
        include_response_headers=True,
        max_retries=0,
        timeout=20,
        **kwargs,
    )


def headers_of(msg: AIMessage | AIMessageChunk) -> dict[str, str]:
    headers = msg.response_metadata.get("headers")
    assert isinstance(headers, dict), (
        f"no headers in response_metadata: {sorted(msg.response_metadata)}"
    )
    return headers


def test_invoke_then_cache_hit(api_base: str, api_key: str) -> None:
    llm = chat(api_base, api_key, temperature=0)
    prompt = "langchain invoke: name three lakes in Africa."
    first = llm.invoke(prompt)
    assert isinstance(first.content, str) and first.content
    check_headers(headers_of(first), "miss", who=who("invoke"))
    assert first.usage_metadata is not None
    u = first.usage_metadata
    check_usage(u["input_tokens"], u["output_tokens"], u["total_tokens"])
    assert first.response_metadata.get("model_name") == headers_of(first)["x-tollgate-model"]
    settle()
    second = llm.invoke(prompt)
    check_headers(headers_of(second), "hit", who=who("invoke repeat"))
    assert second.content == first.content


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_stream_usage_on_last_chunk_then_cache_hit(
    api_base: str, api_key: str, mode: str
) -> None:
    llm = chat(api_base, api_key, temperature=0)
    prompt = f"langchain {mode} stream: describe a desert at noon."
    texts = []
    for cache in ("miss", "hit"):
        if mode == "sync":
            chunks = list(llm.stream(prompt))
        else:
            chunks = [c async for c in llm.astream(prompt)]
        assert chunks and all(isinstance(c, AIMessageChunk) for c in chunks)
        text = "".join(c.content for c in chunks if isinstance(c.content, str))
        assert text, "no content in the stream"
        # langchain-core 1.x ends every stream with an empty chunk_position="last" marker;
        # the usage chunk is the last one before it, and the sum carries it too.
        *data, marker = chunks
        assert marker.chunk_position == "last" and not marker.content
        assert data[-1].usage_metadata is not None, f"no usage_metadata: {data[-1]!r}"
        u = data[-1].usage_metadata
        check_usage(u["input_tokens"], u["output_tokens"], u["total_tokens"])
        total = sum(chunks[1:], chunks[0])
        assert total.usage_metadata == u
        check_headers(headers_of(chunks[0]), cache, streamed=True, who=who(f"{mode} stream"))
        texts.append(text)
        settle()
    assert texts[0] == texts[1]


def test_bind_tools_invoke(api_base: str, api_key: str) -> None:
    llm = chat(api_base, api_key).bind_tools([OPENAI_TOOL])
    msg = llm.invoke(TOOL_PROMPT + " (langchain)")
    assert isinstance(msg, AIMessage)
    assert len(msg.tool_calls) == 1, (
        f"tool calls: {msg.tool_calls}, invalid: {msg.invalid_tool_calls}"
    )
    call = msg.tool_calls[0]
    assert call["name"] == TOOL_NAME and call["id"]
    check_tool_args(call["args"])
    check_headers(headers_of(msg), "bypass", who=who("bind_tools invoke"))
    assert msg.response_metadata.get("finish_reason") == "tool_calls"


def test_bind_tools_stream(api_base: str, api_key: str) -> None:
    llm = chat(api_base, api_key).bind_tools([OPENAI_TOOL])
    chunks = list(llm.stream(TOOL_PROMPT + " (langchain, streamed)"))
    assert chunks
    total = sum(chunks[1:], chunks[0])
    assert isinstance(total, AIMessageChunk)
    assert len(total.tool_calls) == 1, (
        f"tool calls: {total.tool_calls}, invalid: {total.invalid_tool_calls}"
    )
    assert total.tool_calls[0]["name"] == TOOL_NAME
    check_tool_args(total.tool_calls[0]["args"])
    assert total.usage_metadata is not None
    check_usage(total.usage_metadata["input_tokens"], total.usage_metadata["output_tokens"])
    check_headers(headers_of(chunks[0]), "bypass", streamed=True, who=who("bind_tools stream"))
