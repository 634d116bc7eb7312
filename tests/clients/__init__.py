"""Real OpenAI clients against a running tollgate: shared expectations.

Every client test checks the same contract (README, "Response headers" in
services/tollgate_orchestrator/README.md):

- ``x-tollgate-model`` (a catalog model), ``x-tollgate-intent`` (one of the intents),
  ``x-tollgate-cache`` (``hit`` | ``miss`` | ``bypass``) and ``x-request-id`` on every
  response;
- ``x-tollgate-cost-usd`` on every whole answer (``0`` for a cache hit); a stream that
  goes upstream has no cost header: its cost is ``x_tollgate_cost_usd`` on the usage
  chunk;
- a temperature-0 repeat is a cache ``hit`` after a ``miss``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from tollgate_common.policy import INTENTS, load_policy

MODELS = frozenset(load_policy().models)

# The simulator answers with tool calls when tools are given and the last user message
# names a tool or says call/use/tool/function (tollgate_simulator.generate.choose_tools).
# Text prompts therefore avoid those words.
TOOL_NAME = "get_weather"
TOOL_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "description": "City name"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TOOL_DESCRIPTION = "Current weather in a city"
OPENAI_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": TOOL_NAME,
        "description": TOOL_DESCRIPTION,
        "parameters": TOOL_PARAMETERS,
    },
}
TOOL_PROMPT = "Call get_weather to find out how warm it is in Paris right now."

# The cache stores an answer in the background once it is complete; a repeat sent in
# the same millisecond may legitimately miss. Repeats wait this long first.
STORE_SETTLE_SECONDS = 0.2


def settle() -> None:
    time.sleep(STORE_SETTLE_SECONDS)


def lower_keys(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def check_headers(
    headers: Mapping[str, str],
    cache: str,
    streamed: bool = False,
    who: str = "",
) -> float | None:
    """Assert tollgate's response headers; returns the cost header's value, if any."""
    h = lower_keys(headers)
    where = f"{who}: " if who else ""
    assert h.get("x-request-id"), f"{where}no x-request-id in {h}"
    assert h.get("x-tollgate-model") in MODELS, (
        f"{where}x-tollgate-model {h.get('x-tollgate-model')!r} is not a catalog model"
    )
    assert h.get("x-tollgate-intent") in INTENTS, (
        f"{where}x-tollgate-intent {h.get('x-tollgate-intent')!r} not in {INTENTS}"
    )
    assert h.get("x-tollgate-cache") == cache, (
        f"{where}x-tollgate-cache {h.get('x-tollgate-cache')!r}, expected {cache!r}"
    )
    raw = h.get("x-tollgate-cost-usd")
    if raw is None:
        # Documented: only a stream that went upstream has no cost header.
        assert streamed and cache != "hit", f"{where}no x-tollgate-cost-usd in {h}"
        return None
    cost = float(raw)
    if cache == "hit":
        assert cost == 0, f"{where}a cache hit costs {raw}, expected 0"
    else:
        assert cost > 0, f"{where}x-tollgate-cost-usd {raw!r} is not positive"
    return cost


def check_stream_cost(cost: Any, cache: str, who: str = "") -> None:
    """``x_tollgate_cost_usd`` on a stream's usage chunk."""
    where = f"{who}: " if who else ""
    assert isinstance(cost, int | float) and not isinstance(cost, bool), (
        f"{where}x_tollgate_cost_usd on the usage chunk is {cost!r}, expected a number"
    )
    if cache == "hit":
        assert cost == 0, f"{where}a replayed stream's x_tollgate_cost_usd is {cost}"
    else:
        assert cost > 0, f"{where}x_tollgate_cost_usd is {cost}, expected > 0"


def check_tool_args(arguments: str | Mapping[str, Any], who: str = "") -> dict[str, Any]:
    """The arguments of a get_weather call: JSON (or already parsed) matching the schema."""
    where = f"{who}: " if who else ""
    args = json.loads(arguments) if isinstance(arguments, str) else dict(arguments)
    assert isinstance(args, dict), f"{where}tool arguments {arguments!r} are not an object"
    assert isinstance(args.get("city"), str) and args["city"], f"{where}no city in {args}"
    assert args.get("unit") in ("celsius", "fahrenheit"), f"{where}bad unit in {args}"
    assert set(args) <= {"city", "unit"}, f"{where}unexpected keys in {args}"
    return args


def check_usage(prompt: Any, completion: Any, total: Any = None, who: str = "") -> None:
    where = f"{who}: " if who else ""
    assert isinstance(prompt, int) and prompt > 0, f"{where}prompt tokens {prompt!r}"
    assert isinstance(completion, int) and completion > 0, (
        f"{where}completion tokens {completion!r}"
    )
    if total is not None:
        assert total == prompt + completion, f"{where}total {total} != {prompt} + {completion}"
