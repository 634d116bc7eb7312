"""The Responses API against OpenAI's own OpenAPI document, without a process.

Every Response and every stream event tollgate makes itself is validated against the
document's ``Response`` and ``ResponseStreamEvent`` (each event also against its own
schema, found by its ``type``): the Response and the events translated from Chat
Completions, a cached Response replayed, the error event of a stream that broke. The
requests the cases send are checked against ``CreateResponse``, and what they become
for a chat upstream against ``CreateChatCompletionRequest``.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import orjson
import pytest

from tests.contract.openai_contract import _document, assert_valid, require_openapi
from tollgate_orchestrator.dialects.responses import DIALECT, WIRE
from tollgate_orchestrator.errors import ApiError
from tollgate_orchestrator.sse import DONE
from tollgate_orchestrator.translate.responses_chat import TRANSLATION
from tollgate_orchestrator.types import LlmRequest
from tollgate_orchestrator.validation import Limits

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}
HEAD = {
    "id": "chatcmpl-c1",
    "object": "chat.completion.chunk",
    "created": 1700000000,
    "model": "gpt-4o-mini",
}
USAGE = {
    "prompt_tokens": 50,
    "completion_tokens": 12,
    "total_tokens": 62,
    "prompt_tokens_details": {"cached_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 0},
}
CALLS = [
    {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
    },
    {
        "id": "call_2",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
    },
]
# name -> (request fields, the chat message answered, its finish reason)
CASES: dict[str, tuple[dict[str, Any], dict[str, Any], str]] = {
    "text": (
        {"instructions": "Be brief.", "temperature": 0},
        {"content": "Three rivers: Rhine, Danube, Loire."},
        "stop",
    ),
    "tools": (
        {"tools": [WEATHER], "tool_choice": "required", "parallel_tool_calls": True},
        {"content": None, "tool_calls": CALLS},
        "tool_calls",
    ),
    "text_and_call": (
        {"tools": [WEATHER]},
        {"content": "Checking.", "tool_calls": CALLS[:1]},
        "tool_calls",
    ),
    "refusal": ({}, {"content": None, "refusal": "I can't help with that."}, "stop"),
    "incomplete": ({"max_output_tokens": 16}, {"content": "Once upon a time"}, "length"),
    "filtered": ({}, {"content": ""}, "content_filter"),
    "json": (
        {
            "text": {
                "format": {
                    "type": "json_schema",
                    "name": "w",
                    "schema": WEATHER["parameters"],
                    "strict": True,
                }
            }
        },
        {"content": '{"city": "Oslo"}'},
        "stop",
    ),
    "echoes": (
        {
            "metadata": {"team": "a"},
            "store": False,
            "reasoning": {"effort": "low"},
            "top_p": 0.5,
            "user": "end-user",
            "safety_identifier": "s-1",
            "prompt_cache_key": "k",
            "service_tier": "auto",
            "truncation": "disabled",
            "include": ["reasoning.encrypted_content"],
            "text": {"format": {"type": "text"}, "verbosity": "low"},
        },
        {"content": "ok"},
        "stop",
    ),
}


@pytest.fixture(scope="module", autouse=True)
def openapi_present() -> None:
    require_openapi("the Responses contract")


@cache
def schema_of_event() -> dict[str, str]:
    """Each event ``type`` -> the name of its schema in ``ResponseStreamEvent``."""
    schemas = _document()["components"]["schemas"]
    out = {}
    for ref in schemas["ResponseStreamEvent"]["anyOf"]:
        name = ref["$ref"].rsplit("/", 1)[1]
        out[schemas[name]["properties"]["type"]["enum"][0]] = name
    return out


def check_events(events: list[dict[str, Any]]) -> None:
    for ev in events:
        assert ev["type"] in schema_of_event(), f"not a Responses event: {ev['type']}"
        assert_valid(schema_of_event()[ev["type"]], ev)
        assert_valid("ResponseStreamEvent", ev)
    assert [ev["sequence_number"] for ev in events] == list(range(len(events)))


def request(case: str, stream: bool) -> LlmRequest:
    fields = CASES[case][0]
    body = {"model": "gpt-4o-mini", "input": [{"role": "user", "content": "hello"}], **fields}
    if stream:
        body["stream"] = True
    assert_valid("CreateResponse", body)
    return DIALECT.parse(orjson.dumps(body), Limits())


def chat_answer(case: str) -> bytes:
    _, message, finish = CASES[case]
    choice = {
        "index": 0,
        "message": {"role": "assistant", "refusal": None, **message},
        "finish_reason": finish,
        "logprobs": None,
    }
    body = {**HEAD, "object": "chat.completion", "choices": [choice], "usage": USAGE}
    assert_valid("CreateChatCompletionResponse", body)
    return orjson.dumps(body)


def chat_stream(case: str) -> list[bytes]:
    _, message, finish = CASES[case]
    out = [
        {
            **HEAD,
            "choices": [
                {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
            ],
        }
    ]
    for key in ("content", "refusal"):
        text = message.get(key) or ""
        for i in range(0, len(text), 7):
            out.append(
                {
                    **HEAD,
                    "choices": [
                        {"index": 0, "delta": {key: text[i : i + 7]}, "finish_reason": None}
                    ],
                }
            )
    for n, call in enumerate(message.get("tool_calls") or ()):
        args = call["function"]["arguments"]
        first = {
            "index": n,
            "id": call["id"],
            "type": "function",
            "function": {"name": call["function"]["name"], "arguments": ""},
        }
        out.append(
            {
                **HEAD,
                "choices": [{"index": 0, "delta": {"tool_calls": [first]}, "finish_reason": None}],
            }
        )
        for i in range(0, len(args), 5):
            piece = {"index": n, "function": {"arguments": args[i : i + 5]}}
            out.append(
                {
                    **HEAD,
                    "choices": [
                        {"index": 0, "delta": {"tool_calls": [piece]}, "finish_reason": None}
                    ],
                }
            )
    out.append({**HEAD, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    out.append({**HEAD, "choices": [], "usage": USAGE})
    for chunk in out:
        assert_valid("CreateChatCompletionStreamResponse", chunk)
    return [orjson.dumps(c) for c in out] + [DONE]


def relayed(payloads: list[bytes]) -> list[dict[str, Any]]:
    """The payloads as the client gets them: framed by the wire's parser, cost added."""
    parser = WIRE.parser(request("text", True), assemble=True)
    out = []
    for p in payloads:
        framed = parser.feed(p, lambda u: 0.0001)
        assert framed is not None
        head, data = framed.split(b"\n")[:2]
        ev = orjson.loads(data[6:])
        assert head == b"event: " + ev["type"].encode()
        out.append(ev)
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_the_request_for_a_chat_upstream_is_a_chat_request(case: str) -> None:
    for stream in (False, True):
        assert_valid("CreateChatCompletionRequest", TRANSLATION.request(request(case, stream)).body)


