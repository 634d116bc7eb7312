"""The simulator's Anthropic Messages API: the Message and its events as the anthropic
SDK types them, usage with Anthropic's cache semantics, tools, and field-naming 400s."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from pydantic import TypeAdapter

from tollgate_simulator import chat, messages
from tollgate_simulator.generate import RequestError

WEATHER: dict[str, Any] = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
EVENT: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)
LONG = "Rules of the house. " * 400  # ~2000 tokens
CACHED = {"type": "ephemeral"}


def parse(count_only: bool = False, **body: Any) -> Any:
    body.setdefault("model", "claude-sonnet-4-5")
    body.setdefault("max_tokens", 1024)
    body.setdefault("messages", [{"role": "user", "content": "Explain an LLM gateway."}])
    return messages.parse_request(orjson.dumps(body), count_only=count_only)


def reply(**body: Any) -> messages.MessagesReply:
    r: messages.MessagesReply = parse(**body).reply("msg_sim0001", 0)
    return r


def stream(r: messages.MessagesReply) -> list[dict[str, Any]]:
    out = []
    for raw, _ in r.events():
        head, data, *_ = raw.decode().split("\n")
        event = orjson.loads(data[len("data: ") :])
        assert head == f"event: {event['type']}"
        if event["type"] != "ping":
            EVENT.validate_python(event)
        out.append(event)
    return out


def test_text_message_and_its_stream() -> None:
    r = reply()
    msg = Message.model_validate_json(r.body())
    assert msg.stop_reason == "end_turn" and msg.content[0].type == "text"
    evs = stream(r)
    kinds = [e["type"] for e in evs]
    n = len(kinds) - 6
    assert kinds == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * n,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    text = "".join(e["delta"]["text"] for e in evs if e["type"] == "content_block_delta")
    assert text == msg.content[0].text
    start, delta = evs[0]["message"], evs[-2]
    assert start["stop_reason"] is None and start["content"] == []
    assert start["usage"]["input_tokens"] == msg.usage.input_tokens
    assert delta["delta"]["stop_reason"] == "end_turn"
    assert delta["usage"]["output_tokens"] == msg.usage.output_tokens == n


def test_tool_use_when_asked_with_input_json_deltas() -> None:
    r = reply(messages=[{"role": "user", "content": "Call get_weather for Oslo"}], tools=[WEATHER])
    msg = Message.model_validate_json(r.body())
    assert msg.stop_reason == "tool_use"
    (block,) = msg.content
    assert block.type == "tool_use" and block.name == "get_weather"
    assert block.id.startswith("toolu_") and set(block.input) == {"city"}
    evs = stream(r)
    assert evs[1]["content_block"] == {
        "type": "tool_use",
        "id": block.id,
        "name": "get_weather",
        "input": {},
    }
    partial = "".join(e["delta"]["partial_json"] for e in evs if e["type"] == "content_block_delta")
    assert orjson.loads(partial) == block.input
    assert evs[-2]["delta"]["stop_reason"] == "tool_use"


def test_tool_choice_and_a_tool_result_turn() -> None:
    forced = reply(tools=[WEATHER], tool_choice={"type": "tool", "name": "get_weather"})
    assert Message.model_validate_json(forced.body()).stop_reason == "tool_use"
    banned = reply(
        messages=[{"role": "user", "content": "call get_weather"}],
        tools=[WEATHER],
        tool_choice={"type": "none"},
    )
    assert Message.model_validate_json(banned.body()).stop_reason == "end_turn"
    turn = [
        {"role": "user", "content": "Call get_weather for Oslo"},
        {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Oslo"},
                }
            ],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}],
        },
    ]
    final = Message.model_validate_json(reply(messages=turn, tools=[WEATHER]).body())
    assert final.stop_reason == "end_turn" and final.content[0].type == "text"


def test_max_tokens_stops_with_max_tokens() -> None:
    msg = Message.model_validate_json(reply(max_tokens=3).body())
    assert msg.stop_reason == "max_tokens" and msg.usage.output_tokens == 3


def test_no_cache_control_no_caching() -> None:
    usage = Message.model_validate_json(reply(system=LONG).body()).usage
    assert usage.cache_read_input_tokens == usage.cache_creation_input_tokens == 0
    assert usage.input_tokens > 1024


def test_one_breakpoint_reads_the_prefix_input_tokens_exclude_it() -> None:
    system = [{"type": "text", "text": LONG, "cache_control": CACHED}]
    plain = Message.model_validate_json(reply(system=LONG).body()).usage
    cached = Message.model_validate_json(reply(system=system).body()).usage
    assert cached.cache_read_input_tokens and cached.cache_read_input_tokens > 1024
    assert cached.cache_creation_input_tokens == 0
    # Anthropic's input_tokens excludes cache reads: the total is the same prompt.
    assert cached.input_tokens + cached.cache_read_input_tokens == plain.input_tokens


def test_two_breakpoints_read_the_first_and_write_the_rest() -> None:
    system = [{"type": "text", "text": LONG, "cache_control": CACHED}]
    turn = [
        {
            "role": "user",
            "content": [
                {
                    "type": "text",
                    "text": "Context. " * 600,
                    "cache_control": {"type": "ephemeral", "ttl": "1h"},
                },
                {"type": "text", "text": "Now, the question?"},
            ],
        }
    ]
    u = Message.model_validate_json(reply(system=system, messages=turn).body()).usage
    only_system = Message.model_validate_json(reply(system=system).body()).usage
    assert (
        u.cache_read_input_tokens
        and u.cache_read_input_tokens == only_system.cache_read_input_tokens
    )
    assert u.cache_creation_input_tokens and u.cache_creation_input_tokens > 1000
    assert (
        u.cache_creation
        and u.cache_creation.ephemeral_1h_input_tokens == u.cache_creation_input_tokens
    )
    assert u.cache_creation.ephemeral_5m_input_tokens == 0
    total = parse(count_only=True, system=system, messages=turn).total
    assert u.input_tokens + u.cache_read_input_tokens + u.cache_creation_input_tokens == total


def test_a_short_prefix_is_not_cached_even_when_marked() -> None:
    system = [{"type": "text", "text": "Short.", "cache_control": CACHED}]
    usage = Message.model_validate_json(reply(system=system, cache_control=CACHED).body()).usage
    assert usage.cache_read_input_tokens == usage.cache_creation_input_tokens == 0


def test_same_conversation_same_answer_as_chat() -> None:
    """What a gateway's Messages->chat translation must preserve, the simulator does."""
    m = Message.model_validate_json(
        reply(
            system="Be brief.", messages=[{"role": "user", "content": "What is a tenant?"}]
        ).body()
    )
    c = chat.answer(
        chat.parse_request(
            orjson.dumps(
                {
                    "model": "claude-sonnet-4-5",
                    "max_tokens": 1024,
                    "messages": [
                        {"role": "system", "content": "Be brief."},
                        {"role": "user", "content": "What is a tenant?"},
                    ],
                }
            )
        )
    )
    assert m.content[0].text == c.content  # type: ignore[union-attr]
    assert m.usage.input_tokens == c.prompt_tokens and m.usage.output_tokens == c.completion_tokens


