"""Vercel AI SDK against tollgate: ``@ai-sdk/openai`` (``createOpenAI(...).chat(model)``)
and ``@ai-sdk/openai-compatible`` (``createOpenAICompatible({..., includeUsage: true})``),
each with ``generateText`` and ``streamText``, text and tool calls.

``tests/node/ai_sdk.mjs`` runs every case once and prints one JSON object per case.
Headers: ``response.headers`` of ``generateText``, and ``await result.response`` of
``streamText``. A stream's cost (``x_tollgate_cost_usd`` on the usage chunk) is read from
the raw chunks (``includeRawChunks: true``); the SDK's own usage drops the extra field.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.clients import TOOL_NAME, check_headers, check_stream_cost, check_tool_args, check_usage
from tests.clients.conftest import node_case, node_versions, run_node_script
from tools.stack import Stack

pytestmark = pytest.mark.integration

PACKAGES = ("ai", "@ai-sdk/openai", "@ai-sdk/openai-compatible")
PROVIDERS = {"openai": "@ai-sdk/openai", "compat": "@ai-sdk/openai-compatible"}

# kind -> (streamed, expected x-tollgate-cache, tool call expected, the kind it repeats)
KINDS: dict[str, tuple[bool, str, bool, str | None]] = {
    "generate": (False, "miss", False, None),
    "generate_repeat": (False, "hit", False, "generate"),
    "stream": (True, "miss", False, None),
    "stream_repeat": (True, "hit", False, "stream"),
    "generate_tools": (False, "bypass", True, None),
    "stream_tools": (True, "bypass", True, None),
}
CASES = [f"{p}_{k}" for p in PROVIDERS for k in KINDS]


@pytest.fixture(scope="module")
def results(stack: Stack) -> dict[str, dict[str, Any]]:
    return run_node_script("ai_sdk.mjs", stack, PACKAGES)


@pytest.mark.parametrize("name", CASES)
def test_ai_sdk(results: dict[str, dict[str, Any]], name: str) -> None:
    provider, kind = name.split("_", 1)
    streamed, cache, tools, repeats = KINDS[kind]
    r = node_case(results, name)
    versions = node_versions(*PACKAGES)
    who = f"ai {versions['ai']} + {PROVIDERS[provider]} {versions[PROVIDERS[provider]]} {name}"
    assert r["headers"], f"{who}: the SDK exposed no response headers"
    check_headers(r["headers"], cache, streamed=streamed, who=who)
    assert r["model_id"] == r["headers"]["x-tollgate-model"], f"{who}: modelId {r['model_id']}"
    u = r["usage"]
    check_usage(u.get("inputTokens"), u.get("outputTokens"), u.get("totalTokens"), who)
    if streamed:
        assert r["errors"] == [], f"{who}: stream errors {r['errors']}"
        assert r["raw_usage_chunks"] == 1, f"{who}: {r['raw_usage_chunks']} usage chunks"
        check_stream_cost(r["raw_cost"], cache, who)
    if tools:
        assert r["finish_reason"] == "tool-calls", f"{who}: finishReason {r['finish_reason']}"
        calls = r["tool_calls"]
        assert len(calls) == 1, f"{who}: toolCalls {calls}"
        assert calls[0]["name"] == TOOL_NAME and calls[0]["id"], f"{who}: {calls[0]}"
        check_tool_args(calls[0]["input"], who)
    else:
        assert r["text"], f"{who}: empty text"
        assert r["finish_reason"] == "stop", f"{who}: finishReason {r['finish_reason']}"
    if repeats is not None:
        first = node_case(results, f"{provider}_{repeats}")
        assert r["text"] == first["text"], f"{who}: the replay differs"
