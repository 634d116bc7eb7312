"""The Anthropic adapter against llmock, a second independent mock (PyPI, serves Anthropic's
Messages under ``/anthropic``). Its journal keeps the raw body as sent, so it checks what
aimock's reading of the body cannot: ``thinking``, ``tool_choice``, ``stop_sequences``,
``metadata`` and the tool loop as Anthropic's blocks; and its scripted faults give the
retry path a 529 that none of us wrote.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from anthropic.types import Message

from tests.integration.vendor_rig import TOOL, WEATHER, Rig, assembled, request
from tests.upstream_mocks import LLMock, start_llmock
from tollgate_orchestrator.retry import SERVER, AttemptFailed
from tollgate_orchestrator.translate.chat_messages import TRANSLATION

pytestmark = pytest.mark.integration

PRICE = "input_per_mtok: 1.0, cached_input_per_mtok: 0.1, output_per_mtok: 5.0"


def policy_yaml(root: str) -> str:
    chain = '{"small": [claude], "medium": [claude], "large": [claude]}'
    routes = ", ".join(
        f"{i}: {chain}"
        for i in ("chat", "code", "math", "summarization", "extraction", "translation", "creative")
    )
    return f"""
version: llmock-anthropic
providers:
  anthropic: {{type: anthropic, base_url: "{root}/anthropic/v1", api_key_env: LM_ANTHROPIC_KEY}}
models:
  claude: {{provider: anthropic, upstream_model: claude-haiku-4-5, {PRICE}}}
routes: {{{routes}}}
default_model: claude
baseline_model: claude
"""


@pytest.fixture(scope="module")
def llmock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LLMock]:
    mock = start_llmock(tmp_path_factory.mktemp("llmock-anthropic"), "--tool-mode", "auto")
    try:
        yield mock
    finally:
        mock.stop()


@pytest.fixture
async def rig(llmock: LLMock, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Rig]:
    monkeypatch.setenv("LM_ANTHROPIC_KEY", "sk-ant-test")
    llmock.reset()
    r = Rig(policy_yaml(llmock.url))
    yield r
    await r.close()


def sent(llmock: LLMock) -> dict[str, Any]:
    (entry,) = llmock.requests()
    assert entry["path"] == "/anthropic/v1/messages"
    body: dict[str, Any] = entry["body"]
    return body


async def test_a_tool_loop_goes_as_anthropic_blocks_and_comes_back_as_tool_calls(
    rig: Rig, llmock: LLMock
) -> None:
    first = await rig.complete(
        "claude", tools=[TOOL], tool_choice="required", stop=["END"], user="u-7"
    )
    call = first["choices"][0]["message"]["tool_calls"][0]
    assert first["choices"][0]["finish_reason"] == "tool_calls"
    assert call["function"]["name"] == "get_weather"
    body = sent(llmock)
    assert body["tools"] == [
        {
            "name": "get_weather",
            "description": "The current weather in a city.",
            "input_schema": TOOL["function"]["parameters"],
        }
    ]
    assert body["tool_choice"] == {"type": "any"}
    assert body["stop_sequences"] == ["END"] and body["metadata"] == {"user_id": "u-7"}
    assert body["max_tokens"] == 4096  # Messages requires one; chat did not send it
    llmock.reset()
    loop = [
        {"role": "user", "content": WEATHER},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "18C and sunny"},
    ]
    done = await rig.complete("claude", messages=loop, tools=[TOOL])
    assert done["choices"][0]["finish_reason"] == "stop"
    turns = sent(llmock)["messages"]
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert turns[1]["content"][0]["type"] == "tool_use"
    assert turns[1]["content"][0]["id"] == call["id"]
    assert turns[2]["content"][0] == {
        "type": "tool_result",
        "tool_use_id": call["id"],
        "content": "18C and sunny",
    }


async def test_reasoning_effort_is_a_thinking_budget_inside_the_cap(
    rig: Rig, llmock: LLMock
) -> None:
    await rig.complete("claude", reasoning_effort="medium", max_tokens=12000, temperature=0.3)
    body = sent(llmock)
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 8192}
    assert body["max_tokens"] == 12000 and "temperature" not in body


async def test_llmock_answers_are_messages_and_streams_assemble(rig: Rig, llmock: LLMock) -> None:
    req = TRANSLATION.request(request(messages=[{"role": "user", "content": "hello"}]))
    raw, _ = await rig.upstreams.complete(rig.target("claude"), req, 10.0)
    Message.model_validate_json(raw)  # what anthropic-python reads
    chunks = await rig.stream("claude", messages=[{"role": "user", "content": "hello"}])
    text = assembled(chunks).choices[0].message.content
    assert text and chunks[-1]["usage"]["completion_tokens"] > 0


async def test_a_529_from_llmock_is_a_retryable_server_failure(rig: Rig, llmock: LLMock) -> None:
    llmock.script(
        {"type": "fail", "status": 529, "times": 1, "match": {"model": "claude-haiku-4-5"}}
    )
    with pytest.raises(AttemptFailed) as info:
        await rig.complete("claude")
    assert info.value.failure.error_class == SERVER and info.value.failure.retryable
