"""anthropic-python against tollgate's ``/v1/messages``, served by the simulator's chat
endpoint through the Messages → Chat Completions translation.

Headers come from ``with_raw_response`` (whole answers) and the stream's response; the
cost of a stream is ``x_tollgate_cost_usd`` on its ``message_delta`` event.
"""

from __future__ import annotations

import importlib.metadata
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any, cast

import anthropic
import httpx2
import pytest
from anthropic import Anthropic
from anthropic.types import MessageParam, TextBlock, ToolParam, ToolUseBlock
from prometheus_client.parser import text_string_to_metric_families

from tests.clients import (
    TOOL_DESCRIPTION,
    TOOL_NAME,
    TOOL_PARAMETERS,
    TOOL_PROMPT,
    check_headers,
    check_stream_cost,
    check_tool_args,
    settle,
)
from tools.stack import DEV_KEY, Stack

pytestmark = pytest.mark.integration

VERSION = importlib.metadata.version("anthropic")
TOOLS = [
    cast(
        ToolParam,
        {"name": TOOL_NAME, "description": TOOL_DESCRIPTION, "input_schema": TOOL_PARAMETERS},
    )
]
COST = "x_tollgate_cost_usd"


@pytest.fixture(scope="module")
def client(stack: Stack) -> Iterator[Anthropic]:
    # The SDK appends /v1/messages itself.
    with Anthropic(base_url=stack.base_url, api_key=DEV_KEY, max_retries=0, timeout=20) as c:
        yield c


def user(text: str) -> list[MessageParam]:
    return [{"role": "user", "content": text}]


def who(case: str) -> str:
    return f"anthropic-python {VERSION} {case}"


def text_of(content: Any) -> str:
    return "".join(b.text for b in content if isinstance(b, TextBlock))


def tokens(stack: Stack, **match: str) -> float:
    """``tollgate_llm_tokens_total`` on the orchestrator's metrics, summed over ``match``."""
    with urllib.request.urlopen(stack.orchestrator_metrics_url, timeout=5) as resp:
        text = resp.read().decode()
    return sum(
        s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == "tollgate_llm_tokens_total"
        and all(s.labels.get(k) == v for k, v in match.items())
    )


def test_create_then_cache_hit_with_cost_and_tokens(client: Anthropic, stack: Stack) -> None:
    before = tokens(stack, api="messages", type="prompt")
    req: dict[str, Any] = {
        "model": "auto",
        "max_tokens": 200,
        # Cacheable: temperature 0 (anthropic-python 2.15 has no argument for it any more).
        "extra_body": {"temperature": 0},
        "messages": user(f"anthropic-python: name three rivers in Europe ({uuid.uuid4().hex})."),
    }
    first = client.messages.with_raw_response.create(**req)
    cost = check_headers(first.headers, "miss", who=who("create"))
    assert cost is not None and cost > 0
    done = first.parse()
    assert done.type == "message" and done.role == "assistant"
    assert done.id.startswith("msg_")
    text = text_of(done.content)
    assert text, f"empty answer: {done}"
    assert done.stop_reason == "end_turn"
    assert done.usage.input_tokens > 0 and done.usage.output_tokens > 0
    assert tokens(stack, api="messages", type="prompt") >= before + done.usage.input_tokens
    settle()
    second = client.messages.with_raw_response.create(**req)
    check_headers(second.headers, "hit", who=who("create repeat"))
    assert text_of(second.parse().content) == text


def test_stream_then_cache_hit(client: Anthropic) -> None:
    req: dict[str, Any] = {
        "model": "auto",
        "max_tokens": 200,
        "extra_body": {"temperature": 0},
        "messages": user(f"anthropic-python stream: describe a lighthouse ({uuid.uuid4().hex})."),
    }
    texts = []
    for cache in ("miss", "hit"):
        with client.messages.stream(**req) as stream:
            check_headers(stream.response.headers, cache, streamed=True, who=who(f"stream {cache}"))
            costs = []
            for event in stream:
                if event.type == "message_delta":
                    costs.append((event.model_extra or {}).get(COST))
            text = stream.get_final_text()
            final = stream.get_final_message()
        assert text and text == text_of(final.content)
        assert final.stop_reason == "end_turn"
        # The real counts, never the zeros a translated message_start carries (LiteLLM #24176).
        assert final.usage.input_tokens > 0 and final.usage.output_tokens > 0
        assert len(costs) == 1, f"message_delta events: {costs}"
        check_stream_cost(costs[0], cache, who=who(f"stream {cache}"))
        texts.append(text)
        settle()
    assert texts[0] == texts[1]


