"""M-1: the budget reservation covers the whole prompt, not only the message text.

The audit's overshoot (a $0.002 budget ended at $0.47, 237x): requests with
``max_tokens: 1`` and a large tool description reserved about $0, so every concurrent
request was admitted and each cost its real prompt. Reproduced here with the real
estimate (``Pipeline.estimate_usd`` over the parsed request), the real budget code, and
the simulator's count of the prompt tokens an upstream bills (tools, tool calls, parts).
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from tests.unit.orchestrator.fakes import POLICY, Rig
from tollgate_common.budgets import NANO
from tollgate_common.policy import cost_usd
from tollgate_orchestrator.budget import Budgets, MemoryCounters
from tollgate_orchestrator.config import BudgetSpec
from tollgate_orchestrator.errors import ApiError
from tollgate_orchestrator.types import LlmRequest
from tollgate_orchestrator.validation import (
    FILE_ID_TOKENS,
    IMAGE_LOW_DETAIL_TOKENS,
    IMAGE_TOKENS,
    Limits,
    parse_chat_request,
)
from tollgate_simulator.generate import prompt_usage

MODEL = "gpt-4.1"
LIMIT = 0.002
WAVE = 8  # concurrent requests, as in the audit


def tool(i: int) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": f"lookup_{i}",
            "description": f"Look up record {i}. " + "Explains every field at length. " * 40,
            "parameters": {
                "type": "object",
                "properties": {f"field_{j}": {"type": "string"} for j in range(20)},
            },
        },
    }


def tool_heavy() -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": 1,
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [tool(i) for i in range(60)],
    }


def parse(body: dict[str, Any]) -> LlmRequest:
    return parse_chat_request(body, Limits())


def billed(body: dict[str, Any]) -> int:
    """Prompt tokens as the (simulated) upstream bills them."""
    return prompt_usage(body["messages"], body.get("tools"))[0]


def actual_usd(body: dict[str, Any]) -> float:
    return cost_usd(POLICY.models[MODEL], billed(body), 1)


async def spend_one_wave(rig: Rig, req: LlmRequest, actual: float) -> tuple[int, float]:
    """WAVE concurrent requests against a LIMIT budget: (admitted, spent USD)."""
    spec = BudgetSpec(tenant="t", period="day", limit_usd=LIMIT)
    store = MemoryCounters()
    budgets = Budgets([spec], store, "refuse")
    started = asyncio.Event()

    async def one() -> bool:
        try:
            res = await budgets.reserve("t", rig.pipeline.estimate_usd(req))
        except ApiError:
            return False
        await started.wait()  # every request is in flight before any settles
        await budgets.settle(res, actual)
        return True

    tasks = [asyncio.create_task(one()) for _ in range(WAVE)]
    await asyncio.sleep(0)
    started.set()
    admitted = sum(await asyncio.gather(*tasks))
    return admitted, sum(store.values.values()) / NANO


async def test_a_tool_heavy_wave_overshoots_by_at_most_one_request() -> None:
    body = tool_heavy()
    req, rig, actual = parse(body), Rig([MODEL]), actual_usd(body)
    assert billed(body) > 20_000  # the prompt is almost all tools

    # Counted the old way (message text only), the audit's overshoot comes back.
    text_only = dataclasses.replace(req, est_extra_tokens=0)
    admitted, spent = await spend_one_wave(rig, text_only, actual)
    assert admitted == WAVE
    assert spent / LIMIT > 100

    # Counted whole, the first request's reservation is over the limit: the rest wait.
    admitted, spent = await spend_one_wave(rig, req, actual)
    assert admitted == 1
    assert spent <= LIMIT + rig.pipeline.estimate_usd(req)


@pytest.mark.parametrize(
    "body",
    [
        tool_heavy(),
        {  # a conversation with tool calls and tool results
            "model": MODEL,
            "messages": [
                {"role": "user", "content": "What is the weather in Paris and Rome?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": f"call_{i}",
                            "type": "function",
                            "function": {"name": "weather", "arguments": '{"city": "x"}' * 200},
                        }
                        for i in range(5)
                    ],
                },
                *(
                    {"role": "tool", "tool_call_id": f"call_{i}", "content": "sunny, 21C. " * 300}
                    for i in range(5)
                ),
            ],
        },
    ],
    ids=["tools", "tool_calls"],
)
def test_the_estimate_is_within_a_small_factor_of_the_billed_prompt(body: dict[str, Any]) -> None:
    est, real = parse(body).est_prompt_tokens, billed(body)
    assert 0.75 <= est / real <= 1.5, (est, real)


def _user(parts: list[dict[str, Any]]) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": parts}]}


def test_non_text_parts_are_counted() -> None:
    text = {"type": "text", "text": "describe"}
    base = parse(_user([text])).est_prompt_tokens
    image = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    low = {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}}
    assert parse(_user([text, image, image])).est_prompt_tokens == base + 2 * IMAGE_TOKENS
    assert parse(_user([text, low])).est_prompt_tokens == base + IMAGE_LOW_DETAIL_TOKENS
    # A data URL is still one image, not its base64 length.
    data = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 400_000}}
    assert parse(_user([text, data])).est_prompt_tokens == base + IMAGE_TOKENS
    by_id = {"type": "file", "file": {"file_id": "file-abc"}}
    assert parse(_user([text, by_id])).est_prompt_tokens == base + FILE_ID_TOKENS
    inline = {"type": "file", "file": {"filename": "a.pdf", "file_data": "B" * 40_000}}
    assert parse(_user([text, inline])).est_prompt_tokens >= base + 10_000
    audio = {"type": "input_audio", "input_audio": {"data": "C" * 8_000, "format": "wav"}}
    assert parse(_user([text, audio])).est_prompt_tokens >= base + 2_000


def test_schemas_names_and_legacy_functions_are_counted() -> None:
    user = {"role": "user", "content": "hi"}
    base = parse({"model": MODEL, "messages": [user]}).est_prompt_tokens
    schema = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(200)}}
    rf = {"type": "json_schema", "json_schema": {"name": "out", "schema": schema}}
    assert parse({"model": MODEL, "messages": [user], "response_format": rf}).est_prompt_tokens > (
        base + 1000
    )
    fns = [{"name": "f", "parameters": schema}]
    assert parse({"model": MODEL, "messages": [user], "functions": fns}).est_prompt_tokens > (
        base + 1000
    )
    named = {**user, "name": "n" * 400}
    assert parse({"model": MODEL, "messages": [named]}).est_prompt_tokens >= base + 100
