"""@anthropic-ai/sdk (node) against tollgate's ``/v1/messages``.

``tests/node/anthropic_node.mjs`` runs every case once against the stack and prints one
JSON object per case; each case is asserted here. Headers come from ``.withResponse()``;
a stream's cost is ``x_tollgate_cost_usd`` on its ``message_delta`` event.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.clients import TOOL_NAME, check_headers, check_stream_cost, check_tool_args
from tests.clients.conftest import node_case, node_versions, run_node_script
from tools.stack import Stack

pytestmark = pytest.mark.integration

PACKAGES = ("@anthropic-ai/sdk",)

# case -> (streamed, expected x-tollgate-cache, tool use expected, the case it repeats)
CASES: dict[str, tuple[bool, str, bool, str | None]] = {
    "create": (False, "miss", False, None),
    "create_repeat": (False, "hit", False, "create"),
    "stream": (True, "miss", False, None),
    "stream_repeat": (True, "hit", False, "stream"),
    "stream_tools": (True, "bypass", True, None),
    "tool_result": (False, "bypass", False, None),
}


@pytest.fixture(scope="module")
def results(stack: Stack) -> dict[str, dict[str, Any]]:
    return run_node_script("anthropic_node.mjs", stack, PACKAGES)


def who(name: str) -> str:
    return f"anthropic-node {node_versions(*PACKAGES)['@anthropic-ai/sdk']} {name}"


@pytest.mark.parametrize("name", list(CASES))
def test_anthropic_node(results: dict[str, dict[str, Any]], name: str) -> None:
    streamed, cache, tools, repeats = CASES[name]
    r, w = node_case(results, name), who(name)
    check_headers(r["headers"], cache, streamed=streamed, who=w)
    usage = r["usage"]
    # Real counts, in the final message of a stream too (never message_start's zeros).
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0, f"{w}: usage {usage}"
    assert r["id"].startswith("msg_"), f"{w}: id {r['id']}"
    if streamed:
        assert r["events"][0] == "message_start" and r["events"][-1] == "message_stop", r["events"]
        check_stream_cost(r["message_delta_cost"], cache, w)
    if tools:
        assert r["stop_reason"] == "tool_use", f"{w}: stop_reason {r['stop_reason']}"
        calls = r["tool_uses"]
        assert len(calls) == 1 and calls[0]["name"] == TOOL_NAME and calls[0]["id"], f"{w}: {calls}"
        check_tool_args(calls[0]["input"], w)
        if streamed:
            assert r["input_json_events"] > 0, f"{w}: no inputJson events"
    else:
        assert r["text"], f"{w}: empty answer"
        assert r["stop_reason"] == "end_turn", f"{w}: stop_reason {r['stop_reason']}"
    if repeats is not None:
        assert r["text"] == node_case(results, repeats)["text"], f"{w}: the replay differs"


def test_anthropic_node_tool_use_came_first(results: dict[str, dict[str, Any]]) -> None:
    first = node_case(results, "tool_result")["first"]
    assert first["stop_reason"] == "tool_use" and first["tool_uses"], first
    check_tool_args(first["tool_uses"][0]["input"], who("tool_result first"))


def test_anthropic_node_count_tokens(results: dict[str, dict[str, Any]]) -> None:
    assert node_case(results, "count_tokens")["input_tokens"] > 0
