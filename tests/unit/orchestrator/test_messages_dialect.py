"""The Anthropic Messages dialect and wire: the request checked (a 400 in Anthropic's shape
naming the field), usage in OpenAI's convention, the stream framed and assembled, a cached
answer replayed. Shapes are checked with anthropic-python's own models."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from jsonschema import Draft202012Validator
from pydantic import TypeAdapter

from tollgate_common.cachekey import cache_key as chat_cache_key
from tollgate_orchestrator.accounting import Usage
from tollgate_orchestrator.dialects import DIALECTS, WIRES
from tollgate_orchestrator.dialects.messages import (
    DIALECT,
    WIRE,
    count_tokens,
    count_tokens_openapi,
    error_body,
    usage_of,
)
from tollgate_orchestrator.errors import ApiError, exhausted, model_not_found
from tollgate_orchestrator.sse import COST_FIELD
from tollgate_orchestrator.types import MESSAGES_API, LlmRequest
from tollgate_orchestrator.validation import Limits

LIMITS = Limits(max_messages=8, max_tokens_cap=4096)
EVENT = TypeAdapter(RawMessageStreamEvent)
TOOL = {
    "name": "get_weather",
    "description": "Current weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def body(**extra: Any) -> dict[str, Any]:
    return {
        "model": "auto",
        "max_tokens": 256,
        "messages": [{"role": "user", "content": "Name three rivers."}],
        **extra,
    }


def parse(data: dict[str, Any]) -> LlmRequest:
    return DIALECT.parse(orjson.dumps(data), LIMITS)


def refused(data: Any) -> ApiError:
    with pytest.raises(ApiError) as info:
        DIALECT.parse(orjson.dumps(data), LIMITS)
    assert info.value.status == 400
    return info.value


def test_registered_by_path_and_api() -> None:
    assert DIALECTS["/v1/messages"] is DIALECT
    assert WIRES[MESSAGES_API] is WIRE
    assert (DIALECT.name, DIALECT.api, WIRE.path, WIRE.done_event) == (
        "messages",
        MESSAGES_API,
        "messages",
        b"",
    )
    assert WIRE.deterministic is False


# --- parse ---------------------------------------------------------------------------------


def test_features_of_a_conversation_with_tools() -> None:
    req = parse(
        body(
            system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
            messages=[
                {"role": "user", "content": "What is the weather in Paris?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "Look it up.", "signature": "sig"},
                        {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {}},
                    ],
                },
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "21 C"}],
                },
            ],
            tools=[TOOL],
            stream=True,
            top_k=5,
            metadata={"user_id": "u-1", "other": "dropped"},
            unknown_field="dropped",
        )
    )
    assert req.api == MESSAGES_API
    assert req.model == "auto" and req.max_tokens == 256 and req.n == 1
    assert req.stream and req.include_usage and req.has_tools and not req.json_mode
    # A turn of tool results only keeps the question the tool loop answers.
    assert req.last_user_text == "What is the weather in Paris?"
    assert req.system_text == "Be brief."
    assert req.turns == 4  # three turns and the system prompt
    assert "unknown_field" not in req.body
    assert req.body["metadata"] == {"user_id": "u-1"}
    assert req.body["top_k"] == 5
    # Thinking is kept for a native upstream.
    assert req.body["messages"][1]["content"][0]["type"] == "thinking"


def test_output_config_asks_for_json_and_is_part_of_the_answer() -> None:
    fmt = {"type": "json_schema", "schema": {"type": "object"}}
    req = parse(body(temperature=0, output_config={"effort": "low", "format": fmt}))
    assert req.json_mode and req.body["output_config"]["effort"] == "low"
    assert not parse(body(output_config={"effort": "high"})).json_mode
    plain = parse(body(temperature=0))
    assert WIRE.cache_key("m", req, "t") != WIRE.cache_key("m", plain, "t")
    # The request-wide cache_control is kept (a native upstream caches by it) and is no
    # part of the answer.
    cached = parse(body(temperature=0, cache_control={"type": "ephemeral"}))
    assert cached.body["cache_control"] == {"type": "ephemeral"}
    assert WIRE.cache_key("m", cached, "t") == WIRE.cache_key("m", plain, "t")


def test_the_estimate_counts_images_and_tools_and_count_tokens_says_it() -> None:
    plain = parse(body())
    image = {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}
    with_image = parse(
        body(
            messages=[
                {"role": "user", "content": [{"type": "text", "text": "Name three rivers."}, image]}
            ]
        )
    )
    with_tools = parse(body(tools=[TOOL]))
    assert with_image.est_prompt_tokens > plain.est_prompt_tokens + 1000
    assert with_tools.est_prompt_tokens > plain.est_prompt_tokens + 300
    counted = orjson.loads(count_tokens(orjson.dumps(body(tools=[TOOL])), LIMITS))
    assert counted == {"input_tokens": with_tools.est_prompt_tokens}


def test_count_tokens_needs_no_max_tokens_but_checks_the_prompt() -> None:
    data = body()
    del data["max_tokens"]
    assert orjson.loads(count_tokens(orjson.dumps(data), LIMITS))["input_tokens"] > 0
    with pytest.raises(ApiError) as info:
        count_tokens(orjson.dumps({**data, "messages": [{"role": "bot", "content": "x"}]}), LIMITS)
    assert info.value.param == "messages[0].role"
    with pytest.raises(ApiError):
        count_tokens(b"{not json", LIMITS)
    assert "requestBody" in count_tokens_openapi()


def test_integral_floats_are_integers() -> None:
    req = parse(body(max_tokens=128.0, thinking={"type": "enabled", "budget_tokens": 2048.0}))
    assert req.max_tokens == 128 and isinstance(req.body["max_tokens"], int)
    assert isinstance(req.body["thinking"]["budget_tokens"], int)


BAD: list[tuple[dict[str, Any], str]] = [
    ({"max_tokens": None}, "max_tokens"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": 5000}, "max_tokens"),
    ({"model": ""}, "model"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "user", "content": "x"}] * 9}, "messages"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user"}]}, "messages[0].content"),
    (
        {
            "messages": [
                {"role": "user", "content": "a"},
                {"role": "user", "content": [{"type": "x"}]},
            ]
        },
        "messages[1].content[0].type",
    ),
    (
        {"messages": [{"role": "user", "content": [{"type": "text"}]}]},
        "messages[0].content[0].text",
    ),
    (
        {"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "ftp"}}]}]},
        "messages[0].content[0].source.type",
    ),
    (  # a source type that is not a string (a list is unhashable: this was a 500)
        {
            "messages": [
                {"role": "user", "content": [{"type": "document", "source": {"type": ["text"]}}]}
            ]
        },
        "messages[0].content[0].source.type",
    ),
    (
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/bmp", "data": "AA"},
                        }
                    ],
                }
            ]
        },
        "messages[0].content[0].source.media_type",
    ),
    (
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "tool_use", "id": "a", "name": "b", "input": {}}],
                }
            ]
        },
        "messages[0].content[0].type",
    ),
    (
        {
            "messages": [
                {"role": "assistant", "content": [{"type": "tool_use", "id": "a", "name": "b"}]}
            ]
        },
        "messages[0].content[0].input",
    ),
    (
        {
            "messages": [
                {"role": "assistant", "content": [{"type": "tool_result", "tool_use_id": "a"}]}
            ]
        },
        "messages[0].content[0].type",
    ),
    (
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "a",
                            "content": [{"type": "tool_use"}],
                        }
                    ],
                }
            ]
        },
        "messages[0].content[0].content[0].type",
    ),
    ({"system": 3}, "system"),
    ({"system": [{"type": "image"}]}, "system[0].type"),
    ({"tools": [{"name": "a b", "input_schema": {}}]}, "tools[0].name"),
    ({"tools": [{"name": "a"}]}, "tools[0].input_schema"),
    ({"tools": [{"type": "function", "function": {"name": "a"}}]}, "tools[0].type"),
    ({"tool_choice": {"type": "required"}}, "tool_choice.type"),
    ({"tool_choice": {"type": "tool"}}, "tool_choice.name"),
    (
        {"tool_choice": {"type": "auto", "disable_parallel_tool_use": 1}},
        "tool_choice.disable_parallel_tool_use",
    ),
    ({"temperature": 1.5}, "temperature"),
    ({"top_p": -0.1}, "top_p"),
    ({"top_k": -1}, "top_k"),
    ({"stop_sequences": "END"}, "stop_sequences"),
    ({"stream": "yes"}, "stream"),
    ({"metadata": {"user_id": 7}}, "metadata.user_id"),
    ({"thinking": {"type": "enabled", "budget_tokens": 100}}, "thinking.budget_tokens"),
    ({"thinking": {"type": "sometimes"}}, "thinking.type"),
    ({"service_tier": "priority"}, "service_tier"),
    ({"output_config": {"effort": "extreme"}}, "output_config.effort"),
    ({"output_config": {"format": {"type": "json_object"}}}, "output_config.format.type"),
    ({"output_config": {"format": {"type": "json_schema"}}}, "output_config.format.schema"),
    ({"cache_control": "ephemeral"}, "cache_control"),
    # Lists where a string belongs: refused by name, never an unhashable-type 500.
    ({"tool_choice": {"type": ["auto"]}}, "tool_choice.type"),
    ({"thinking": {"type": ["enabled"]}}, "thinking.type"),
    ({"service_tier": ["auto"]}, "service_tier"),
    ({"output_config": {"effort": ["low"]}}, "output_config.effort"),
    (
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": ["image/png"], "data": "A"},
                        }
                    ],
                }
            ]
        },
        "messages[0].content[0].source.media_type",
    ),
]


@pytest.mark.parametrize(("change", "param"), BAD, ids=[p for _, p in BAD])
def test_bad_input_is_a_400_in_anthropics_shape_naming_the_field(
    change: dict[str, Any], param: str
) -> None:
    data = {k: v for k, v in {**body(), **change}.items() if v is not None}
    err = refused(data)
    assert err.param == param
    out = orjson.loads(DIALECT.error_body(err))
    assert out["type"] == "error"
    assert out["error"]["type"] == "invalid_request_error"
    dotted = param.replace("[", ".").replace("]", "")
    assert out["error"]["message"].startswith(f"{dotted}: "), out


def test_a_body_that_is_not_an_object_or_not_json() -> None:
    for raw in (b"[1]", b"{", b"\xff"):
        with pytest.raises(ApiError) as info:
            DIALECT.parse(raw, LIMITS)
        assert info.value.status == 400
        assert (
            orjson.loads(DIALECT.error_body(info.value))["error"]["type"] == "invalid_request_error"
        )


def test_server_tools_and_server_blocks_are_kept_for_a_native_upstream() -> None:
    search = {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}
    block = {"type": "server_tool_use", "id": "s1", "name": "web_search", "input": {"q": "x"}}
    req = parse(
        body(
            tools=[search, TOOL],
            messages=[
                {"role": "user", "content": "News?"},
                {"role": "assistant", "content": [block]},
                {"role": "user", "content": "More."},
            ],
        )
    )
    assert req.body["tools"][0] == search
    assert req.body["messages"][1]["content"][0] == block


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "overloaded_error"),
        (504, "timeout_error"),
        (529, "overloaded_error"),
    ],
)
def test_error_types_by_status(status: int, kind: str) -> None:
    out = orjson.loads(error_body(ApiError(status, "no")))
    assert out == {"type": "error", "error": {"type": kind, "message": "no"}}


def test_pipeline_errors_render_in_anthropics_shape() -> None:
    out = orjson.loads(error_body(model_not_found("claude-x")))
    assert out["error"]["type"] == "not_found_error"
    assert out["error"]["message"].startswith("model: ")
    assert orjson.loads(error_body(exhausted("rate_limit")))["error"]["type"] == "rate_limit_error"


def test_authorization_takes_x_api_key_or_bearer() -> None:
    auth = DIALECT.authorization
    assert auth({"x-api-key": "k1"}) == "Bearer k1"
    assert auth({"X-Api-Key": "k1"}) == "Bearer k1"
    assert auth({"authorization": "Bearer k2"}) == "Bearer k2"
    assert auth({"x-api-key": "k1", "authorization": "Bearer k2"}) == "Bearer k1"
    assert auth({"anthropic-version": "2023-06-01"}) is None


def test_openapi_fragment_describes_the_request() -> None:
    op = DIALECT.openapi(LIMITS)
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    Draft202012Validator.check_schema(schema)
    assert schema["required"] == ["model", "max_tokens", "messages"]
    assert schema["properties"]["max_tokens"]["maximum"] == 4096
    assert {"200", "400", "401", "429"} <= set(op["responses"])
    assert "x-api-key" in {p["name"] for p in op["parameters"]}
    # What parse accepts, the schema accepts; a few things parse refuses, it refuses too.
    ok = body(system="Be brief.", tools=[TOOL], tool_choice={"type": "auto"}, stream=True)
    parse(ok)
    assert Draft202012Validator(schema).is_valid(ok)
    for change, _ in BAD[:6]:
        data = {k: v for k, v in {**body(), **change}.items() if v is not None}
        assert not Draft202012Validator(schema).is_valid(data), change
    counted = count_tokens_openapi(LIMITS)["requestBody"]["content"]["application/json"]
    Draft202012Validator.check_schema(counted["schema"])
    assert "max_tokens" not in counted["schema"]["required"]


# --- the wire ------------------------------------------------------------------------------


def test_payload_replaces_the_model_and_says_stream() -> None:
    req = parse(body(stream=True))
    assert orjson.loads(WIRE.payload(req, "claude-sonnet-4"))["model"] == "claude-sonnet-4"
    assert orjson.loads(WIRE.payload(req, "m"))["stream"] is True
    assert "stream" not in orjson.loads(WIRE.payload(parse(body(stream=False)), "m"))


def test_cache_key_covers_what_changes_the_answer_only() -> None:
    base = parse(body(temperature=0))
    key = WIRE.cache_key("m", base, "t")
    for change in (
        {"system": "Be brief."},
        {"top_k": 3},
        {"stop_sequences": ["END"]},
        {"thinking": {"type": "enabled", "budget_tokens": 2048}},
        {"max_tokens": 100},
        {"tools": [TOOL]},
        {"service_tier": "standard_only"},
    ):
        assert WIRE.cache_key("m", parse(body(temperature=0, **change)), "t") != key, change
    assert WIRE.cache_key("m", parse(body(temperature=0, stream=True)), "t") == key
    assert WIRE.cache_key("m", parse(body(temperature=0, metadata={"user_id": "u"})), "t") == key
    assert WIRE.cache_key("other", base, "t") != key
    assert WIRE.cache_key("m", base, "t2") != key
    # Never the key of a chat body with the same fields.
    assert chat_cache_key("m", base.body, "t") != key


USAGE = {
    "input_tokens": 10,
    "cache_read_input_tokens": 5,
    "cache_creation_input_tokens": 3,
    "output_tokens": 7,
    "output_tokens_details": {"thinking_tokens": 2},
}
MESSAGE = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4",
    "content": [
        {"type": "thinking", "thinking": "The user wants weather.", "signature": "c2ln"},
        {
            "type": "text",
            "text": "Let me check the weather in Paris for you right now, please wait.",
        },
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": USAGE,
}


def test_usage_of_a_message_includes_the_prompt_cache() -> None:
    assert usage_of(USAGE) == Usage(prompt=18, completion=7, cached=5, reasoning=2, cache_write=3)
    assert WIRE.answer(orjson.dumps(MESSAGE)) == usage_of(USAGE)
    Message.model_validate(MESSAGE)  # the fixture is a real Message


def test_odd_answers_are_not_answers() -> None:
    for raw in (b"[]", b"nope", b'{"type":"message"}', b'{"type":"message","content":[1]}'):
        assert WIRE.answer(raw) is None, raw


def test_end_of_and_first_content() -> None:
    assert WIRE.end_of(b'{"type":"message_stop"}') == "done"
    assert (
        WIRE.end_of(b'{"type":"error","error":{"type":"overloaded_error","message":"x"}}')
        == "error"
    )
    delta = {"type": "text_delta", "text": "message_stop error"}
    text = orjson.dumps({"type": "content_block_delta", "index": 0, "delta": delta})
    assert WIRE.end_of(text) is None
    assert not WIRE.first_content(b'{"type":"message_start","message":{}}')
    assert not WIRE.first_content(b'{"type":"ping"}')
    assert WIRE.first_content(b'{"type":"content_block_start","index":0,"content_block":{}}')


def events_of(stream: list[bytes]) -> list[tuple[str, dict[str, Any]]]:
    """Framed events as (event name, data), each checked against the SDK's event model."""
    out = []
    for ev in stream:
        head, _, data = ev.partition(b"\n")
        assert head.startswith(b"event: ") and data.startswith(b"data: ") and ev.endswith(b"\n\n")
        name, obj = head[7:].decode(), orjson.loads(data[6:])
        assert obj["type"] == name
        if name not in ("error", "ping"):  # the SDK skips both before parsing
            EVENT.validate_python({k: v for k, v in obj.items() if k != COST_FIELD})
        out.append((name, obj))
    return out