def test_tool_use_then_tool_result(client: Anthropic) -> None:
    raw = client.messages.with_raw_response.create(
        model="auto", max_tokens=300, messages=user(TOOL_PROMPT), tools=TOOLS
    )
    check_headers(raw.headers, "bypass", who=who("tools"))
    first = raw.parse()
    assert first.stop_reason == "tool_use"
    calls = [b for b in first.content if isinstance(b, ToolUseBlock)]
    assert len(calls) == 1, f"content: {first.content}"
    call = calls[0]
    assert call.name == TOOL_NAME and call.id
    check_tool_args(call.input, who=who("tool input"))
    second = client.messages.create(
        model="auto",
        max_tokens=300,
        tools=TOOLS,
        messages=[
            *user(TOOL_PROMPT),
            {"role": "assistant", "content": first.content},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "21 C"}],
            },
        ],
    )
    assert second.stop_reason == "end_turn", second
    assert text_of(second.content)


def test_stream_tool_use(client: Anthropic) -> None:
    with client.messages.stream(
        model="auto", max_tokens=300, messages=user(TOOL_PROMPT + " (streamed)"), tools=TOOLS
    ) as stream:
        check_headers(stream.response.headers, "bypass", streamed=True, who=who("stream tools"))
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert "input_json" in kinds, kinds  # the SDK's event for input_json_delta
    assert final.stop_reason == "tool_use"
    calls = [b for b in final.content if isinstance(b, ToolUseBlock)]
    assert len(calls) == 1 and calls[0].name == TOOL_NAME
    check_tool_args(calls[0].input, who=who("streamed tool input"))
    assert final.usage.input_tokens > 0 and final.usage.output_tokens > 0


def test_count_tokens(client: Anthropic) -> None:
    plain = client.messages.count_tokens(model="auto", messages=user(TOOL_PROMPT))
    with_tools = client.messages.count_tokens(model="auto", messages=user(TOOL_PROMPT), tools=TOOLS)
    assert plain.input_tokens > 0
    assert with_tools.input_tokens > plain.input_tokens


def test_x_api_key_is_accepted_too(stack: Stack) -> None:
    headers = {"x-api-key": DEV_KEY, "anthropic-version": "2023-06-01"}
    with Anthropic(
        base_url=stack.base_url, api_key=None, default_headers=headers, max_retries=0, timeout=20
    ) as c:
        done = c.messages.create(model="auto", max_tokens=50, messages=user("Say hello."))
    assert text_of(done.content)
    # And as Claude Code sends it, with no Authorization header at all.
    r = httpx2.post(
        stack.base_url + "/v1/messages",
        headers=headers,
        json={"model": "auto", "max_tokens": 50, "messages": user("Say hello.")},
        timeout=20,
    )
    assert r.status_code == 200, r.text
    assert r.json()["type"] == "message"


def test_a_bad_key_is_an_authentication_error(stack: Stack) -> None:
    for kwargs in (
        {"api_key": "sk-wrong"},
        {"api_key": None, "default_headers": {"x-api-key": "sk-wrong"}},
    ):
        c = Anthropic(base_url=stack.base_url, max_retries=0, timeout=20, **kwargs)
        with c, pytest.raises(anthropic.AuthenticationError) as info:
            c.messages.create(model="auto", max_tokens=50, messages=user("Say hello."))
        assert info.value.status_code == 401
        body = cast(dict[str, Any], info.value.body)
        assert body["type"] == "error" and body["error"]["type"] == "authentication_error"


def test_bad_input_is_an_anthropic_400_naming_the_field(client: Anthropic) -> None:
    bad = cast(list[MessageParam], [{"role": "user", "content": [{"type": "text"}]}])
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(model="auto", max_tokens=50, messages=bad)
    body = cast(dict[str, Any], info.value.body)
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"].startswith("messages.0.content.0.text: ")
