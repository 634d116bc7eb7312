"""The cache key: sha256 of a canonical form of every request field that changes the answer.

Fields that do not change the answer (``stream``, ``user``, ``metadata``,
``stream_options``) are left out, so a streamed and a non-streamed request
share an entry. The tenant is part of the key: one tenant must not be able to
learn another's prompts through cache timing. The end user (``user``,
``safety_identifier``) is not: the end users of one tenant share its cache
(docs/security.md, L-7).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, NamedTuple

import orjson

ANSWER_FIELDS = (
    "messages",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "functions",
    "function_call",
    "response_format",
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "seed",
    "n",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "reasoning_effort",
    "modalities",
    "audio",
    "prediction",
    "verbosity",
    # A web search or another service tier answers differently (L-7).
    "web_search_options",
    "service_tier",
)
KEY_VERSION = "v1"


def cache_key(
    resolved_model: str,
    body: Mapping[str, Any],
    tenant: str,
    fields: tuple[str, ...] = ANSWER_FIELDS,
    api: str = "",
) -> str:
    """The key over ``fields`` of ``body`` (chat's by default). Another API names itself
    (``api``), so its answer never shares a key with a chat body of the same fields."""
    canonical = {f: body[f] for f in fields if body.get(f) is not None}
    canonical["model"] = resolved_model
    # OPT_SORT_KEYS makes dict order irrelevant; list order (messages) stays significant.
    blob = orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)
    head = f"{api}\0{KEY_VERSION}" if api else KEY_VERSION
    digest = hashlib.sha256(head.encode() + b"\0" + tenant.encode() + b"\0" + blob)
    return digest.hexdigest()


class CacheMode(NamedTuple):
    lookup: bool
    store: bool


BYPASS = CacheMode(False, False)


def cache_mode(body: Mapping[str, Any], cache_control: str | None, opt_in: bool) -> CacheMode:
    """Deterministic requests (temperature 0 or a seed) or an explicit opt-in are
    cacheable. ``Cache-Control: no-store`` bypasses the cache entirely;
    ``no-cache`` skips the lookup but stores the fresh answer (HTTP semantics)."""
    if not (opt_in or body.get("temperature") == 0 or body.get("seed") is not None):
        return BYPASS
    if cache_control:
        directives = {d.strip().lower() for d in cache_control.split(",")}
        if "no-store" in directives:
            return BYPASS
        if "no-cache" in directives:
            return CacheMode(False, True)
    return CacheMode(True, True)
