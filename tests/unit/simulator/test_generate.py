"""The simulator's pure answer logic through chat: determinism, usage, limits, tools,
wire shapes."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from tollgate_simulator.chat import (
    DONE,
    ChatRequest,
    answer,
    chat_usage,
    completion_body,
    parse_request,
    sse_events,
)
from tollgate_simulator.generate import RequestError, prompt_usage

WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer"},
            },
            "required": ["city", "unit"],
        },
    },
}


def req(text: str = "hello", **kw: Any) -> ChatRequest:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], **kw}
    return parse_request(orjson.dumps(body))


def test_same_prompt_same_answer_and_usage() -> None:
    a, b = answer(req("What is a gateway?")), answer(req("What is a gateway?"))
    assert a.content == b.content and chat_usage(a) == chat_usage(b)
    assert a.content != answer(req("What is a router?")).content


def test_prompt_tokens_grow_with_prompt_length() -> None:
    short = answer(req("hi")).prompt_tokens
    longer = answer(req("hi " * 400)).prompt_tokens
    assert longer > short + 250  # ~4 chars per token


def test_max_tokens_bounds_the_answer_and_sets_length() -> None:
    free = answer(req("tell me a story"))
    assert free.finish_reason == "stop" and free.completion_tokens >= 16
    capped = answer(req("tell me a story", max_tokens=5))
    assert capped.completion_tokens == 5 and capped.finish_reason == "length"
    assert len(capped.pieces) == 5
    # The newer parameter name wins over the legacy one.
    both = answer(req("tell me a story", max_tokens=50, max_completion_tokens=3))
    assert both.completion_tokens == 3


def test_reasoning_models_report_reasoning_tokens() -> None:
    for model in ("o3", "o4-mini", "gpt-5", "gpt-5-nano"):
        ans = answer(
            parse_request(
                orjson.dumps({"model": model, "messages": [{"role": "user", "content": "2+2?"}]})
            )
        )
        assert ans.reasoning_tokens > 0, model
        assert ans.completion_tokens == len(ans.pieces) + ans.reasoning_tokens
        details = chat_usage(ans)["completion_tokens_details"]
        assert details["reasoning_tokens"] == ans.reasoning_tokens
    assert answer(req("2+2?")).reasoning_tokens == 0
    low = parse_request(
        orjson.dumps(
            {
                "model": "o3",
                "reasoning_effort": "low",
                "messages": [{"role": "user", "content": "2+2?"}],
            }
        )
    )
    high = parse_request(
        orjson.dumps(
            {
                "model": "o3",
                "reasoning_effort": "high",
                "messages": [{"role": "user", "content": "2+2?"}],
            }
        )
    )
    assert answer(high).reasoning_tokens > answer(low).reasoning_tokens


def test_long_system_prefix_reports_cached_tokens() -> None:
    system = {"role": "system", "content": "x" * 8000}  # ~2000 tokens
    total, cached = prompt_usage([system, {"role": "user", "content": "q"}], None)
    assert cached >= 1024 and cached % 128 == 0 and cached < total
    assert prompt_usage([{"role": "user", "content": "x" * 8000}], None)[1] == 0


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        (b'{"messages": [{"role": "user", "content": "x"}]}', "model"),
        (b'{"model": "m"}', "messages"),
        (b'{"model": "m", "messages": []}', "messages"),
        (b'{"model": "m", "messages": [{"content": "x"}]}', "messages[0].role"),
        (b'{"model": "m", "messages": [{"role": "user"}], "max_tokens": 0}', "max_tokens"),
        (b'{"model": "m", "messages": [{"role": "user"}], "max_tokens": true}', "max_tokens"),
        (b'{"model": "m", "messages": [{"role": "user"}], "stream": "yes"}', "stream"),
        (b'{"model": "m", "messages": [{"role": "user"}], "tools": {}}', "tools"),
    ],
)
def test_bad_requests_name_the_field(body: bytes, param: str | None) -> None:
    with pytest.raises(RequestError) as err:
        parse_request(body)
    assert err.value.status == 400 and err.value.param == param
    if param:
        assert param in err.value.message


def test_tool_call_when_the_prompt_asks_for_it() -> None:
    ans = answer(req("Please call get_weather for me", tools=[WEATHER_TOOL]))
    assert ans.finish_reason == "tool_calls" and ans.content is None
    (call,) = ans.tool_calls
    args = orjson.loads(call.arguments)
    assert call.name == "get_weather" and set(args) == {"city", "unit"}
    assert args["unit"] in ("celsius", "fahrenheit") and isinstance(args["city"], str)
    again = answer(req("Please call get_weather for me", tools=[WEATHER_TOOL]))
    assert again.tool_calls == ans.tool_calls  # deterministic, ids included


def test_no_tool_call_without_a_request_or_after_a_tool_result() -> None:
    assert not answer(req("Tell me a joke", tools=[WEATHER_TOOL])).tool_calls
    assert not answer(req("call get_weather", tools=[WEATHER_TOOL], tool_choice="none")).tool_calls
    assert answer(req("Tell me a joke", tools=[WEATHER_TOOL], tool_choice="required")).tool_calls
    loop = parse_request(
        orjson.dumps(
            {
                "model": "m",
                "tools": [WEATHER_TOOL],
                "messages": [
                    {"role": "user", "content": "call get_weather"},
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": "c",
                                "type": "function",
                                "function": {"name": "get_weather", "arguments": "{}"},
                            }
                        ],
                    },
                    {"role": "tool", "tool_call_id": "c", "content": "sunny"},
                ],
            }
        )
    )
    final = answer(loop)
    assert not final.tool_calls and final.finish_reason == "stop"


def test_json_schema_response_format_gives_matching_json() -> None:
    fmt = {
        "type": "json_schema",
        "json_schema": {"name": "x", "schema": WEATHER_TOOL["function"]["parameters"]},
    }
    data = orjson.loads(answer(req("weather?", response_format=fmt)).content or "")
    assert set(data) == {"city", "unit"}
    obj = orjson.loads(
        answer(req("weather?", response_format={"type": "json_object"})).content or ""
    )
    assert isinstance(obj, dict)


def test_bodies_parse_as_the_sdk_types() -> None:
    ans = answer(req("hello", tools=[WEATHER_TOOL], tool_choice="required"))
    done = ChatCompletion.model_validate_json(completion_body(ans, "chatcmpl-1", 1, "gpt-4o-mini"))
    assert done.choices[0].message.tool_calls and done.usage and done.usage.total_tokens > 0
    for tools in ([WEATHER_TOOL], None):
        ans = answer(req("call get_weather", tools=tools))
        events = sse_events(ans, "chatcmpl-2", 1, "gpt-4o-mini", include_usage=True)
        assert events[-1][0] == DONE
        chunks = [
            ChatCompletionChunk.model_validate_json(e[len(b"data: ") :].strip())
            for e, _ in events[:-1]
        ]
        assert chunks[0].choices[0].delta.role == "assistant"
        assert (
            chunks[-1].choices == []
            and chunks[-1].usage
            == ChatCompletion.model_validate_json(completion_body(ans, "x", 1, "m")).usage
        )
        assert chunks[-2].choices[0].finish_reason == ans.finish_reason
        if not tools:
            text = "".join(c.choices[0].delta.content or "" for c in chunks[:-1])
            assert text == ans.content
        else:
            args = "".join(
                (c.choices[0].delta.tool_calls or [])[0].function.arguments or ""  # type: ignore[union-attr]
                for c in chunks[:-2]
            )
            assert args == ans.tool_calls[0].arguments
