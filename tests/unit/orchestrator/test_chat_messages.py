"""Chat Completions over an Anthropic Messages upstream: the request (checked with the
gateway's own Anthropic request checker), the answer and the stream back (checked with
openai-python's models and its stream assembler), usage with cache reads and 5-minute
and 1-hour writes, stop reasons, refusals, the vendor's headers and paths."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from tollgate_common.policy import Provider as ProviderEntry
from tollgate_orchestrator.dialects import TRANSLATIONS
from tollgate_orchestrator.dialects.chat import WIRE as CHAT_WIRE
from tollgate_orchestrator.dialects.chat import usage_of as chat_usage_of
from tollgate_orchestrator.dialects.messages import WIRE as MESSAGES_WIRE
from tollgate_orchestrator.dialects.messages import replay
from tollgate_orchestrator.dialects.messages_request import parse_messages_request
from tollgate_orchestrator.errors import ApiError
from tollgate_orchestrator.providers.anthropic import ANTHROPIC
from tollgate_orchestrator.providers.dispatch import _route
from tollgate_orchestrator.retry import SERVER, classify_status
from tollgate_orchestrator.sse import DONE, data_of
from tollgate_orchestrator.translate.chat_messages import (
    DEFAULT_MAX_TOKENS,
    JSON_INSTRUCTION,
    TRANSLATION,
)
from tollgate_orchestrator.types import CHAT_API, MESSAGES_API, RESPONSES_API, LlmRequest
from tollgate_orchestrator.validation import Limits, parse_chat_request

LIMITS = Limits()
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
PNG = "iVBORw0KGgo="


def chat(**body: Any) -> LlmRequest:
    body.setdefault("model", "claude")
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    return parse_chat_request(orjson.loads(orjson.dumps(body)), LIMITS)


def to_messages(**body: Any) -> dict[str, Any]:
    """The Messages body a chat request becomes, checked as the Messages dialect checks
    a client's Anthropic request (every field and block type Anthropic defines)."""
    out = TRANSLATION.request(chat(**body))
    assert out.api == MESSAGES_API
    parse_messages_request(orjson.loads(orjson.dumps(out.body)), LIMITS)
    return out.body


def refusal(**body: Any) -> ApiError:
    with pytest.raises(ApiError) as info:
        TRANSLATION.request(chat(**body))
    assert info.value.status == 400
    return info.value


def test_registered_and_routed_for_chat_and_responses() -> None:
    assert TRANSLATIONS[(CHAT_API, MESSAGES_API)] is TRANSLATION
    assert _route(CHAT_API, frozenset({MESSAGES_API})) == (TRANSLATION,)
    legs = _route(RESPONSES_API, frozenset({MESSAGES_API}))
    assert legs is not None and [t.target for t in legs] == [CHAT_API, MESSAGES_API]