def test_replay_is_a_stream_that_assembles_the_same_message() -> None:
    events = WIRE.replay(orjson.dumps(MESSAGE), include_usage=True)
    assert events is not None
    parsed = events_of(events)
    names = [n for n, _ in parsed]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert names.count("content_block_start") == names.count("content_block_stop") == 3
    deltas = {o["delta"]["type"] for n, o in parsed if n == "content_block_delta"}
    assert deltas == {"text_delta", "thinking_delta", "signature_delta", "input_json_delta"}
    delta = dict(parsed)["message_delta"]
    assert delta[COST_FIELD] == 0.0 and delta["delta"]["stop_reason"] == "tool_use"
    # Fed back through the parser (as a relayed upstream stream), it is the same answer.
    parser = WIRE.parser(parse(body(stream=True)), assemble=True)
    for ev in events:
        payload = ev.split(b"data: ", 1)[1][:-2]
        parser.feed(payload, lambda u: 0.0)
    again = orjson.loads(parser.assembled() or b"null")
    assert again["content"] == MESSAGE["content"]
    assert again["stop_reason"] == "tool_use" and again["id"] == "msg_1"
    assert parser.usage == usage_of(USAGE)
    Message.model_validate(again)


def test_odd_cached_entries_replay_as_a_miss() -> None:
    for stored in (b"not json", b"[]", b'{"type":"message","content":[3]}', b'{"type":"x"}'):
        assert WIRE.replay(stored, include_usage=True) is None, stored


