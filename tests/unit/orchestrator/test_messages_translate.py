"""Anthropic Messages over a Chat Completions upstream: the request (checked against
OpenAI's own contract), the answer and the stream back (checked with anthropic-python's
models), usage both ways with cached tokens, stop reasons, tool use round trips."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from anthropic.types import Message

from tests.contract.openai_contract import assert_valid
from tollgate_orchestrator.accounting import Usage
from tollgate_orchestrator.dialects import TRANSLATIONS
from tollgate_orchestrator.dialects.chat import usage_of as chat_usage
from tollgate_orchestrator.dialects.messages import DIALECT, WIRE
from tollgate_orchestrator.errors import ApiError
from tollgate_orchestrator.sse import COST_FIELD, DONE
from tollgate_orchestrator.translate.messages_chat import TRANSLATION, effort
from tollgate_orchestrator.types import CHAT_API, MESSAGES_API, LlmRequest
from tollgate_orchestrator.validation import Limits, parse_chat_request

from .test_messages_dialect import TOOL, body, events_of

LIMITS = Limits()


def parse(data: dict[str, Any]) -> LlmRequest:
    return DIALECT.parse(orjson.dumps(data), LIMITS)


def to_chat(data: dict[str, Any]) -> dict[str, Any]:
    """The chat body a Messages request becomes, checked as OpenAI and the chat dialect
    would check it."""
    out = TRANSLATION.request(parse(data))
    assert out.api == CHAT_API
    assert_valid("CreateChatCompletionRequest", out.body)
    parse_chat_request(orjson.loads(orjson.dumps(out.body)), LIMITS)
    return out.body


def refusal(data: dict[str, Any]) -> ApiError:
    with pytest.raises(ApiError) as info:
        TRANSLATION.request(parse(data))
    assert info.value.status == 400
    return info.value


def test_registered_from_messages_to_chat() -> None:
    assert TRANSLATIONS[(MESSAGES_API, CHAT_API)] is TRANSLATION


def test_a_tool_conversation_becomes_chat_messages() -> None:
    chat = to_chat(
        body(
            system=[{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind."}],
            messages=[
                {"role": "user", "content": "Weather in Paris and Rome?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "Two calls.", "signature": "sig"},
                        {"type": "redacted_thinking", "data": "xyz"},
                        {"type": "text", "text": "Checking."},
                        {
                            "type": "tool_use",
                            "id": "t1",
                            "name": "get_weather",
                            "input": {"city": "Paris"},
                        },
                        {
                            "type": "tool_use",
                            "id": "t2",
                            "name": "get_weather",
                            "input": {"city": "Rome"},
                        },
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Here you go."},
                        {"type": "tool_result", "tool_use_id": "t1", "content": "21 C"},
                        {
                            "type": "tool_result",
                            "tool_use_id": "t2",
                            "content": [{"type": "text", "text": "no data"}],
                            "is_error": True,
                        },
                    ],
                },
            ],
            tools=[TOOL],
            temperature=0.5,
            top_p=0.9,
            top_k=40,
            stop_sequences=["END"],
            metadata={"user_id": "u-1"},
            max_tokens=300,
        )
    )
    assert chat["messages"] == [
        {"role": "system", "content": "Be brief.\nBe kind."},
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "t1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "t2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
                },
            ],
        },
        # The results come right after the calls, before the turn's other content.
        {"role": "tool", "tool_call_id": "t1", "content": "21 C"},
        {"role": "tool", "tool_call_id": "t2", "content": "Error: no data"},
        {"role": "user", "content": "Here you go."},
    ]
    assert chat["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": TOOL["description"],
                "parameters": TOOL["input_schema"],
            },
        }
    ]
    assert chat["max_completion_tokens"] == 300 and "max_tokens" not in chat
    assert chat["stop"] == ["END"] and chat["user"] == "u-1"
    assert (chat["temperature"], chat["top_p"]) == (0.5, 0.9)
    assert "top_k" not in chat and "metadata" not in chat and "system" not in chat


def test_images_and_documents_become_content_parts() -> None:
    png = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}}
    url = {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}}
    pdf = {
        "type": "document",
        "title": "report",
        "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"},
    }
    txt = {
        "type": "document",
        "title": "Notes",
        "source": {"type": "text", "media_type": "text/plain", "data": "hi"},
    }
    chat = to_chat(
        body(
            messages=[
                {"role": "user", "content": [{"type": "text", "text": "Look."}, png, url, pdf, txt]}
            ]
        )
    )
    assert chat["messages"][0]["content"] == [
        {"type": "text", "text": "Look."},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}},
        {
            "type": "file",
            "file": {"filename": "report.pdf", "file_data": "data:application/pdf;base64,JVBE"},
        },
        {"type": "text", "text": "Notes\n\nhi"},
    ]


@pytest.mark.parametrize(
    ("choice", "expected", "parallel"),
    [
        ({"type": "auto"}, "auto", None),
        ({"type": "any"}, "required", None),
        ({"type": "none"}, "none", None),
        (
            {"type": "tool", "name": "get_weather"},
            {"type": "function", "function": {"name": "get_weather"}},
            None,
        ),
        ({"type": "auto", "disable_parallel_tool_use": True}, "auto", False),
        ({"type": "any", "disable_parallel_tool_use": False}, "required", None),
    ],
)
def test_tool_choice(choice: dict[str, Any], expected: Any, parallel: bool | None) -> None:
    chat = to_chat(body(tools=[TOOL], tool_choice=choice))
    assert chat["tool_choice"] == expected
    assert chat.get("parallel_tool_calls") == parallel


def test_tool_choice_without_tools_is_not_sent() -> None:
    assert "tool_choice" not in to_chat(body(tool_choice={"type": "none"}))


@pytest.mark.parametrize(
    ("thinking", "expected"),
    [
        ({"type": "enabled", "budget_tokens": 1024}, "low"),
        ({"type": "enabled", "budget_tokens": 4095}, "low"),
        ({"type": "enabled", "budget_tokens": 4096}, "medium"),
        ({"type": "enabled", "budget_tokens": 16384}, "high"),
        ({"type": "adaptive"}, None),
        ({"type": "disabled"}, None),
    ],
)
def test_thinking_becomes_reasoning_effort(thinking: dict[str, Any], expected: str | None) -> None:
    assert to_chat(body(thinking=thinking, max_tokens=32000)).get("reasoning_effort") == expected
    assert effort(100_000) == "high"


def test_output_config_becomes_effort_and_a_json_schema() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "string"}},
        "required": ["a"],
        "additionalProperties": False,
    }
    chat = to_chat(
        body(
            thinking={"type": "enabled", "budget_tokens": 2048},
            output_config={"effort": "xhigh", "format": {"type": "json_schema", "schema": schema}},
            cache_control={"type": "ephemeral"},
        )
    )
    assert chat["reasoning_effort"] == "xhigh"  # the explicit effort wins over the budget
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": schema, "strict": True},
    }
    assert "cache_control" not in chat and "output_config" not in chat


def test_server_tools_are_refused_naming_them() -> None:
    err = refusal(
        body(
            tools=[
                TOOL,
                {"type": "web_search_20250305", "name": "web_search"},
                {"type": "bash_20250124", "name": "bash"},
            ]
        )
    )
    assert err.code == "unsupported_tool" and err.param == "tools[1]"
    assert "web_search_20250305" in err.message and "bash_20250124" in err.message
    out = orjson.loads(DIALECT.error_body(err))
    assert out["error"]["type"] == "invalid_request_error"
    assert out["error"]["message"].startswith("tools.1: ")


@pytest.mark.parametrize(
    ("change", "param"),
    [
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}],
                    }
                ]
            },
            "messages[0].content[0].source.type",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "document", "source": {"type": "url", "url": "u"}}],
                    }
                ]
            },
            "messages[0].content[0].source.type",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "x"},
                    {
                        "role": "assistant",
                        "content": [
                            {
                                "type": "server_tool_use",
                                "id": "s",
                                "name": "web_search",
                                "input": {},
                            }
                        ],
                    },
                ]
            },
            "messages[1].content[0].type",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "tool_result",
                                "tool_use_id": "t",
                                "content": [
                                    {"type": "image", "source": {"type": "url", "url": "u"}}
                                ],
                            }
                        ],
                    }
                ]
            },
            "messages[0].content[0].content[0].type",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "tool_result", "tool_use_id": "t", "content": "ok"},
                            {"type": "image", "source": {"type": "file", "file_id": "f"}},
                        ],
                    }
                ]
            },
            "messages[0].content[1].source.type",  # counted with the tool results
        ),
        ({"stop_sequences": ["a", "b", "c", "d", "e"]}, "stop_sequences"),
        ({"tools": [{**TOOL, "name": "n" * 65}]}, "tools[0].name"),
    ],
)
def test_what_chat_cannot_carry_is_a_400_naming_the_field(
    change: dict[str, Any], param: str
) -> None:
    assert refusal(body(**change)).param == param


def test_the_source_request_is_left_alone() -> None:
    req = parse(body(tools=[TOOL], stream=True))
    before = orjson.dumps(req.body)
    out = TRANSLATION.request(req)
    assert orjson.dumps(req.body) == before and req.api == MESSAGES_API
    assert out.stream and out.body["stream"] is True
    assert (out.last_user_text, out.max_tokens, out.est_extra_tokens) == (
        req.last_user_text,
        req.max_tokens,
        req.est_extra_tokens,
    )


# --- the answer -----------------------------------------------------------------------------

CHAT_USAGE = {
    "prompt_tokens": 120,
    "completion_tokens": 30,
    "total_tokens": 150,
    "prompt_tokens_details": {"cached_tokens": 100},
    "completion_tokens_details": {"reasoning_tokens": 4},
}


def completion(message: dict[str, Any], finish: str = "stop") -> dict[str, Any]:
    out = {
        "id": "chatcmpl-abc",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "refusal": None, **message},
                "logprobs": None,
                "finish_reason": finish,
            }
        ],
        "usage": CHAT_USAGE,
    }
    assert_valid("CreateChatCompletionResponse", out)
    return out


def answer(chat: dict[str, Any], req: LlmRequest | None = None) -> dict[str, Any]:
    raw = TRANSLATION.answer(orjson.dumps(chat), req or parse(body()))
    assert raw is not None
    out: dict[str, Any] = orjson.loads(raw)
    Message.model_validate(out)
    return out


def test_usage_both_ways_with_cached_tokens() -> None:
    msg = answer(completion({"content": "Rhine, Danube, Loire."}))
    assert msg["usage"] == {
        "input_tokens": 20,  # prompt - cached: Anthropic's input excludes the cache
        "cache_read_input_tokens": 100,
        "cache_creation_input_tokens": 0,
        "output_tokens": 30,
        "output_tokens_details": {"thinking_tokens": 4},
    }
    # Read back by the Messages wire, it is the chat usage again: nothing lost or doubled.
    assert WIRE.answer(orjson.dumps(msg)) == chat_usage(CHAT_USAGE)
    assert chat_usage(CHAT_USAGE) == Usage(prompt=120, completion=30, cached=100, reasoning=4)


def test_a_text_answer() -> None:
    msg = answer(completion({"content": "Rhine, Danube, Loire."}))
    assert msg["id"].startswith("msg_") and len(msg["id"]) == 28
    assert msg["id"] == answer(completion({"content": "again"}))["id"]  # derived, stable
    assert (msg["type"], msg["role"], msg["model"]) == ("message", "assistant", "gpt-4o-mini")
    assert msg["content"] == [{"type": "text", "text": "Rhine, Danube, Loire."}]
    assert msg["stop_reason"] == "end_turn" and msg["stop_sequence"] is None


@pytest.mark.parametrize(
    ("finish", "reason"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("content_filter", "refusal"),
        ("tool_calls", "tool_use"),
    ],
)
def test_stop_reasons(finish: str, reason: str) -> None:
    assert answer(completion({"content": "x"}, finish))["stop_reason"] == reason


def test_tool_calls_become_tool_use_blocks() -> None:
    calls = [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
        },
        {
            "id": "call_2",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": '},
        },
    ]
    msg = answer(completion({"content": None, "tool_calls": calls}, "tool_calls"))
    assert msg["stop_reason"] == "tool_use"
    assert msg["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
        # Arguments that are not a JSON object are kept, wrapped, never dropped.
        {
            "type": "tool_use",
            "id": "call_2",
            "name": "get_weather",
            "input": {"INVALID_JSON": '{"city": '},
        },
    ]
    # A server that says "stop" after calling tools still leaves tools to run.
    assert (
        answer(completion({"content": None, "tool_calls": calls[:1]}, "stop"))["stop_reason"]
        == "tool_use"
    )


def test_a_tool_use_round_trip() -> None:
    """The answer's tool_use goes back in the next turn with a tool_result, and reaches
    chat as the same call and its result."""
    calls = [
        {
            "id": "call_9",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
        }
    ]
    first = answer(completion({"content": "Let me check.", "tool_calls": calls}, "tool_calls"))
    turn2 = body(
        tools=[TOOL],
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": first["content"]},
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": first["content"][1]["id"],
                        "content": "21 C",
                    }
                ],
            },
        ],
    )
    chat = to_chat(turn2)
    assert chat["messages"][1] == {
        "role": "assistant",
        "content": "Let me check.",
        "tool_calls": calls,
    }
    assert chat["messages"][2] == {"role": "tool", "tool_call_id": "call_9", "content": "21 C"}
    assert len(chat["messages"]) == 3  # no empty user turn after the results


def test_odd_chat_answers_are_not_answers() -> None:
    req = parse(body())
    for raw in (b"nope", b"[]", b'{"choices":[]}', b'{"choices":[{"message":3}]}'):
        assert TRANSLATION.answer(raw, req) is None, raw


# --- the stream -----------------------------------------------------------------------------


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> bytes:
    choices = (
        []
        if delta is None
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
    )
    head = {
        "id": "chatcmpl-s",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o-mini",
    }
    return orjson.dumps({**head, "choices": choices, **extra})


TOOL_STREAM = [
    chunk({"role": "assistant", "content": ""}),
    chunk({"content": "Let me "}),
    chunk({"content": "check."}),
    chunk(
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ]
        }
    ),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": ' "Paris"}'}}]}),
    chunk(
        {
            "tool_calls": [
                {
                    "index": 1,
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
                }
            ]
        }
    ),
    chunk({}, "tool_calls"),
    chunk(None, usage=CHAT_USAGE),
    DONE,
]


def relay(
    payloads: list[bytes], assemble: bool = True
) -> tuple[list[tuple[str, dict[str, Any]]], Any]:
    """Chat payloads through the translation and the Messages parser, as the relay runs them."""
    req = parse(body(stream=True, tools=[TOOL]))
    translator = TRANSLATION.stream(TRANSLATION.request(req))
    parser = WIRE.parser(req, assemble=assemble)
    framed: list[bytes] = []
    for p in payloads:
        for out in translator.feed(p):
            ev = parser.feed(out, lambda u: 0.125)
            assert ev is not None
            framed.append(ev)
    return events_of(framed), parser


def test_a_streamed_tool_call_comes_through_as_anthropic_events() -> None:
    events, parser = relay(TOOL_STREAM)
    names = [n for n, _ in events]
    assert names == [
        "message_start",
        "content_block_start",  # text
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",  # tool_use call_1
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",  # tool_use call_2
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = events[0][1]["message"]
    assert start["id"].startswith("msg_") and start["usage"] == {
        "input_tokens": 0,
        "output_tokens": 0,
    }
    tool_start = events[5][1]
    assert tool_start["index"] == 1
    assert tool_start["content_block"] == {
        "type": "tool_use",
        "id": "call_1",
        "name": "get_weather",
        "input": {},
    }
    pieces = [o["delta"]["partial_json"] for _, o in events[6:8]]
    assert pieces == ['{"city":', ' "Paris"}']
    delta = events[-2][1]
    assert delta["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    # The real figures come in message_delta (chat's usage arrives last), never zeros.
    assert delta["usage"]["input_tokens"] == 20 and delta["usage"]["cache_read_input_tokens"] == 100
    assert delta["usage"]["output_tokens"] == 30
    assert delta[COST_FIELD] == 0.125
    assert parser.usage == chat_usage(CHAT_USAGE)
    # input_json_delta pieces assemble into the tool's input, for the cache.
    message = orjson.loads(parser.assembled())
    Message.model_validate(message)
    assert message["content"] == [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Rome"}},
    ]
    assert message["stop_reason"] == "tool_use"
    assert message["usage"]["input_tokens"] == 20


def test_a_text_stream_that_ran_out_of_tokens() -> None:
    events, parser = relay(
        [
            chunk({"role": "assistant", "content": "Once"}),
            chunk({"content": " upon"}, "length"),
            chunk(None, usage=CHAT_USAGE),
            DONE,
        ]
    )
    assert [n for n, _ in events][:2] == ["message_start", "content_block_start"]
    assert events[-2][1]["delta"]["stop_reason"] == "max_tokens"
    assert orjson.loads(parser.assembled())["content"] == [{"type": "text", "text": "Once upon"}]


def test_a_stream_without_usage_is_estimated_not_zero() -> None:
    events, parser = relay([chunk({"role": "assistant", "content": "Hi"}), chunk({}, "stop"), DONE])
    assert events[-2][1]["usage"] == {"output_tokens": 0}
    usage = parser.usage
    assert usage is not None and usage.prompt > 0 and usage.completion == 1


def test_a_chat_error_payload_becomes_an_error_event() -> None:
    err = orjson.dumps({"error": {"message": "overloaded", "type": "server_error"}})
    events, _ = relay([chunk({"role": "assistant", "content": "Hi"}), err, DONE])
    name, obj = events[-1]
    assert name == "error"
    assert obj["error"] == {"type": "api_error", "message": "overloaded"}
    assert obj[COST_FIELD] == 0.125  # what it cost so far, as on chat's error event
    translator = TRANSLATION.stream(parse(body(stream=True)))
    [payload] = translator.feed(err)
    assert WIRE.end_of(payload) == "error"
    assert translator.feed(DONE) == []  # nothing after the error


def test_done_ends_the_stream_for_the_relay() -> None:
    translator = TRANSLATION.stream(parse(body(stream=True)))
    translator.feed(chunk({"role": "assistant", "content": "Hi"}))
    out = translator.feed(DONE)
    assert WIRE.end_of(out[-1]) == "done"
    assert [WIRE.end_of(p) for p in out[:-1]] == [None] * (len(out) - 1)
