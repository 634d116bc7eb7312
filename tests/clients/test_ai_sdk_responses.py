"""Vercel AI SDK (``ai`` + ``@ai-sdk/openai``) against tollgate's ``/v1/responses``.

``createOpenAI({baseURL, apiKey})(model)`` is the SDK's Responses model; the SDK's
default is ``store: true`` (it sends no ``store`` field and counts on the server's
default). ``tests/node/ai_sdk_responses.mjs`` runs, for ``generateText`` and
``streamText`` each:

- ``*_turn1``/``*_turn2``: a two-turn conversation; on the second turn the SDK sends
  the first answer back as ``{"type": "item_reference", "id": "msg_..."}``, which the
  gateway resolves from its store (the simulator upstream is stateless, like llmock: it
  would see a bare reference). Proof that it was resolved: the second turn's input
  tokens exceed the first answer's output tokens.
- ``*_previous``: the same follow-up by ``previousResponseId`` (the SDK's
  ``providerOptions.openai``): only the new message is sent.
- ``*_tool_turn1``/``*_tool_turn2``: a ``tool()`` with a JSON schema, no ``execute``;
  the simulator calls a function when the prompt names it (``choose_tools``), and
  answers a ``function_call_output`` with text. The SDK sends the call back as a
  ``function_call`` item (not a reference) and the result as ``function_call_output``.

Usage (``inputTokens``/``outputTokens``) is checked on every case; a stream's cost is
``x_tollgate_cost_usd`` on the ``response.completed`` event, read from the raw chunks.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.clients import TOOL_NAME, check_headers, check_stream_cost, check_tool_args, check_usage
from tests.clients.conftest import node_case, node_versions, run_node_script
from tools.stack import Stack

pytestmark = pytest.mark.integration

PACKAGES = ("ai", "@ai-sdk/openai")
KINDS = ("generate", "stream")
TURNS = ("turn1", "turn2", "previous", "tool_turn1", "tool_turn2")
CASES = [f"{k}_{t}" for k in KINDS for t in TURNS]


@pytest.fixture(scope="module")
def results(stack: Stack) -> dict[str, dict[str, Any]]:
    return run_node_script("ai_sdk_responses.mjs", stack, PACKAGES, timeout=90.0)


def who(name: str) -> str:
    v = node_versions(*PACKAGES)
    return f"ai {v['ai']} + @ai-sdk/openai {v['@ai-sdk/openai']} (responses) {name}"


@pytest.mark.parametrize("name", CASES)
def test_every_turn_answers_with_usage(results: dict[str, dict[str, Any]], name: str) -> None:
    kind, turn = name.split("_", 1)
    streamed = kind == "stream"
    r = node_case(results, name)
    w = who(name)
    assert r["headers"], f"{w}: the SDK exposed no response headers"
    # No temperature: the SDK's answers are not cacheable, and the cache is not asked.
    check_headers(r["headers"], "bypass", streamed=streamed, who=w)
    assert r["model_id"], f"{w}: no modelId"
    assert str(r["response_id"]).startswith("resp_"), f"{w}: responseId {r['response_id']!r}"
    u = r["usage"]
    check_usage(u.get("inputTokens"), u.get("outputTokens"), u.get("totalTokens"), w)
    sent = r["sent"]
    assert sent["store"] in (None, True), f"{w}: the SDK sent store={sent['store']}"
    if streamed:
        assert r["errors"] == [], f"{w}: stream errors {r['errors']}"
        assert r["raw_last"] == "response.completed", f"{w}: last event {r['raw_last']}"
        check_stream_cost(r["raw_cost"], "miss", w)
    if turn == "tool_turn1":
        assert r["finish_reason"] == "tool-calls", f"{w}: finishReason {r['finish_reason']}"
        (call,) = r["tool_calls"]
        assert call["name"] == TOOL_NAME and call["id"], f"{w}: {call}"
        check_tool_args(call["input"], w)
    else:
        assert r["text"], f"{w}: empty text"
        assert r["finish_reason"] == "stop", f"{w}: finishReason {r['finish_reason']}"
        assert r["tool_calls"] == [], f"{w}: toolCalls {r['tool_calls']}"


@pytest.mark.parametrize("kind", KINDS)
def test_second_turn_refers_to_the_first_by_item_id(
    results: dict[str, dict[str, Any]], kind: str
) -> None:
    first, second = node_case(results, f"{kind}_turn1"), node_case(results, f"{kind}_turn2")
    w = who(f"{kind}_turn2")
    sent = second["sent"]
    assert sent["input_kinds"] == ["message:user", "item_reference", "message:user"], (
        f"{w}: sent {sent['input_kinds']}"
    )
    (ref,) = sent["references"]
    assert ref.startswith("msg_"), f"{w}: item_reference {ref!r}"
    # The gateway replaced the reference by the stored message before going upstream.
    assert second["usage"]["inputTokens"] > first["usage"]["outputTokens"], (
        f"{w}: {second['usage']['inputTokens']} input tokens; the first answer alone had "
        f"{first['usage']['outputTokens']}: the reference was not resolved"
    )


@pytest.mark.parametrize("kind", KINDS)
def test_previous_response_id_continues_the_first_turn(
    results: dict[str, dict[str, Any]], kind: str
) -> None:
    first, follow = node_case(results, f"{kind}_turn1"), node_case(results, f"{kind}_previous")
    w = who(f"{kind}_previous")
    assert follow["sent"]["previous_response_id"] == first["response_id"], follow["sent"]
    assert follow["sent"]["input_kinds"] == ["message:user"], follow["sent"]
    assert follow["response_id"] != first["response_id"], f"{w}: the same response id"
    assert follow["usage"]["inputTokens"] > first["usage"]["outputTokens"], (
        f"{w}: {follow['usage']['inputTokens']} input tokens: the previous turn was not sent"
    )


@pytest.mark.parametrize("kind", KINDS)
def test_tool_result_round_trip(results: dict[str, dict[str, Any]], kind: str) -> None:
    second = node_case(results, f"{kind}_tool_turn2")
    sent = second["sent"]["input_kinds"]
    assert sent == ["message:user", "function_call", "function_call_output"], (
        f"{who(f'{kind}_tool_turn2')}: sent {sent}"
    )
