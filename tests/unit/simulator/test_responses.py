"""The simulator's Responses API: bodies and every stream event against OpenAI's OpenAPI
document, the event order, reasoning items, tools, and the same answer as chat's."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from openai.types.responses import Response

from tests.contract.openai_contract import assert_valid
from tollgate_simulator import chat, responses
from tollgate_simulator.generate import RequestError

WEATHER: dict[str, Any] = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
# What Codex CLI sends besides its function tools: run by OpenAI, never here.
HOSTED: list[dict[str, Any]] = [
    {"type": "web_search"},
    {
        "type": "namespace",
        "name": "mcp_docs",
        "description": "An MCP server's tools",
        "tools": [{"type": "function", "name": "search_docs", "parameters": {}}],
    },
]
ENCRYPTED = ["reasoning.encrypted_content"]


def reply(**body: Any) -> responses.ResponsesReply:
    body.setdefault("model", "gpt-4.1")
    body.setdefault("input", "Explain what an LLM gateway does.")
    return responses.parse_request(orjson.dumps(body)).reply("resp_sim0001", 1_700_000_000)


def events(r: responses.ResponsesReply) -> list[dict[str, Any]]:
    """The stream's events, each checked: `event:` line = the JSON's type, valid schema."""
    out = []
    for raw, _ in r.events():
        head, data, *rest = raw.decode().split("\n")
        assert rest == ["", ""] and head.startswith("event: ") and data.startswith("data: ")
        event = orjson.loads(data[len("data: ") :])
        assert event["type"] == head[len("event: ") :]
        assert_valid("ResponseStreamEvent", event)
        out.append(event)
    return out


CASES: dict[str, dict[str, Any]] = {
    "text": {},
    "items": {
        "instructions": "Be brief.",
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "Hello there"}]},
            {"type": "message", "role": "assistant", "content": "Hi."},
            {"role": "user", "content": "What is a budget?"},
        ],
        "metadata": {"team": "a"},
        "temperature": 0.5,
        "user": "u-1",
    },
    "function_call": {"input": "Call get_weather for Paris.", "tools": [WEATHER, *HOSTED]},
    "parallel_calls": {
        "input": "get_weather and get_time, please",
        "tools": [WEATHER, {**WEATHER, "name": "get_time"}],
    },
    "forced": {
        "input": "hello",
        "tools": [WEATHER],
        "tool_choice": {"type": "function", "name": "get_weather"},
    },
    "hosted_only": {"input": "Search the web for news.", "tools": HOSTED},
    "reasoning": {"model": "o4-mini", "reasoning": {"effort": "low"}},
    "encrypted": {"model": "gpt-5", "include": ENCRYPTED, "store": False},
    "reasoning_tools": {"model": "o3", "input": "use get_weather", "tools": [WEATHER]},
    "incomplete": {"max_output_tokens": 16},
    "reasoning_ate_the_cap": {"model": "o3", "max_output_tokens": 16},
    "json_schema": {
        "text": {"format": {"type": "json_schema", "name": "w", "schema": WEATHER["parameters"]}}
    },
    "no_obfuscation": {"stream_options": {"include_obfuscation": False}},
}


@pytest.mark.parametrize("case", CASES)
def test_answer_and_stream_match_openais_schemas_and_each_other(case: str) -> None:
    r = reply(**CASES[case])
    body = orjson.loads(r.body())
    assert_valid("Response", body)
    Response.model_validate(body)  # and the SDK's own type
    evs = events(r)
    assert [e["sequence_number"] for e in evs] == list(range(len(evs)))
    assert [e["type"] for e in evs[:2]] == ["response.created", "response.in_progress"]
    assert evs[0]["response"]["status"] == "in_progress" and evs[0]["response"]["output"] == []
    final = evs[-1]
    assert final["type"] == f"response.{body['status']}"
    assert final["response"] == body  # the stream ends with the whole answer
    done = [e["item"] for e in evs if e["type"] == "response.output_item.done"]
    assert done == body["output"]
    u = body["usage"]
    assert u["total_tokens"] == u["input_tokens"] + u["output_tokens"]


def test_text_events_in_openais_order() -> None:
    evs = events(reply())
    kinds = [e["type"] for e in evs]
    deltas = [e for e in evs if e["type"] == "response.output_text.delta"]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * len(deltas),
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    text = "".join(d["delta"] for d in deltas)
    assert evs[-4]["text"] == text == evs[-1]["response"]["output"][0]["content"][0]["text"]
    assert all("obfuscation" in d for d in deltas)
    assert evs[-1]["response"]["usage"]["output_tokens"] == len(deltas)
    assert not any("obfuscation" in d for d in events(reply(**CASES["no_obfuscation"])))


def test_function_calls_when_asked_and_hosted_tools_ignored() -> None:
    body = orjson.loads(reply(**CASES["function_call"]).body())
    (call,) = body["output"]
    assert call["type"] == "function_call" and call["name"] == "get_weather"
    assert call["call_id"].startswith("call_") and call["id"].startswith("fc_")
    assert set(orjson.loads(call["arguments"])) == {"city"}
    assert [t["type"] for t in body["tools"]] == ["function", "web_search", "namespace"]
    assert body["tools"][0]["strict"] is True  # echoed as OpenAI does: strict by default
    calls = orjson.loads(reply(**CASES["parallel_calls"]).body())["output"]
    assert [c["name"] for c in calls] == ["get_weather", "get_time"]
    hosted = orjson.loads(reply(**CASES["hosted_only"]).body())["output"]
    assert [o["type"] for o in hosted] == ["message"]  # nothing callable: text
    evs = events(reply(**CASES["function_call"]))
    args = "".join(e["delta"] for e in evs if e["type"] == "response.function_call_arguments.delta")
    (done,) = [e for e in evs if e["type"] == "response.function_call_arguments.done"]
    assert args == done["arguments"] == call["arguments"] and done["name"] == "get_weather"


def test_a_reply_to_a_function_result_is_text() -> None:
    first = orjson.loads(reply(**CASES["function_call"]).body())["output"][0]
    turn = [
        {"role": "user", "content": "Call get_weather for Paris."},
        {k: first[k] for k in ("type", "call_id", "name", "arguments")},
        {"type": "function_call_output", "call_id": first["call_id"], "output": "sunny"},
    ]
    body = orjson.loads(reply(input=turn, tools=[WEATHER]).body())
    assert [o["type"] for o in body["output"]] == ["message"] and body["status"] == "completed"


def test_reasoning_models_reason_and_seal_their_reasoning_on_request() -> None:
    plain = orjson.loads(reply(**CASES["reasoning"]).body())
    rs, msg = plain["output"]
    assert rs["type"] == "reasoning" and "encrypted_content" not in rs and msg["type"] == "message"
    details = plain["usage"]["output_tokens_details"]
    assert 0 < details["reasoning_tokens"] < plain["usage"]["output_tokens"]
    assert plain["reasoning"]["effort"] == "low"
    sealed = orjson.loads(reply(**CASES["encrypted"]).body())["output"][0]
    blob = sealed["encrypted_content"]
    assert isinstance(blob, str) and responses.verified(blob)
    assert orjson.loads(reply().body())["usage"]["output_tokens_details"]["reasoning_tokens"] == 0
    # Sent back (as Codex does with store: false), the item is accepted; changed, refused.
    back = [{"role": "user", "content": "hi"}, sealed, {"role": "user", "content": "more"}]
    assert orjson.loads(reply(model="gpt-5", input=back).body())["status"] == "completed"
    tampered = {**sealed, "encrypted_content": blob[:-4] + "AAAA"}
    with pytest.raises(RequestError) as err:
        reply(model="gpt-5", input=[back[0], tampered])
    assert err.value.code == "invalid_encrypted_content"
    assert err.value.param == "input[1].encrypted_content"


def test_max_output_tokens_makes_an_incomplete_response() -> None:
    body = orjson.loads(reply(**CASES["incomplete"]).body())
    assert body["status"] == "incomplete" and body["completed_at"] is None
    assert body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert body["usage"]["output_tokens"] == 16 and body["output"][0]["status"] == "incomplete"
    # A reasoning model can spend the whole cap thinking: no message at all.
    thought = orjson.loads(reply(**CASES["reasoning_ate_the_cap"]).body())
    assert [o["type"] for o in thought["output"]] == ["reasoning"]
    assert thought["usage"]["output_tokens_details"]["reasoning_tokens"] == 16


def test_same_conversation_same_answer_as_chat() -> None:
    """What a gateway's Responses->chat translation must preserve, the simulator does."""
    convo = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "input_text", "text": "What is a tenant?"}]},
    ]
    r = orjson.loads(reply(input=convo).body())
    c = chat.answer(
        chat.parse_request(
            orjson.dumps(
                {
                    "model": "gpt-4.1",
                    "messages": [
                        {"role": "system", "content": "Be brief."},
                        {"role": "user", "content": "What is a tenant?"},
                    ],
                }
            )
        )
    )
    assert r["output"][0]["content"][0]["text"] == c.content
    assert r["usage"]["input_tokens"] == c.prompt_tokens
    assert r["usage"]["output_tokens"] == c.completion_tokens


