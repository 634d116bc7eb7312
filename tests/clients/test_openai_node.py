"""openai-node (the ``openai`` npm package) against tollgate.

``tests/node/openai_node.mjs`` runs every case once against the stack and prints one
JSON object per case; each case is asserted here. Headers come from ``.withResponse()``.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.clients import (
    TOOL_NAME,
    check_headers,
    check_stream_cost,
    check_tool_args,
    check_usage,
)
from tests.clients.conftest import node_case, node_versions, run_node_script
from tools.stack import Stack

pytestmark = pytest.mark.integration

PACKAGES = ("openai",)

# case -> (streamed, expected x-tollgate-cache, tool call expected, the case it repeats)
CASES: dict[str, tuple[bool, str, bool, str | None]] = {
    "create": (False, "miss", False, None),
    "create_repeat": (False, "hit", False, "create"),
    "stream": (True, "miss", False, None),
    "stream_repeat": (True, "hit", False, "stream"),
    "tools": (False, "bypass", True, None),
    "stream_tools": (True, "bypass", True, None),
}


@pytest.fixture(scope="module")
def results(stack: Stack) -> dict[str, dict[str, Any]]:
    return run_node_script("openai_node.mjs", stack, PACKAGES)


@pytest.mark.parametrize("name", list(CASES))
def test_openai_node(results: dict[str, dict[str, Any]], name: str) -> None:
    streamed, cache, tools, repeats = CASES[name]
    r = node_case(results, name)
    who = f"openai-node {node_versions(*PACKAGES)['openai']} {name}"
    check_headers(r["headers"], cache, streamed=streamed, who=who)
    usage = r["last_chunk_usage"] if streamed else r["usage"]
    assert usage, f"{who}: no usage ({'on the last chunk' if streamed else 'in the body'})"
    check_usage(usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"], who)
    if streamed:
        check_stream_cost(r["last_chunk_cost"], cache, who)
    if tools:
        assert r["finish_reason"] == "tool_calls", f"{who}: finish_reason {r['finish_reason']}"
        calls = r["tool_calls"]
        assert len(calls) == 1, f"{who}: tool calls {calls}"
        assert calls[0]["name"] == TOOL_NAME and calls[0]["id"], f"{who}: {calls[0]}"
        check_tool_args(calls[0]["arguments"], who)
    else:
        assert r["text"], f"{who}: empty answer"
        assert r["finish_reason"] == "stop", f"{who}: finish_reason {r['finish_reason']}"
    if repeats is not None:
        assert r["text"] == node_case(results, repeats)["text"], f"{who}: the replay differs"