@pytest.mark.parametrize("case", list(CASES))
def test_a_translated_answer_is_a_response(case: str) -> None:
    raw = TRANSLATION.answer(chat_answer(case), request(case, False))
    assert raw is not None
    assert_valid("Response", orjson.loads(raw))


@pytest.mark.parametrize("case", list(CASES))
def test_a_translated_stream_is_responses_events(case: str) -> None:
    t = TRANSLATION.stream(request(case, True))
    payloads = [out for p in chat_stream(case) for out in t.feed(p)]
    events = relayed(payloads)
    check_events(events)
    assert events[-1]["type"] in ("response.completed", "response.incomplete")


@pytest.mark.parametrize("case", list(CASES))
def test_a_replayed_answer_is_responses_events(case: str) -> None:
    raw = TRANSLATION.answer(chat_answer(case), request(case, False))
    assert raw is not None
    replayed = WIRE.replay(raw, include_usage=True)
    assert replayed is not None
    check_events([orjson.loads(ev.split(b"\n")[1][6:]) for ev in replayed])


def test_a_native_response_with_reasoning_replays_to_the_contract() -> None:
    response = {
        "id": "resp_n1",
        "object": "response",
        "created_at": 1700000000,
        "status": "completed",
        "completed_at": 1700000001,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "model": "o4-mini",
        "output": [
            {
                "type": "reasoning",
                "id": "rs_1",
                "summary": [{"type": "summary_text", "text": "Think."}],
                "encrypted_content": "gAAAA",
            },
            {
                "type": "message",
                "id": "msg_1",
                "status": "completed",
                "role": "assistant",
                "content": [
                    {"type": "output_text", "text": "Done.", "annotations": [], "logprobs": []}
                ],
            },
        ],
        "parallel_tool_calls": True,
        "metadata": {},
        "tool_choice": "auto",
        "tools": [],
        "temperature": 1.0,
        "top_p": 1.0,
        "usage": {
            "input_tokens": 10,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": 20,
            "output_tokens_details": {"reasoning_tokens": 15},
            "total_tokens": 30,
        },
    }
    assert_valid("Response", response)
    replayed = WIRE.replay(orjson.dumps(response), include_usage=True)
    assert replayed is not None
    check_events([orjson.loads(ev.split(b"\n")[1][6:]) for ev in replayed])


def test_a_chat_error_is_a_failed_response() -> None:
    t = TRANSLATION.stream(request("text", True))
    payloads = [
        *t.feed(chat_stream("text")[1]),
        *t.feed(b'{"error": {"message": "overloaded", "type": "server_error", "code": null}}'),
    ]
    events = relayed(payloads)
    check_events(events)
    assert events[-1]["type"] == "response.failed"


def test_a_stream_that_broke_ends_with_an_error_event() -> None:
    t = TRANSLATION.stream(request("text", True))
    parser = WIRE.parser(request("text", True), assemble=False)
    framed = [parser.feed(p, lambda u: 0.0) for p in t.feed(chat_stream("text")[1])]
    framed.append(parser.error("The stream failed after it started.", "upstream_stream_error", 0.0))
    events = [orjson.loads(ev.split(b"\n")[1][6:]) for ev in framed if ev is not None]
    assert events[-1]["type"] == "error"
    check_events(events)


def test_a_bad_request_is_an_openai_error() -> None:
    with pytest.raises(ApiError) as info:
        DIALECT.parse(
            b'{"model": "m", "input": [{"role": "user", "content": [{"type": "text"}]}]}', Limits()
        )
    assert_valid("ErrorResponse", orjson.loads(DIALECT.error_body(info.value)))
    hosted = DIALECT.parse(
        b'{"model": "m", "input": "hi", "tools": [{"type": "web_search"}]}', Limits()
    )
    with pytest.raises(ApiError) as info:
        TRANSLATION.request(hosted)
    assert_valid("ErrorResponse", orjson.loads(DIALECT.error_body(info.value)))