def test_a_tool_conversation_becomes_alternating_messages() -> None:
    out = to_messages(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Be kind."}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Weather here?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                    {"type": "image_url", "image_url": {"url": "https://x.test/a.jpg"}},
                ],
            },
            {
                "role": "assistant",
                "content": "Looking.",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    },
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {
                "role": "tool",
                "tool_call_id": "call_2",
                "content": [{"type": "text", "text": "rain"}],
            },
            {"role": "user", "content": "Thanks. And tomorrow?"},
        ],
        tools=[TOOL],
        tool_choice="required",
        parallel_tool_calls=False,
        stop="END",
        user="u-1",
        temperature=0.2,
    )
    assert out["system"] == [
        {"type": "text", "text": "Be brief."},
        {"type": "text", "text": "Be kind."},
    ]
    assert [m["role"] for m in out["messages"]] == ["user", "assistant", "user"]
    user, assistant, results = out["messages"]
    assert user["content"][1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
    }
    assert user["content"][2]["source"] == {"type": "url", "url": "https://x.test/a.jpg"}
    assert assistant["content"][0] == {"type": "text", "text": "Looking."}
    assert assistant["content"][1:] == [
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Rome"}},
    ]
    # Both results and the next question in one user turn, results first.
    assert results["content"] == [
        {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
        {
            "type": "tool_result",
            "tool_use_id": "call_2",
            "content": [{"type": "text", "text": "rain"}],
        },
        {"type": "text", "text": "Thanks. And tomorrow?"},
    ]
    assert out["tools"] == [
        {
            "name": "get_weather",
            "input_schema": TOOL["function"]["parameters"],  # type: ignore[index]
            "description": "The weather in a city.",
        }
    ]
    assert out["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert out["stop_sequences"] == ["END"]
    assert out["metadata"] == {"user_id": "u-1"}
    assert out["max_tokens"] == DEFAULT_MAX_TOKENS and out["temperature"] == 0.2
    assert "user" not in out and "stop" not in out and "parallel_tool_calls" not in out


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"type": "auto"}),
        ("none", {"type": "none"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"type": "tool", "name": "get_weather"},
        ),
    ],
)
def test_tool_choice(choice: Any, expected: dict[str, Any]) -> None:
    assert to_messages(tools=[TOOL], tool_choice=choice)["tool_choice"] == expected


def test_max_tokens_is_the_smaller_cap_and_cache_control_survives() -> None:
    part = {
        "type": "text",
        "text": "long context",
        "cache_control": {"type": "ephemeral", "ttl": "1h"},
    }
    out = to_messages(
        max_tokens=300,
        max_completion_tokens=200,
        messages=[{"role": "system", "content": [part]}, {"role": "user", "content": [part]}],
    )
    assert out["max_tokens"] == 200
    assert out["system"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    assert out["messages"][0]["content"][0]["cache_control"]["ttl"] == "1h"


def test_reasoning_effort_becomes_a_thinking_budget_below_max_tokens() -> None:
    out = to_messages(reasoning_effort="medium", temperature=0.5)
    assert out["thinking"] == {"type": "enabled", "budget_tokens": 8192}
    assert out["max_tokens"] == 8192 + DEFAULT_MAX_TOKENS
    assert "temperature" not in out  # thinking samples at 1
    # The client's cap holds thinking and answer (as OpenAI counts): never raised.
    capped = to_messages(reasoning_effort="high", max_tokens=10000)
    assert capped["thinking"]["budget_tokens"] == 10000 - 1024 and capped["max_tokens"] == 10000
    roomy = to_messages(reasoning_effort="low", max_completion_tokens=10000)
    assert roomy["thinking"]["budget_tokens"] == 2048 and roomy["max_tokens"] == 10000
    small = to_messages(reasoning_effort="high", max_tokens=1000)  # no room to think
    assert "thinking" not in small and small["max_tokens"] == 1000
    assert "thinking" not in to_messages(reasoning_effort="minimal")
    err = refusal(reasoning_effort="low", tools=[TOOL], tool_choice="required")
    assert err.param == "tool_choice"


def test_response_formats() -> None:
    obj = to_messages(response_format={"type": "json_object"})
    assert obj["system"][-1] == {"type": "text", "text": JSON_INSTRUCTION}
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}}
    out = to_messages(response_format=fmt)
    assert out["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    assert "system" not in out and "response_format" not in out


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", 1.5),
        ("n", 2),
        ("logprobs", True),
        ("top_logprobs", 3),
        ("presence_penalty", 0.5),
        ("logit_bias", {"42": 1}),
        ("web_search_options", {}),
    ],
)
def test_what_messages_cannot_do_is_a_400_naming_the_field(field: str, value: Any) -> None:
    if field == "web_search_options":
        value = {"search_context_size": "low"}
    err = refusal(**{field: value})
    assert err.param == field
    assert f'"param":"{field}"' in err.body().decode()  # OpenAI's error shape


def test_no_op_values_pass() -> None:
    out = to_messages(n=1, logprobs=False, presence_penalty=0, frequency_penalty=0, temperature=1)
    assert out["temperature"] == 1


