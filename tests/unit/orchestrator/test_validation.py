"""Request validation: every bad field is a 400 naming it; unknown fields are dropped."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tollgate_orchestrator.errors import ApiError
from tollgate_orchestrator.validation import (
    MAX_JSON_DEPTH,
    Limits,
    decode_json,
    parse_body,
    parse_chat_request,
)

LIMITS = Limits(max_messages=4, max_tokens_cap=1000, max_n=2)
USER = {"role": "user", "content": "hello"}


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [USER], **fields}


def param_of(data: Any) -> tuple[int, str | None]:
    with pytest.raises(ApiError) as info:
        parse_chat_request(data, LIMITS)
    err = info.value
    wire = orjson.loads(err.body())["error"]
    assert set(wire) == {"message", "type", "param", "code"}
    assert isinstance(wire["message"], str) and wire["message"]
    assert wire["param"] != "None" and wire["type"] != "None"
    return err.status, wire["param"]


@pytest.mark.parametrize(
    ("data", "param"),
    [
        ([1, 2], None),
        ({"messages": [USER]}, "model"),
        (body(model=3), "model"),
        (body(model="  "), "model"),
        ({"model": "auto"}, "messages"),
        (body(messages="hi"), "messages"),
        (body(messages=[]), "messages"),
        (body(messages=[USER] * 5), "messages"),
        (body(messages=["hi"]), "messages[0]"),
        (body(messages=[USER, {"role": "robot", "content": "x"}]), "messages[1].role"),
        (body(messages=[{"content": "x"}]), "messages[0].role"),
        (body(messages=[{"role": "user"}]), "messages[0].content"),
        (body(messages=[{"role": "user", "content": 5}]), "messages[0].content"),
        (body(messages=[{"role": "user", "content": [{"text": "x"}]}]), "messages[0].content[0]"),
        (body(messages=[{"role": "tool", "content": "x"}]), "messages[0].tool_call_id"),
        (body(max_tokens=-1), "max_tokens"),
        (body(max_tokens=0), "max_tokens"),
        (body(max_tokens=1.5), "max_tokens"),
        (body(max_tokens=True), "max_tokens"),
        (body(max_tokens=1001), "max_tokens"),
        (body(max_completion_tokens=-5), "max_completion_tokens"),
        (body(temperature=2.5), "temperature"),
        (body(temperature=-0.1), "temperature"),
        (body(temperature="hot"), "temperature"),
        (body(top_p=1.5), "top_p"),
        (body(stream="yes"), "stream"),
        (body(stream=1), "stream"),
        (body(stream_options=[]), "stream_options"),
        (body(stream_options={"include_usage": "y"}), "stream_options.include_usage"),
        (body(n=3), "n"),
        (body(seed="1"), "seed"),
        (body(stop=["a", "b", "c", "d", "e"]), "stop"),
        (body(stop=5), "stop"),
        (body(tools={}), "tools"),
        (body(tools=["x"]), "tools[0]"),
        (body(tools=[{"type": "function"}]), "tools[0].function"),
        (
            body(tools=[{"type": "function", "function": {"name": "bad name"}}]),
            "tools[0].function.name",
        ),
        (
            body(tools=[{"type": "function", "function": {"name": "ok", "parameters": 1}}]),
            "tools[0].function.parameters",
        ),
        (body(tools=[{"type": "retrieval"}]), "tools[0].type"),
        (body(response_format={"type": "xml"}), "response_format"),
        (body(tool_choice="sometimes"), "tool_choice"),
        (body(user=5), "user"),
        (body(metadata="x"), "metadata"),
        (body(logprobs="yes"), "logprobs"),
        (body(presence_penalty=3), "presence_penalty"),
    ],
)
def test_bad_field_is_a_400_naming_it(data: Any, param: str | None) -> None:
    assert param_of(data) == (400, param)


def test_malformed_json_and_invalid_utf8_are_400_with_null_param() -> None:
    for raw in (b"{not json", b'{"model": "auto", "messages": [', b"\xff\xfe{}", b""):
        with pytest.raises(ApiError) as info:
            parse_body(raw, LIMITS)
        assert info.value.status == 400
        assert orjson.loads(info.value.body())["error"]["param"] is None
    with pytest.raises(ApiError, match="UTF-8"):
        parse_body(b'{"model": "\xff"}', LIMITS)


def test_a_good_request_is_summarised_and_unknown_fields_dropped() -> None:
    data = body(
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "part one"}]},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]},
            {"role": "user", "content": "write code"},
        ],
        stream=True,
        stream_options={"include_usage": True},
        max_tokens=50,
        max_completion_tokens=40,
        tools=[{"type": "function", "function": {"name": "get_x", "parameters": {}}}],
        response_format={"type": "json_object"},
        temperature=0,
        made_up_field={"a": 1},
        api_base="http://evil",
    )
    req = parse_chat_request(data, LIMITS)
    assert req.model == "auto"
    assert req.stream and req.include_usage
    assert req.max_tokens == 40  # the smaller of the two limits
    assert req.has_tools and req.json_mode
    assert req.last_user_text == "write code"
    assert req.system_text == "be brief"
    assert req.turns == 4
    assert req.prompt_chars == len("be brief") + len("part one") + len("write code")
    assert "made_up_field" not in req.body and "api_base" not in req.body
    assert req.body["temperature"] == 0
    assert req.est_prompt_tokens > 0


def test_feature_text_is_truncated_for_the_router() -> None:
    req = parse_chat_request(body(messages=[{"role": "user", "content": "x" * 10_000}]), LIMITS)
    assert len(req.last_user_text) == 2000
    assert req.prompt_chars == 10_000


def test_deep_json_is_a_400_before_anything_serialises_it() -> None:
    """M-9: 300 levels parse in orjson but fail its dumps (255): that was a 500."""
    deep = b'{"model":"auto","messages":[{"role":"user","content":"x"}],"metadata":' + (
        b"[" * 300 + b"]" * 300 + b"}"
    )
    with pytest.raises(ApiError) as info:
        decode_json(deep)
    assert info.value.status == 400 and "deeper" in info.value.message
    ok = b"[" * (MAX_JSON_DEPTH - 1) + b"]" * (MAX_JSON_DEPTH - 1)
    assert decode_json(ok) is not None
