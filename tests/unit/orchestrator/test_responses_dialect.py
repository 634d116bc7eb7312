"""The Responses dialect and wire: what a body may be (each bad field a 400 naming it),
what goes upstream, the cache key, usage, the named events, and the replay of a cached
Response as a stream openai-python accepts."""

from __future__ import annotations

from typing import Any

import httpx2
import openai
import orjson
import pytest
from openai.types.responses import response_create_params

from tollgate_orchestrator.accounting import Usage
from tollgate_orchestrator.dialects import DIALECTS, WIRES
from tollgate_orchestrator.dialects.chat import WIRE as CHAT_WIRE
from tollgate_orchestrator.dialects.responses import DIALECT, WIRE, event_type, named_event
from tollgate_orchestrator.dialects.responses_request import CREATE_FIELDS
from tollgate_orchestrator.errors import ApiError
from tollgate_orchestrator.sse import COST_FIELD
from tollgate_orchestrator.types import RESPONSES_API, LlmRequest
from tollgate_orchestrator.validation import MAX_JSON_DEPTH, Limits

LIMITS = Limits(max_messages=4, max_tokens_cap=1000, max_n=2)
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    "strict": False,
}
USAGE = {
    "input_tokens": 100,
    "input_tokens_details": {"cached_tokens": 40, "cache_write_tokens": 10},
    "output_tokens": 30,
    "output_tokens_details": {"reasoning_tokens": 12},
    "total_tokens": 130,
}


def parse(**fields: Any) -> LlmRequest:
    return DIALECT.parse(orjson.dumps({"model": "auto", "input": "hi", **fields}), LIMITS)


def refused(data: Any) -> ApiError:
    with pytest.raises(ApiError) as info:
        DIALECT.parse(orjson.dumps(data), LIMITS)
    err = info.value
    assert err.status == 400
    wire = orjson.loads(DIALECT.error_body(err))["error"]
    assert set(wire) == {"message", "type", "param", "code"}
    assert wire["type"] == "invalid_request_error" and wire["message"]
    return err


def response(output: list[dict[str, Any]], status: str = "completed") -> dict[str, Any]:
    return {
        "id": "resp_1",
        "object": "response",
        "created_at": 1700000000,
        "status": status,
        "error": None,
        "incomplete_details": None if status == "completed" else {"reason": "max_output_tokens"},
        "instructions": None,
        "model": "gpt-4o-mini",
        "output": output,
        "parallel_tool_calls": True,
        "metadata": {},
        "tool_choice": "auto",
        "tools": [],
        "temperature": 1.0,
        "top_p": 1.0,
        "usage": USAGE,
    }