def test_count_tokens_needs_no_max_tokens() -> None:
    body: dict[str, Any] = {
        "model": "claude-sonnet-4-5",
        "messages": [{"role": "user", "content": "hi"}],
    }
    counted = messages.parse_request(orjson.dumps(body), count_only=True)
    assert orjson.loads(counted.reply("", 0).body()) == {"input_tokens": 7}
    with pytest.raises(RequestError, match="max_tokens"):
        messages.parse_request(orjson.dumps(body))


BASE: dict[str, Any] = {
    "model": "m",
    "max_tokens": 5,
    "messages": [{"role": "user", "content": "x"}],
}
DROP = object()  # the field is left out


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"model": DROP}, "model"),
        ({"max_tokens": DROP}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"messages": DROP}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages.0.role"),
        ({"messages": [{"role": "user"}]}, "messages.0.content"),
        ({"messages": [{"role": "user", "content": [{"text": "x"}]}]}, "messages.0.content.0.type"),
        ({"tools": [{"name": "f"}]}, "tools.0.input_schema"),
        ({"tool_choice": {"type": "tool"}}, "tool_choice.name"),
        ({"stream": 1}, "stream"),
    ],
)
def test_bad_requests_name_the_field_as_anthropic_does(change: dict[str, Any], param: str) -> None:
    body = {k: v for k, v in {**BASE, **change}.items() if v is not DROP}
    with pytest.raises(RequestError) as err:
        messages.parse_request(orjson.dumps(body))
    assert err.value.status == 400 and err.value.message.startswith(f"{param}: ")