def test_parts_messages_cannot_take_are_refused_by_path() -> None:
    audio = {"type": "input_audio", "input_audio": {"data": "AA==", "format": "wav"}}
    err = refusal(messages=[{"role": "user", "content": [audio]}])
    assert err.param == "messages[0].content[0].type"
    bad = {"type": "image_url", "image_url": {"url": "ftp://x"}}
    assert refusal(messages=[{"role": "user", "content": [bad]}]).param == (
        "messages[0].content[0].image_url.url"
    )


# --- the answer ------------------------------------------------------------------------------

USAGE = {
    "input_tokens": 10,
    "cache_read_input_tokens": 100,
    "cache_creation_input_tokens": 40,
    "cache_creation": {"ephemeral_5m_input_tokens": 10, "ephemeral_1h_input_tokens": 30},
    "output_tokens": 7,
}


def message(content: list[dict[str, Any]], stop: str = "end_turn", **extra: Any) -> dict[str, Any]:
    return {
        "id": "msg_01abc",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5",
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": USAGE,
        **extra,
    }


THOUGHTFUL = message(
    [
        {"type": "thinking", "thinking": "Paris, so", "signature": "sig"},
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
    ],
    "tool_use",
)


def answer(msg: dict[str, Any]) -> dict[str, Any]:
    raw = orjson.dumps(msg)
    assert MESSAGES_WIRE.answer(raw) is not None  # what the transport accepts first
    out = TRANSLATION.answer(raw, chat())
    assert out is not None
    ChatCompletion.model_validate_json(out)
    assert CHAT_WIRE.answer(out) is not None
    parsed: dict[str, Any] = orjson.loads(out)
    return parsed


def test_a_message_becomes_a_chat_completion_with_tool_calls_and_reasoning() -> None:
    out = answer(THOUGHTFUL)
    choice = out["choices"][0]
    assert out["id"] == "chatcmpl-01abc" and out["model"] == "claude-haiku-4-5"
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Checking."
    assert choice["message"]["reasoning_content"] == "Paris, so"
    call = choice["message"]["tool_calls"][0]
    assert call["id"] == "toolu_1" and call["function"]["name"] == "get_weather"
    assert orjson.loads(call["function"]["arguments"]) == {"city": "Paris"}


def test_usage_keeps_cache_reads_and_both_write_ttls() -> None:
    usage = answer(THOUGHTFUL)["usage"]
    assert usage["prompt_tokens"] == 150  # input excludes the cache at Anthropic
    assert usage["completion_tokens"] == 7 and usage["total_tokens"] == 157
    u = chat_usage_of(usage)
    assert (u.cached, u.cache_write, u.cache_write_1h) == (100, 40, 30)


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("pause_turn", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("refusal", "content_filter"),
    ],
)
def test_stop_reasons(stop: str, finish: str) -> None:
    out = answer(message([{"type": "text", "text": "x"}], stop))
    assert out["choices"][0]["finish_reason"] == finish


def test_what_is_not_a_message_is_none() -> None:
    assert TRANSLATION.answer(b'{"type":"error","error":{}}', chat()) is None
    assert TRANSLATION.answer(b"not json", chat()) is None


# --- the stream ------------------------------------------------------------------------------


def payloads(frames: list[bytes]) -> list[bytes]:
    """The data payloads of framed SSE events, as the transport yields them."""
    return [p for f in frames for line in f.split(b"\n") if (p := data_of(line))]


def run(events: list[bytes]) -> list[bytes]:
    t = TRANSLATION.stream(chat(stream=True))
    return [q for p in events for q in t.feed(p)]


def assemble(out: list[bytes]) -> Any:
    assert out[-1] == DONE
    state = ChatCompletionStreamState()
    for p in out[:-1]:
        state.handle_chunk(ChatCompletionChunk.model_validate_json(p))
    return state.get_final_completion()


