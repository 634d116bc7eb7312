"""Responses over a Chat Completions upstream: the request as chat (and what is refused,
naming it), a chat answer as a Response, and a chat stream as the Responses events
openai-python follows, from ``response.created`` to ``response.completed``."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
import pytest

from tollgate_orchestrator.accounting import Usage
from tollgate_orchestrator.dialects import TRANSLATIONS
from tollgate_orchestrator.dialects.responses import DIALECT, WIRE
from tollgate_orchestrator.errors import ApiError
from tollgate_orchestrator.sse import DONE
from tollgate_orchestrator.translate.responses_chat import TRANSLATION
from tollgate_orchestrator.types import CHAT_API, RESPONSES_API, LlmRequest
from tollgate_orchestrator.validation import Limits, parse_chat_request

from .test_responses_dialect import CALL, REASONING, WEATHER, frames, sdk_stream

CHAT_WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": WEATHER["parameters"],
        "strict": False,
    },
}
CHAT_USAGE = {
    "prompt_tokens": 120,
    "completion_tokens": 30,
    "total_tokens": 150,
    "prompt_tokens_details": {"cached_tokens": 64, "cache_write_tokens": 8},
    "completion_tokens_details": {"reasoning_tokens": 5},
}


def parse(**fields: Any) -> LlmRequest:
    return DIALECT.parse(orjson.dumps({"model": "auto", "input": "hi", **fields}), Limits())


def chat(**fields: Any) -> dict[str, Any]:
    out = TRANSLATION.request(parse(**fields))
    parse_chat_request(dict(out.body), Limits())  # a chat request our own chat face accepts
    return out.body


def refusal(**fields: Any) -> ApiError:
    with pytest.raises(ApiError) as info:
        TRANSLATION.request(parse(**fields))
    assert info.value.status == 400
    return info.value


def completion(message: dict[str, Any], finish: str | None = "stop", **extra: Any) -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-abc",
            "object": "chat.completion",
            "created": 1700000000,
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "refusal": None, **message},
                    "finish_reason": finish,
                }
            ],
            "usage": CHAT_USAGE,
            **extra,
        }
    )


def answer(raw: bytes, **fields: Any) -> dict[str, Any]:
    out = TRANSLATION.answer(raw, parse(**fields))
    assert out is not None
    parsed: dict[str, Any] = orjson.loads(out)
    return parsed


# --- the request ---------------------------------------------------------------------------


def test_it_is_registered_for_responses_to_chat() -> None:
    assert TRANSLATIONS[(RESPONSES_API, CHAT_API)] is TRANSLATION


def test_input_items_become_chat_messages() -> None:
    items = [
        {"role": "system", "content": "Be terse."},
        {"role": "developer", "content": [{"type": "input_text", "text": "Use metric."}]},
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "What is this?"},
                {"type": "input_image", "image_url": "https://example.com/a.png", "detail": "high"},
                {"type": "input_file", "file_id": "file-1", "filename": "a.pdf"},
            ],
        },
        {
            "type": "message",
            "role": "assistant",
            "content": [
                {"type": "output_text", "text": "A map. ", "annotations": []},
                {"type": "output_text", "text": "Checking the weather."},
            ],
        },
        REASONING,
        CALL,
        {**CALL, "call_id": "call_2", "arguments": '{"city": "Oslo"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "21C"},
        {
            "type": "function_call_output",
            "call_id": "call_2",
            "output": [{"type": "input_text", "text": "3C"}],
        },
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "No."}]},
        {"role": "user", "content": "thanks"},
    ]
    body = chat(instructions="You help.", input=items)
    assert body["messages"] == [
        {"role": "system", "content": "You help."},
        {"role": "system", "content": "Be terse."},
        {"role": "system", "content": [{"type": "text", "text": "Use metric."}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {
                    "type": "image_url",
                    "image_url": {"url": "https://example.com/a.png", "detail": "high"},
                },
                {"type": "file", "file": {"file_id": "file-1", "filename": "a.pdf"}},
            ],
        },
        {
            # The reasoning item is dropped; the two calls join the assistant's message.
            "role": "assistant",
            "content": "A map. Checking the weather.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": CALL["arguments"]},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "21C"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "3C"}]},
        {"role": "assistant", "content": None, "refusal": "No."},
        {"role": "user", "content": "thanks"},
    ]


def test_calls_after_a_tool_answer_start_a_new_assistant_message() -> None:
    items = [
        {"role": "user", "content": "go"},
        CALL,
        {"type": "function_call_output", "call_id": "call_1", "output": "x"},
        {**CALL, "call_id": "call_2"},
    ]
    msgs = chat(input=items, tools=[WEATHER])["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "tool", "assistant"]
    assert msgs[3]["tool_calls"][0]["id"] == "call_2" and msgs[3]["content"] is None


def test_the_parameters_map_to_their_chat_names() -> None:
    body = chat(
        stream=True,
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
        parallel_tool_calls=False,
        text={
            "format": {
                "type": "json_schema",
                "name": "w",
                "schema": {"type": "object"},
                "strict": True,
            },
            "verbosity": "low",
        },
        max_output_tokens=64,
        reasoning={"effort": "low", "summary": "auto"},
        temperature=0.2,
        top_p=0.9,
        metadata={"k": "v"},
        user="u1",
        safety_identifier="s1",
        prompt_cache_key="p1",
        service_tier="flex",
        # Dropped: nothing here a chat upstream could honour.
        store=False,
        include=["reasoning.encrypted_content"],
        truncation="auto",
        top_logprobs=2,
        max_tool_calls=3,
        previous_response_id="resp_1",
    )
    assert body == {
        "model": "auto",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "tools": [CHAT_WEATHER],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": False,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "w", "schema": {"type": "object"}, "strict": True},
        },
        "verbosity": "low",
        "max_completion_tokens": 64,
        "reasoning_effort": "low",
        "temperature": 0.2,
        "top_p": 0.9,
        "metadata": {"k": "v"},
        "user": "u1",
        "safety_identifier": "s1",
        "prompt_cache_key": "p1",
        "service_tier": "flex",
    }


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        ("required", "required"),
        ({"type": "function", "name": "f"}, {"type": "function", "function": {"name": "f"}}),
        (
            {
                "type": "allowed_tools",
                "mode": "required",
                "tools": [{"type": "function", "name": "f"}],
            },
            {
                "type": "allowed_tools",
                "allowed_tools": {
                    "mode": "required",
                    "tools": [{"type": "function", "function": {"name": "f"}}],
                },
            },
        ),
    ],
)
def test_tool_choice(given: Any, sent: Any) -> None:
    assert (
        TRANSLATION.request(parse(tools=[WEATHER], tool_choice=given)).body["tool_choice"] == sent
    )


def test_json_object_and_plain_text_formats() -> None:
    assert chat(text={"format": {"type": "json_object"}})["response_format"] == {
        "type": "json_object"
    }
    assert "response_format" not in chat(text={"format": {"type": "text"}})
    # Neither means anything without tools (and OpenAI's chat refuses them).
    bare = chat(parallel_tool_calls=True, tool_choice="auto")
    assert "parallel_tool_calls" not in bare and "tool_choice" not in bare


def test_the_request_keeps_its_features_in_the_chat_api() -> None:
    req = parse(instructions="x", tools=[WEATHER], max_output_tokens=19, stream=True)
    out = TRANSLATION.request(req)
    assert out.api == CHAT_API and req.api == RESPONSES_API
    for name in (
        "model",
        "stream",
        "max_tokens",
        "has_tools",
        "last_user_text",
        "system_text",
        "turns",
        "est_extra_tokens",
    ):
        assert getattr(out, name) == getattr(req, name), name
    assert out.state is req.state


def test_hosted_tools_are_refused_by_name() -> None:
    tools = [
        WEATHER,
        {"type": "web_search"},
        {"type": "namespace", "name": "ns", "tools": []},
        {"type": "web_search"},
    ]
    err = refusal(tools=tools)
    assert (err.code, err.param) == ("unsupported_tool", "tools[1].type")
    assert "cannot run hosted tools: web_search, namespace" in err.message
    assert "Chat Completions" in err.message
    err = refusal(tools=[WEATHER], tool_choice={"type": "file_search"})
    assert (err.code, err.param) == ("unsupported_tool", "tool_choice.type")
    err = refusal(
        tools=[WEATHER],
        tool_choice={"type": "allowed_tools", "mode": "auto", "tools": [{"type": "mcp"}]},
    )
    assert err.param == "tool_choice.tools[0].type"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]"),
        ({"input": [{"id": "msg_1"}]}, "input[0]"),
        (
            {"input": [{"type": "web_search_call", "id": "ws_1", "status": "completed"}]},
            "input[0].type",
        ),
        (
            {
                "input": [
                    {"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}
                ]
            },
            "input[0].content[0].file_id",
        ),
        (
            {
                "input": [
                    {
                        "role": "user",
                        "content": [{"type": "input_file", "file_url": "https://x/a.pdf"}],
                    }
                ]
            },
            "input[0].content[0].file_url",
        ),
        (
            {
                "input": [
                    {
                        "type": "function_call_output",
                        "call_id": "c",
                        "output": [{"type": "input_image", "image_url": "https://x/a.png"}],
                    }
                ]
            },
            "input[0].output[0].type",
        ),
        ({"background": True}, "background"),
        ({"prompt": {"id": "pmpt_1"}}, "prompt"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"input": [REASONING]}, "input"),
    ],
)
def test_what_chat_cannot_carry_is_refused_naming_it(fields: dict[str, Any], param: str) -> None:
    err = refusal(**fields)
    assert err.param == param
    assert err.message


def test_an_item_reference_names_the_store() -> None:
    err = refusal(input=[{"type": "item_reference", "id": "msg_1"}])
    assert "item_reference" in err.message and "response store" in err.message


# --- the answer --------------------------------------------------------------------------


def test_a_chat_answer_becomes_a_response() -> None:
    out = answer(
        completion({"content": "Hello there."}, service_tier="default"),
        instructions="Be nice.",
        tools=[WEATHER],
        temperature=0.3,
        max_output_tokens=99,
        metadata={"a": "b"},
        store=False,
    )
    assert out["id"].startswith("resp_") and out["object"] == "response"
    assert (
        out["status"] == "completed" and out["error"] is None and out["incomplete_details"] is None
    )
    assert out["created_at"] == 1700000000 and out["completed_at"] >= 1700000000
    assert out["model"] == "gpt-4o-mini-2024-07-18"
    msg = out["output"][0]
    assert msg["type"] == "message" and msg["id"].startswith("msg_") and msg["role"] == "assistant"
    assert msg["status"] == "completed"
    assert msg["content"] == [
        {"type": "output_text", "text": "Hello there.", "annotations": [], "logprobs": []}
    ]
    assert out["usage"] == {
        "input_tokens": 120,
        "input_tokens_details": {"cached_tokens": 64, "cache_write_tokens": 8},
        "output_tokens": 30,
        "output_tokens_details": {"reasoning_tokens": 5},
        "total_tokens": 150,
    }
    # The request echoed, as OpenAI does.
    assert out["instructions"] == "Be nice." and out["temperature"] == 0.3
    assert out["max_output_tokens"] == 99 and out["metadata"] == {"a": "b"}
    assert out["store"] is False and out["parallel_tool_calls"] is True
    assert out["tool_choice"] == "auto" and out["text"] == {"format": {"type": "text"}}
    assert out["tools"] == [{**WEATHER}]
    assert out["top_p"] is None and out["previous_response_id"] is None
    # The usage accounted is the one the client sees.
    assert WIRE.answer(orjson.dumps(out)) == Usage(120, 30, 64, 5, 8)


def test_the_ids_follow_the_chat_answer() -> None:
    a = answer(completion({"content": "x"}))
    assert a["id"] == answer(completion({"content": "y"}))["id"]
    other = orjson.loads(completion({"content": "x"}).replace(b"chatcmpl-abc", b"chatcmpl-xyz"))
    b = TRANSLATION.answer(orjson.dumps(other), parse())
    assert b is not None and orjson.loads(b)["id"] != a["id"]


def test_tool_calls_become_function_call_items() -> None:
    calls = [
        {
            "id": "call_7",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
        },
        {
            "id": "call_8",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
        },
    ]
    out = answer(completion({"content": None, "tool_calls": calls}, "tool_calls"), tools=[WEATHER])
    assert out["status"] == "completed"
    assert [i["type"] for i in out["output"]] == ["function_call", "function_call"]
    first = out["output"][0]
    assert first["id"].startswith("fc_") and first["id"] != out["output"][1]["id"]
    assert {k: first[k] for k in ("call_id", "name", "arguments", "status")} == {
        "call_id": "call_7",
        "name": "get_weather",
        "arguments": '{"city":"Paris"}',
        "status": "completed",
    }
    with_text = answer(
        completion({"content": "Let me check.", "tool_calls": calls[:1]}, "tool_calls")
    )
    assert [i["type"] for i in with_text["output"]] == ["message", "function_call"]


@pytest.mark.parametrize(
    ("finish", "reason"), [("length", "max_output_tokens"), ("content_filter", "content_filter")]
)
def test_a_cut_answer_is_incomplete(finish: str, reason: str) -> None:
    out = answer(completion({"content": "Once upon"}, finish))
    assert out["status"] == "incomplete" and out["incomplete_details"] == {"reason": reason}
    assert out["output"][0]["status"] == "incomplete"


def test_a_refusal_and_an_empty_answer() -> None:
    out = answer(completion({"content": None, "refusal": "I can't help with that."}))
    assert out["output"][0]["content"] == [
        {"type": "refusal", "refusal": "I can't help with that."}
    ]
    empty = answer(completion({"content": ""}))
    assert empty["output"][0]["content"][0]["text"] == ""


@pytest.mark.parametrize(
    "raw",
    [
        b"nope",
        b"[]",
        b'{"choices": []}',
        b'{"choices": [1]}',
        b'{"choices": [{"message": "x"}]}',
        b'{"object": "response", "output": []}',
    ],
)
def test_what_is_not_a_chat_answer_is_not_translated(raw: bytes) -> None:
    assert TRANSLATION.answer(raw, parse()) is None


def test_odd_fields_of_a_chat_answer_are_read_as_absent() -> None:
    out = answer(completion({"content": 3, "tool_calls": 7, "refusal": {}}, finish=None))
    assert out["status"] == "completed" and out["output"][0]["content"][0]["text"] == ""


# --- the stream ----------------------------------------------------------------------------

HEAD = {
    "id": "chatcmpl-s1",
    "object": "chat.completion.chunk",
    "created": 1700000001,
    "model": "gpt-4o-mini",
}


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> bytes:
    choices = (
        []
        if delta is None
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
    )
    return orjson.dumps({**HEAD, "choices": choices, **extra})


def tool_delta(index: int, **fields: Any) -> dict[str, Any]:
    return {"tool_calls": [{"index": index, **fields}]}


TEXT_STREAM = [
    chunk({"role": "assistant", "content": ""}),
    chunk({"content": "Hel"}),
    chunk({"content": "lo!"}),
    chunk({}, "stop"),
    chunk(None, usage=CHAT_USAGE),
    DONE,
]
TOOL_STREAM = [
    chunk({"role": "assistant", "content": None}),
    chunk(
        tool_delta(
            0, id="call_a", type="function", function={"name": "get_weather", "arguments": ""}
        )
    ),
    chunk(tool_delta(0, function={"arguments": '{"city":'})),
    chunk(tool_delta(0, function={"arguments": '"Paris"}'})),
    chunk(
        tool_delta(
            1,
            id="call_b",
            type="function",
            function={"name": "get_weather", "arguments": '{"city":"Rome"}'},
        )
    ),
    chunk({}, "tool_calls"),
    chunk(None, usage=CHAT_USAGE),
    DONE,
]


def translate(payloads: list[bytes], **fields: Any) -> list[dict[str, Any]]:
    t = TRANSLATION.stream(parse(stream=True, **fields))
    out = [orjson.loads(p) for payload in payloads for p in t.feed(payload)]
    assert t.feed(DONE) == [] and t.feed(chunk({"content": "late"})) == []  # ended
    return out


def framed(events: list[dict[str, Any]]) -> list[bytes]:
    """The events as the Responses wire's parser frames them for the client."""
    parser = WIRE.parser(parse(stream=True), assemble=True)
    out = [parser.feed(orjson.dumps(ev), lambda u: 0.01) for ev in events]
    return [ev for ev in out if ev is not None]