def native_stream() -> list[dict[str, Any]]:
    """What Anthropic sends for a tool call, the tool's input in pieces."""
    start_usage = {
        "input_tokens": 10,
        "cache_read_input_tokens": 5,
        "cache_creation_input_tokens": 3,
        "output_tokens": 1,
    }
    return [
        {
            "type": "message_start",
            "message": {
                "id": "msg_2",
                "type": "message",
                "role": "assistant",
                "model": "claude-sonnet-4",
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": start_usage,
            },
        },
        {"type": "ping"},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": "Checking"},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": " now."},
        },
        {"type": "content_block_stop", "index": 0},
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {
                "type": "tool_use",
                "id": "toolu_2",
                "name": "get_weather",
                "input": {},
            },
        },
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": ""},
        },
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": '{"city": "Pa'},
        },
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": 'ris"}'},
        },
        {"type": "content_block_stop", "index": 1},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {"output_tokens": 9},
        },
        {"type": "message_stop"},
    ]


def test_a_native_stream_is_framed_priced_and_assembled() -> None:
    parser = WIRE.parser(parse(body(stream=True)), assemble=True)
    priced: list[Usage] = []

    def price(u: Usage) -> float:
        priced.append(u)
        return 0.25

    out: list[bytes] = []
    for i, ev in enumerate(native_stream()):
        framed = parser.feed(orjson.dumps(ev), price)
        assert framed is not None
        out.append(framed)
        if i == 4:  # mid-stream, before message_delta: the start's prompt, the deltas seen
            assert parser.usage == Usage(prompt=18, completion=2, cached=5, cache_write=3)
    parsed = events_of(out)
    assert [n for n, _ in parsed][1] == "ping"
    assert dict(parsed)["message_delta"][COST_FIELD] == 0.25
    assert priced == [Usage(prompt=18, completion=9, cached=5, cache_write=3)]
    assert parser.usage == priced[0]
    assert parser.chunks == 5
    message = orjson.loads(parser.assembled() or b"null")
    assert message["content"] == [
        {"type": "text", "text": "Checking now."},
        {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Paris"}},
    ]
    assert message["usage"]["output_tokens"] == 9 and message["stop_reason"] == "tool_use"
    Message.model_validate(message)
    assert WIRE.answer(orjson.dumps(message)) == priced[0]


def test_a_stream_without_counts_is_left_to_the_relays_estimate() -> None:
    req = parse(body(stream=True))
    parser = WIRE.parser(req, assemble=False)
    start = native_stream()[0]
    start["message"]["usage"] = {"input_tokens": 0, "output_tokens": 0}
    parser.feed(orjson.dumps(start), lambda u: 0.0)
    parser.feed(orjson.dumps(native_stream()[3]), lambda u: 0.0)
    assert parser.usage is None  # the relay estimates
    # A message_delta without input counts is priced as the relay would account it.
    seen: list[Usage] = []
    end = {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn"},
        "usage": {"output_tokens": 0},
    }

    def price(u: Usage) -> float:
        seen.append(u)
        return 0.0

    parser.feed(orjson.dumps(end), price)
    assert seen == [Usage(prompt=req.est_prompt_tokens, completion=1)]
    assert parser.usage == seen[0]
    assert parser.assembled() is None  # not asked to assemble


def test_garbage_is_forwarded_unnamed_and_errors_are_anthropic_shaped() -> None:
    parser = WIRE.parser(parse(body(stream=True)), assemble=True)
    assert parser.feed(b"not json", lambda u: 0.0) == b"data: not json\n\n"
    evil = parser.feed(b'{"type":"evil\\nevent: x"}', lambda u: 0.0)
    assert evil is not None and evil.startswith(b"data: ")
    ev = parser.error("The upstream stream failed.", "upstream_stream_error", 0.5)
    [(name, obj)] = events_of([ev])
    assert name == "error"
    assert obj["error"] == {"type": "api_error", "message": "The upstream stream failed."}
    assert obj[COST_FIELD] == 0.5


def test_a_versioned_server_tool_needs_its_name_and_an_mcp_toolset_does_not() -> None:
    """Anthropic refuses a web_search_20250305 without ``name``; refuse it here, first."""
    err = refused(body(tools=[{"type": "web_search_20250305"}]))
    assert err.param == "tools[0].name"
    mcp = {"type": "mcp_toolset", "mcp_server_name": "docs"}
    assert parse(body(tools=[mcp])).body["tools"] == [mcp]
