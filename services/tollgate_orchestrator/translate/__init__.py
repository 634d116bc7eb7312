"""Translations between wire APIs, for upstreams that do not speak a request's own API.

Each module registers one ``Translation`` (``dialects/base.py``); ``providers/dispatch``
imports them all and picks one per attempt.
"""

from __future__ import annotations

from typing import Any

import orjson


def chat_completion(raw: bytes) -> dict[str, Any] | None:
    """A whole Chat Completions answer as JSON, or None when it is not an object."""
    try:
        completion = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return completion if isinstance(completion, dict) else None