def test_a_text_stream_becomes_the_responses_events() -> None:
    events = translate(TEXT_STREAM)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    created = events[0]["response"]
    assert created["status"] == "in_progress" and created["output"] == []
    rid = created["id"]
    assert all(e["response"]["id"] == rid for e in events if "response" in e)
    assert events[2]["item"]["content"] == [] and events[2]["item"]["status"] == "in_progress"
    assert [e["delta"] for e in events if e["type"] == "response.output_text.delta"] == [
        "Hel",
        "lo!",
    ]
    assert events[6]["text"] == "Hello!"
    done = events[-1]["response"]
    assert done["status"] == "completed" and done["output"][0]["content"][0]["text"] == "Hello!"
    assert done["usage"]["input_tokens"] == 120 and done["usage"]["output_tokens"] == 30
    # The whole answer of the same chat completion names the same response.
    whole = answer(
        completion({"content": "Hello!"})
        .replace(b"chatcmpl-abc", b"chatcmpl-s1")
        .replace(b"1700000000", b"1700000001")
    )
    assert whole["id"] == rid and whole["output"][0]["id"] == done["output"][0]["id"]


def test_the_wire_reads_the_translated_stream() -> None:
    events = translate(TEXT_STREAM)
    parser = WIRE.parser(parse(stream=True), assemble=True)
    for ev in events:
        parser.feed(orjson.dumps(ev), lambda u: 0.01)
    assert parser.usage == Usage(120, 30, 64, 5, 8) and parser.chunks == 2
    assert WIRE.end_of(orjson.dumps(events[-1])) == "done"
    assert not WIRE.first_content(orjson.dumps(events[0]))
    assert WIRE.first_content(orjson.dumps(events[2]))
    stored = parser.assembled()
    assert stored is not None and WIRE.replay(stored, True) is not None  # cacheable as is