def test_a_stream_becomes_chunks_with_tool_calls_reasoning_and_usage_last() -> None:
    events = payloads(replay(THOUGHTFUL))
    events.insert(1, b'{"type":"ping"}')
    out = run(events)
    done = assemble(out)
    choice = done.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content == "Checking."
    calls = choice.message.tool_calls or []
    assert [c.function.name for c in calls] == ["get_weather"] and calls[0].id == "toolu_1"
    assert orjson.loads(calls[0].function.arguments) == {"city": "Paris"}
    reasoning = "".join(
        orjson.loads(p)["choices"][0]["delta"].get("reasoning_content", "") for p in out[:-2]
    )
    assert reasoning == "Paris, so"
    last = orjson.loads(out[-2])
    assert last["choices"] == [] and last["usage"]["prompt_tokens"] == 150
    assert chat_usage_of(last["usage"]).cache_write_1h == 30
    # The whole and the streamed answer agree.
    whole = answer(THOUGHTFUL)["choices"][0]["message"]
    assert whole["tool_calls"][0]["function"]["arguments"] == calls[0].function.arguments


def test_message_delta_usage_wins_over_message_start() -> None:
    start = {**THOUGHTFUL, "content": [], "usage": {**USAGE, "output_tokens": 1}}
    events = [
        orjson.dumps({"type": "message_start", "message": start}),
        b'{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}',
        b'{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}',
        b'{"type":"content_block_stop","index":0}',
        b'{"type":"message_delta","delta":{"stop_reason":"stop_sequence"},"usage":{"output_tokens":9}}',
        b'{"type":"message_stop"}',
    ]
    out = run(events)
    done = assemble(out)
    assert done.choices[0].finish_reason == "stop" and done.choices[0].message.content == "Hi"
    usage = orjson.loads(out[-2])["usage"]
    assert usage["completion_tokens"] == 9 and usage["prompt_tokens"] == 150


def test_an_error_event_ends_the_chat_stream_as_an_error() -> None:
    start = orjson.dumps({"type": "message_start", "message": {**THOUGHTFUL, "content": []}})
    err = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    out = run([start, err, b'{"type":"message_stop"}'])
    assert len(out) == 2
    assert CHAT_WIRE.end_of(out[-1]) == "error"
    assert orjson.loads(out[-1])["error"]["code"] == "overloaded_error"
    assert MESSAGES_WIRE.end_of(err) == "error"  # before content: the attempt fails over


# --- the vendor ------------------------------------------------------------------------------


def entry(**kw: Any) -> ProviderEntry:
    return ProviderEntry(
        type="anthropic", base_url=kw.pop("base_url", "https://api.anthropic.com/v1/"), **kw
    )


def test_vendor_sends_the_key_as_x_api_key_with_the_sdks_version() -> None:
    import anthropic

    headers = ANTHROPIC.headers(entry(), "sk-ant")
    assert headers["x-api-key"] == "sk-ant" and "Authorization" not in headers
    sdk = anthropic.AsyncAnthropic(api_key="x").default_headers
    assert headers["anthropic-version"] == sdk["anthropic-version"]
    assert headers["User-Agent"].startswith("AsyncAnthropic/Python")
    bearer = ANTHROPIC.headers(entry(auth="bearer"), "tok")
    assert bearer["Authorization"] == "Bearer tok" and "x-api-key" not in bearer
    assert "x-api-key" not in ANTHROPIC.headers(entry(), "")  # no key, no header


def test_vendor_path_with_and_without_v1_in_the_base_url() -> None:
    assert ANTHROPIC.path(entry(), MESSAGES_WIRE, "m") == "messages"
    assert ANTHROPIC.path(entry(base_url="https://api.anthropic.com"), MESSAGES_WIRE, "m") == (
        "v1/messages"
    )
    assert entry().apis == ("messages",)


def test_529_overloaded_is_a_retryable_server_error() -> None:
    assert classify_status(529) == SERVER