def test_long_instructions_report_cached_tokens() -> None:
    body = orjson.loads(reply(instructions="Rules. " * 1200).body())
    details = body["usage"]["input_tokens_details"]
    assert details["cached_tokens"] >= 1024 and details["cached_tokens"] % 128 == 0


def test_stateless_fields_are_accepted_and_echoed() -> None:
    body = orjson.loads(
        reply(previous_response_id="resp_earlier", store=True, include=ENCRYPTED).body()
    )
    assert body["previous_response_id"] == "resp_earlier" and body["store"] is True


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x"}, "model"),
        ({"model": "m"}, "input"),
        ({"model": "m", "input": 3}, "input"),
        ({"model": "m", "input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
        ({"model": "m", "input": [{"role": "user"}]}, "input[0].content"),
        ({"model": "m", "input": [{"type": "function_call", "name": "f"}]}, "input[0].call_id"),
        ({"model": "m", "input": "x", "max_output_tokens": 5}, "max_output_tokens"),
        ({"model": "m", "input": "x", "tools": [{"name": "f"}]}, "tools[0].type"),
        ({"model": "m", "input": "x", "tools": [{"type": "function"}]}, "tools[0].name"),
        ({"model": "m", "input": "x", "reasoning": {"effort": "huge"}}, "reasoning.effort"),
        ({"model": "m", "input": "x", "text": {"format": {"type": "xml"}}}, "text.format.type"),
        ({"model": "m", "input": "x", "stream": "yes"}, "stream"),
        ({"model": "m", "input": "x", "temperature": 3}, "temperature"),
        ({"model": "m", "input": "x", "metadata": {"a": 1}}, "metadata"),
        ({"model": "m", "input": "x", "background": True}, "background"),
        ({"model": "m", "input": "x", "tool_choice": 7}, "tool_choice"),
    ],
)
def test_bad_requests_name_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(RequestError) as err:
        responses.parse_request(orjson.dumps(body))
    assert err.value.status == 400 and err.value.param == param and param in err.value.message