def test_a_tool_stream_opens_an_item_per_call() -> None:
    events = translate(TOOL_STREAM, tools=[WEATHER])
    kinds = [e["type"] for e in events]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    first = events[2]["item"]
    assert (first["type"], first["call_id"], first["name"], first["arguments"]) == (
        "function_call",
        "call_a",
        "get_weather",
        "",
    )
    assert events[7]["arguments"] == '{"city":"Paris"}' and events[7]["name"] == "get_weather"
    output = events[-1]["response"]["output"]
    assert [(i["call_id"], i["arguments"], i["status"]) for i in output] == [
        ("call_a", '{"city":"Paris"}', "completed"),
        ("call_b", '{"city":"Rome"}', "completed"),
    ]


def test_text_then_a_call_closes_the_message_first() -> None:
    payloads = [
        chunk({"role": "assistant", "content": "Checking."}),
        chunk(tool_delta(0, id="call_a", function={"name": "get_weather", "arguments": "{}"})),
        chunk({}, "tool_calls"),
        DONE,
    ]
    kinds = [e["type"] for e in translate(payloads)]
    assert kinds.index("response.output_item.done") < kinds.index("response.output_item.added", 3)


def test_a_stream_cut_at_the_cap_ends_incomplete() -> None:
    events = translate(
        [chunk({"content": "Once"}), chunk({}, "length"), chunk(None, usage=CHAT_USAGE), DONE]
    )
    last = events[-1]
    assert last["type"] == "response.incomplete"
    assert last["response"]["status"] == "incomplete"
    assert last["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert WIRE.end_of(orjson.dumps(last)) == "done"


def test_an_empty_stream_still_answers_one_message() -> None:
    events = translate([chunk({"role": "assistant", "content": ""}), chunk({}, "stop"), DONE])
    output = events[-1]["response"]["output"]
    assert len(output) == 1 and output[0]["content"][0]["text"] == ""
    assert "usage" not in events[-1]["response"]  # chat sent none: accounting estimates it


def test_a_chat_error_becomes_response_failed() -> None:
    error = orjson.dumps(
        {"error": {"message": "overloaded", "type": "server_error", "code": "overloaded"}}
    )
    events = translate([chunk({"content": "Hi"}), error])
    last = events[-1]
    assert last["type"] == "response.failed"
    assert last["response"]["status"] == "failed"
    assert last["response"]["error"] == {"code": "server_error", "message": "overloaded"}
    assert WIRE.end_of(orjson.dumps(last)) == "error"
    odd = orjson.dumps({"error": {"message": ["x"], "code": {"n": 1}}})
    assert translate([odd])[-1]["response"]["error"] == {
        "code": "server_error",
        "message": "The upstream failed.",
    }
    limited = orjson.dumps({"error": {"message": "slow down", "code": "rate_limit_exceeded"}})
    assert translate([limited])[-1]["response"]["error"]["code"] == "rate_limit_exceeded"
    assert [e["type"] for e in translate([limited])][:2] == [
        "response.created",
        "response.in_progress",
    ]


def test_openai_python_follows_a_translated_text_stream() -> None:
    seen, final = sdk_stream(framed(translate(TEXT_STREAM)))
    assert final.output_text == "Hello!" and final.status == "completed"
    assert final.usage.input_tokens == 120
    deltas = [e.delta for e in seen if e.type == "response.output_text.delta"]
    assert deltas == ["Hel", "lo!"]


def test_openai_python_follows_a_translated_tool_stream() -> None:
    events = framed(translate(TOOL_STREAM, tools=[WEATHER]))
    _, final = sdk_stream(events, tools=[WEATHER])
    calls = [(o.call_id, o.arguments) for o in final.output if o.type == "function_call"]
    assert calls == [("call_a", '{"city":"Paris"}'), ("call_b", '{"city":"Rome"}')]
    assert frames(list(events))[-1][1]["x_tollgate_cost_usd"] == 0.01


def test_odd_items_the_session_put_back_are_a_400_not_a_500() -> None:
    req = parse()
    odd = dataclasses.replace(
        req, body={**req.body, "input": [{"type": "message", "role": "user"}]}
    )
    with pytest.raises(ApiError) as info:
        TRANSLATION.request(odd)
    assert (info.value.status, info.value.param) == (400, "input")


def test_odd_chunks_do_not_break_the_stream() -> None:
    odd = [
        b"not json",
        b"[1]",
        orjson.dumps({**HEAD, "choices": 5}),
        orjson.dumps({**HEAD, "choices": [3]}),
        chunk({"tool_calls": 4}),
    ]
    events = translate([*odd, chunk({"content": "ok"}, "stop"), DONE])
    assert [e["type"] for e in events][:2] == ["response.created", "response.in_progress"]
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "ok"