TEXT = "The Rhine, the Danube and the Loire are three rivers of Europe; " * 3
MESSAGE = {
    "type": "message",
    "id": "msg_1",
    "status": "completed",
    "role": "assistant",
    "content": [{"type": "output_text", "text": TEXT, "annotations": [], "logprobs": []}],
}
CALL = {
    "type": "function_call",
    "id": "fc_1",
    "call_id": "call_1",
    "name": "get_weather",
    "arguments": '{"city": "Paris", "unit": "celsius"}',
    "status": "completed",
}
REASONING = {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAA..."}


def frames(events: list[bytes | None]) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) of framed SSE events."""
    out = []
    for ev in events:
        assert ev is not None
        head, data, *rest = ev.split(b"\n")
        assert head.startswith(b"event: ") and data.startswith(b"data: ") and rest == [b"", b""]
        out.append((head[7:].decode(), orjson.loads(data[6:])))
    return out


def sdk_stream(events: list[bytes], **create: Any) -> tuple[list[Any], Any]:
    """openai-python's ``responses.stream()`` over these framed events: (its events,
    its final response). It raises when the stream is not one it can follow."""

    def handler(request: httpx2.Request) -> httpx2.Response:
        headers = {"content-type": "text/event-stream"}
        return httpx2.Response(200, headers=headers, content=b"".join(events))

    http = httpx2.Client(transport=httpx2.MockTransport(handler))
    with openai.OpenAI(api_key="k", base_url="http://gw/v1", http_client=http) as client:
        args = {"model": "auto", "input": "hi", **create}
        with client.responses.stream(**args) as stream:
            seen = list(stream)
            return seen, stream.get_final_response()


# --- parse ------------------------------------------------------------------------------


def test_it_is_registered_as_its_own_dialect_and_wire() -> None:
    assert DIALECTS["/v1/responses"] is DIALECT and WIRES[RESPONSES_API] is WIRE
    assert (DIALECT.name, DIALECT.api, WIRE.path, WIRE.done_event) == (
        "responses",
        RESPONSES_API,
        "responses",
        b"",
    )
    assert WIRE.deterministic is False


def test_a_string_input_is_one_user_turn() -> None:
    req = parse(instructions="Be brief.", max_output_tokens=50.0, stream=True)
    assert req.api == RESPONSES_API and req.model == "auto"
    assert (req.last_user_text, req.system_text, req.turns) == ("hi", "Be brief.", 2)
    assert (req.max_tokens, req.n, req.stream, req.include_usage) == (50, 1, True, True)
    assert req.body["max_output_tokens"] == 50 and isinstance(req.body["max_output_tokens"], int)
    assert req.prompt_chars == len("hi") + len("Be brief.")
    assert not req.has_tools and not req.json_mode


def test_features_come_from_every_item() -> None:
    items = [
        {"role": "developer", "content": "Answer in French."},
        {"role": "user", "content": [{"type": "input_text", "text": "weather?"}]},
        CALL,
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny, 21C"},
        REASONING,
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "and this"},
                {"type": "input_image", "image_url": "https://example.com/a.png", "detail": "low"},
            ],
        },
    ]
    req = DIALECT.parse(orjson.dumps({"model": "gpt-4o", "input": items}), Limits())
    assert req.last_user_text == "and this" and req.system_text == "Answer in French."
    assert req.turns == 6
    assert req.prompt_chars == sum(
        map(len, ("Answer in French.", "weather?", "sunny, 21C", "and this"))
    )
    with_tools = DIALECT.parse(
        orjson.dumps({"model": "gpt-4o", "input": items, "tools": [WEATHER]}), Limits()
    )
    assert with_tools.has_tools
    # Tools, calls, reasoning and the image are billed as prompt too (the budget estimate).
    assert with_tools.est_extra_tokens > req.est_extra_tokens > 85


def test_what_goes_upstream_is_every_create_parameter_and_nothing_else() -> None:
    kept = {
        "store": False,
        "include": ["reasoning.encrypted_content"],
        "reasoning": {"effort": "low", "summary": "auto"},
        "prompt_cache_key": "session-1",
        "parallel_tool_calls": True,
        "truncation": "auto",
        "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}}},
        "tools": [
            WEATHER,
            {"type": "web_search"},
            {"type": "namespace", "name": "ns", "tools": []},
        ],
        "metadata": {"k": "v"},
        "service_tier": "flex",
        "context_management": [{"type": "compaction"}],
        "client_metadata": {"x-codex-turn": "1"},  # Codex's, accepted by OpenAI
        "image": {"context_compression": "auto"},  # in openai-python, not the document
        "access_programs": {"cyber": "standard"},
    }
    items = [REASONING, {"type": "web_search_call", "id": "ws_1", "status": "completed"}]
    req = parse(**kept, input=items, x_gateway="?", messages=[])
    assert req.body == {"model": "auto", "input": items, **kept}
    assert req.json_mode and req.has_tools
    assert req.body["input"][0]["encrypted_content"] == "gAAA..."  # untouched


def test_every_create_parameter_of_openai_python_is_forwarded() -> None:
    sdk = set(response_create_params.ResponseCreateParamsBase.__annotations__)
    assert sdk - CREATE_FIELDS == set()
    assert CREATE_FIELDS - sdk == {"stream", "client_metadata"}


def test_a_continuation_may_leave_input_out() -> None:
    assert parse(input=None, previous_response_id="resp_1").turns == 0
    assert refused({"model": "auto"}).param == "input"


@pytest.mark.parametrize(
    ("data", "param"),
    [
        ([], None),
        ({"input": "hi"}, "model"),
        ({"model": "", "input": "hi"}, "model"),
        ({"model": "m" * 300, "input": "hi"}, "model"),
        ({"model": "auto", "input": 3}, "input"),
        ({"model": "auto", "input": [3]}, "input[0]"),
        ({"model": "auto", "input": [{"content": "x"}]}, "input[0].type"),
        ({"model": "auto", "input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
        ({"model": "auto", "input": [{"role": "user", "content": 3}]}, "input[0].content"),
        (
            {"model": "auto", "input": [{"role": "user", "content": [{"text": "x"}]}]},
            "input[0].content[0]",
        ),
        (
            {
                "model": "auto",
                "input": ["x", {"role": "user", "content": [{"type": "text", "text": "x"}]}],
            },
            "input[0]",
        ),
        (
            {
                "model": "auto",
                "input": [{"role": "user", "content": [{"type": "text", "text": "x"}]}],
            },
            "input[0].content[0].type",
        ),
        (
            {"model": "auto", "input": [{"role": "user", "content": [{"type": "input_text"}]}]},
            "input[0].content[0].text",
        ),
        (
            {"model": "auto", "input": [{"role": "user", "content": [{"type": "input_image"}]}]},
            "input[0].content[0].image_url",
        ),
        (
            {"model": "auto", "input": [{"role": "user", "content": [{"type": "input_file"}]}]},
            "input[0].content[0].file_id",
        ),
        ({"model": "auto", "input": [{**CALL, "arguments": {}}]}, "input[0].arguments"),
        (
            {"model": "auto", "input": [{"type": "function_call_output", "output": "x"}]},
            "input[0].call_id",
        ),
        (
            {
                "model": "auto",
                "input": [{"type": "function_call_output", "call_id": "c", "output": 1}],
            },
            "input[0].output",
        ),
        ({"model": "auto", "input": [{"type": "item_reference", "id": 7}]}, "input[0].id"),
        ({"model": "auto", "input": "hi", "instructions": 1}, "instructions"),
        ({"model": "auto", "input": "hi", "tools": {}}, "tools"),
        ({"model": "auto", "input": "hi", "tools": [{"name": "x"}]}, "tools[0].type"),
        ({"model": "auto", "input": "hi", "tools": [{**WEATHER, "name": "a b"}]}, "tools[0].name"),
        (
            {"model": "auto", "input": "hi", "tools": [{**WEATHER, "parameters": []}]},
            "tools[0].parameters",
        ),
        (
            {"model": "auto", "input": "hi", "tools": [{**WEATHER, "strict": "yes"}]},
            "tools[0].strict",
        ),
        ({"model": "auto", "input": "hi", "tool_choice": "always"}, "tool_choice"),
        ({"model": "auto", "input": "hi", "tool_choice": {"name": "x"}}, "tool_choice.type"),
        ({"model": "auto", "input": "hi", "max_output_tokens": 0}, "max_output_tokens"),
        ({"model": "auto", "input": "hi", "max_output_tokens": 1001}, "max_output_tokens"),
        ({"model": "auto", "input": "hi", "max_output_tokens": "9"}, "max_output_tokens"),
        ({"model": "auto", "input": "hi", "temperature": 2.5}, "temperature"),
        ({"model": "auto", "input": "hi", "top_p": True}, "top_p"),
        ({"model": "auto", "input": "hi", "top_logprobs": 21}, "top_logprobs"),
        ({"model": "auto", "input": "hi", "stream": "yes"}, "stream"),
        ({"model": "auto", "input": "hi", "store": 1}, "store"),
        ({"model": "auto", "input": "hi", "previous_response_id": 5}, "previous_response_id"),
        ({"model": "auto", "input": "hi", "metadata": []}, "metadata"),
        ({"model": "auto", "input": "hi", "text": "json"}, "text"),
        ({"model": "auto", "input": "hi", "text": {"format": {"type": "xml"}}}, "text.format.type"),
        (
            {
                "model": "auto",
                "input": "hi",
                "text": {"format": {"type": "json_schema", "schema": {}}},
            },
            "text.format.name",
        ),
        ({"model": "auto", "input": "hi", "reasoning": "high"}, "reasoning"),
        ({"model": "auto", "input": "hi", "reasoning": {"effort": 3}}, "reasoning.effort"),
        ({"model": "auto", "input": "hi", "include": "reasoning"}, "include"),
        ({"model": "auto", "input": "hi", "conversation": 3}, "conversation"),
    ],
)
def test_every_bad_field_is_a_400_naming_it(data: Any, param: str | None) -> None:
    assert refused(data).param == param


def test_bounds() -> None:
    assert refused({"model": "auto", "input": ["x"] * 5}).param == "input"
    deep: Any = "x"
    for _ in range(MAX_JSON_DEPTH + 1):
        deep = [deep]
    with pytest.raises(ApiError) as info:
        DIALECT.parse(
            orjson.dumps({"model": "auto", "input": "hi", "metadata": {"d": deep}}), LIMITS
        )
    assert info.value.status == 400
    for raw in (b"{", b"\xff"):
        with pytest.raises(ApiError):
            DIALECT.parse(raw, LIMITS)


def test_errors_and_credentials_are_openai_shaped() -> None:
    err = ApiError(400, "nope", param="input[2].content[0].type")
    assert orjson.loads(DIALECT.error_body(err)) == {
        "error": {
            "message": "nope",
            "type": "invalid_request_error",
            "param": "input[2].content[0].type",
            "code": None,
        }
    }
    assert DIALECT.authorization({"authorization": "Bearer sk-1"}) == "Bearer sk-1"
    assert DIALECT.authorization({"x-api-key": "sk-1"}) is None


def test_the_openapi_fragment_describes_the_request_and_its_answers() -> None:
    op = DIALECT.openapi(LIMITS)
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    assert schema["required"] == ["model", "input"]
    assert schema["properties"]["input"]["anyOf"][1]["maxItems"] == 4
    assert schema["properties"]["max_output_tokens"]["maximum"] == 1000
    assert set(op["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}
    assert {"400", "401", "429", "502", "503", "504"} <= set(op["responses"])


# --- the wire ---------------------------------------------------------------------------


def test_the_payload_replaces_the_model_and_asks_for_a_stream() -> None:
    req = parse(stream=True, stream_options={"include_obfuscation": False}, store=False)
    sent = orjson.loads(WIRE.payload(req, "gpt-4o-mini-2024-07-18"))
    assert sent == {
        "model": "gpt-4o-mini-2024-07-18",
        "input": "hi",
        "stream": True,
        "stream_options": {"include_obfuscation": False},
        "store": False,
    }
    whole = orjson.loads(WIRE.payload(parse(stream_options={}), "m"))
    assert whole == {"model": "m", "input": "hi"}
    assert req.body["model"] == "auto"  # the request itself is left as it was


def test_the_cache_key_covers_what_changes_the_answer() -> None:
    base = parse(temperature=0)
    key = WIRE.cache_key("gpt-4o", base, "t")
    assert key == WIRE.cache_key("gpt-4o", parse(temperature=0), "t")
    assert key != WIRE.cache_key("gpt-4o-mini", base, "t")
    assert key != WIRE.cache_key("gpt-4o", base, "u")
    changes = {
        "input": "hello",
        "instructions": "x",
        "tools": [WEATHER],
        "tool_choice": "required",
        "text": {"format": {"type": "json_object"}},
        "reasoning": {"effort": "high"},
        "top_p": 0.5,
        "max_output_tokens": 20,
        "parallel_tool_calls": False,
        "truncation": "auto",
        "include": ["reasoning.encrypted_content"],
        "service_tier": "flex",
        "top_logprobs": 2,
        "max_tool_calls": 3,
        "previous_response_id": "resp_1",
        "image": {"context_compression": "auto"},
    }
    for name, value in changes.items():
        assert WIRE.cache_key("gpt-4o", parse(**{"temperature": 0, name: value}), "t") != key, name
    for name, value in {
        "stream": True,
        "user": "u",
        "metadata": {"a": "b"},
        "store": False,
    }.items():
        assert WIRE.cache_key("gpt-4o", parse(**{"temperature": 0, name: value}), "t") == key, name
    # Never the key of a chat request, whatever the bodies hold.
    assert CHAT_WIRE.cache_key("gpt-4o", base, "t") != key


def test_usage_of_a_whole_answer() -> None:
    raw = orjson.dumps(response([MESSAGE]))
    assert WIRE.answer(raw) == Usage(
        prompt=100, completion=30, cached=40, reasoning=12, cache_write=10
    )
    assert WIRE.answer(orjson.dumps({**response([MESSAGE]), "usage": None})) == Usage()
    for odd in (
        b"nope",
        b"[]",
        orjson.dumps({"object": "chat.completion", "choices": []}),
        orjson.dumps({"object": "response", "output": None}),
        orjson.dumps({"object": "response", "output": [3]}),
    ):
        assert WIRE.answer(odd) is None, odd


def test_which_events_end_a_stream_and_which_carry_content() -> None:
    def ev(kind: str, **more: Any) -> bytes:
        return orjson.dumps({"type": kind, "sequence_number": 1, **more})

    assert WIRE.end_of(ev("response.completed")) == "done"
    assert WIRE.end_of(ev("response.incomplete")) == "done"
    assert WIRE.end_of(ev("response.failed")) == "error"
    assert WIRE.end_of(ev("error")) == "error"
    assert WIRE.end_of(ev("response.output_text.delta", delta='"type":"error"')) is None
    # The type need not come first: then the whole payload is read.
    assert WIRE.end_of(b'{"sequence_number": 9, "type": "response.completed"}') == "done"
    assert WIRE.end_of(b"not json") is None
    for kind in ("response.created", "response.in_progress", "response.queued"):
        assert not WIRE.first_content(ev(kind))
    assert WIRE.first_content(ev("response.output_item.added"))
    assert event_type(b' { "type" : "x.y" }') == "x.y"


def test_the_stream_forwards_each_payload_as_a_named_event() -> None:
    parser = WIRE.parser(parse(stream=True), assemble=True)
    delta = (
        b'{"type":"response.output_text.delta","item_id":"m","output_index":0,'
        b'"content_index":0,"delta":"hi","sequence_number":3,"obfuscation":"x"}'
    )
    assert (
        parser.feed(delta, lambda u: 1.0)
        == b"event: response.output_text.delta\ndata: " + delta + b"\n\n"
    )
    args = (
        b'{"type":"response.function_call_arguments.delta","item_id":"f",'
        b'"output_index":1,"delta":"{","sequence_number":4}'
    )
    parser.feed(args, lambda u: 1.0)
    assert parser.chunks == 2 and parser.usage is None and parser.assembled() is None
    assert parser.feed(b"garbage", lambda u: 1.0) == b"data: garbage\n\n"
    # A type that would break the framing names no event.
    assert named_event("a\nevent: b", b"{}") == b"data: {}\n\n"

    priced: list[Usage] = []

    def price(u: Usage) -> float:
        priced.append(u)
        return 0.25

    done = {"type": "response.completed", "response": response([MESSAGE]), "sequence_number": 5}
    out = frames([parser.feed(orjson.dumps(done), price)])
    assert out[0][0] == "response.completed"
    assert out[0][1] == {**done, COST_FIELD: 0.25}
    assert priced == [Usage(100, 30, 40, 12, 10)] and parser.usage == priced[0]
    assert orjson.loads(parser.assembled() or b"") == done["response"]
    name, err = frames([parser.error("stream broke", "upstream_stream_error", 0.25)])[0]
    assert name == "error"
    assert err == {
        "type": "error",
        "code": "upstream_stream_error",
        "message": "stream broke",
        "param": None,
        "sequence_number": 6,
        COST_FIELD: 0.25,
    }


def test_an_incomplete_answer_is_priced_and_kept_a_failed_one_is_not_kept() -> None:
    parser = WIRE.parser(parse(stream=True), assemble=True)
    inc = {
        "type": "response.incomplete",
        "response": response([MESSAGE], "incomplete"),
        "sequence_number": 2,
    }
    assert COST_FIELD in frames([parser.feed(orjson.dumps(inc), lambda u: 0.5)])[0][1]
    assert parser.assembled() is not None
    failed_resp = {**response([], "failed"), "error": {"code": "server_error", "message": "x"}}
    parser = WIRE.parser(parse(stream=True), assemble=True)
    fail = {"type": "response.failed", "response": failed_resp, "sequence_number": 2}
    assert COST_FIELD not in frames([parser.feed(orjson.dumps(fail), lambda u: 0.5)])[0][1]
    assert parser.usage == Usage(100, 30, 40, 12, 10) and parser.assembled() is None
    assert WIRE.parser(parse(stream=True), assemble=False).assembled() is None


# --- replay -------------------------------------------------------------------------------


def test_a_cached_response_replays_as_the_events_openai_sends() -> None:
    stored = response([REASONING, MESSAGE, CALL])
    out = frames(list(WIRE.replay(orjson.dumps(stored), include_usage=True) or []))
    assert [d["sequence_number"] for _, d in out] == list(range(len(out)))
    assert all(name == d["type"] for name, d in out)
    kinds = [name for name, _ in out]
    deltas = kinds.count("response.output_text.delta")
    assert deltas >= 3  # the text comes in pieces
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * deltas,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        *["response.function_call_arguments.delta"]
        * kinds.count("response.function_call_arguments.delta"),
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    created = out[0][1]["response"]
    assert created["status"] == "in_progress" and created["output"] == [] and "usage" not in created
    text = "".join(d["delta"] for n, d in out if n == "response.output_text.delta")
    assert text == TEXT
    args = "".join(d["delta"] for n, d in out if n == "response.function_call_arguments.delta")
    assert args == CALL["arguments"]
    assert out[-1][1]["response"] == stored and out[-1][1][COST_FIELD] == 0.0  # a hit costs 0
    assert out[2][1]["item"] == REASONING  # encrypted reasoning replays untouched


def test_openai_python_follows_a_replayed_stream() -> None:
    stored = response([MESSAGE, CALL])
    seen, final = sdk_stream(WIRE.replay(orjson.dumps(stored), True) or [])
    assert final.output_text == TEXT
    assert final.output[1].arguments == CALL["arguments"]
    assert final.usage.input_tokens_details.cached_tokens == 40
    assert seen[-1].type == "response.completed"


def test_replay_ends_an_incomplete_answer_as_incomplete() -> None:
    events = frames(list(WIRE.replay(orjson.dumps(response([MESSAGE], "incomplete")), True) or []))
    assert events[-1][0] == "response.incomplete"


@pytest.mark.parametrize(
    "stored",
    [
        b"not json",
        b"[]",
        orjson.dumps({"object": "response", "output": "x"}),
        orjson.dumps(response([MESSAGE], "in_progress")),
        orjson.dumps(response([{"type": "message", "content": 3}])),
        orjson.dumps(response([{"type": "message", "content": [3]}])),
    ],
)
def test_an_odd_cached_entry_is_a_miss(stored: bytes) -> None:
    assert WIRE.replay(stored, True) is None
