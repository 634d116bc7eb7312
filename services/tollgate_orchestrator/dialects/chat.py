"""OpenAI Chat Completions: the client dialect and the upstream wire format. Pure.

As a dialect it passes through: the body goes upstream as the client sent it (known
fields only, the model replaced) and the answer comes back byte for byte. As a wire
format it reads usage from whole answers and stream chunks, asks streams for their
usage chunk, and replays a cached answer as the chunks OpenAI would have sent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from tollgate_common.cachekey import cache_key
from tollgate_orchestrator import openapi
from tollgate_orchestrator.accounting import Usage
from tollgate_orchestrator.dialects.base import PassThrough
from tollgate_orchestrator.dialects.registry import register
from tollgate_orchestrator.errors import ERROR_TYPE_SERVER
from tollgate_orchestrator.sse import COST_FIELD, DONE, DONE_EVENT, Assembler, error_event, event
from tollgate_orchestrator.sse import replay as replay_events
from tollgate_orchestrator.types import CHAT_API, LlmRequest
from tollgate_orchestrator.validation import Limits, parse_body


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def usage_of(usage: object) -> Usage:
    """Chat Completions' ``usage`` object, tolerant of whatever an upstream sends.

    Cache writes are not OpenAI's: ``prompt_tokens_details.cache_write_tokens`` is
    OpenRouter's name for them, and ``cache_write_1h_tokens`` (of those, the 1-hour ones)
    tollgate's, so that a chat answer translated from Anthropic still prices its writes."""
    if not isinstance(usage, dict):
        return Usage()
    pd = usage.get("prompt_tokens_details")
    cd = usage.get("completion_tokens_details")
    pd = pd if isinstance(pd, dict) else {}
    return Usage(
        _int(usage.get("prompt_tokens")),
        _int(usage.get("completion_tokens")),
        _int(pd.get("cached_tokens")),
        _int(cd.get("reasoning_tokens")) if isinstance(cd, dict) else 0,
        _int(pd.get("cache_write_tokens")),
        _int(pd.get("cache_write_1h_tokens")),
    )


def chat_usage(u: Usage) -> dict[str, Any]:
    """``accounting.Usage`` as Chat Completions' ``usage`` (writes only when there are)."""
    details: dict[str, int] = {"cached_tokens": u.cached}
    if u.cache_write:
        details["cache_write_tokens"] = u.cache_write
    if u.cache_write_1h:
        details["cache_write_1h_tokens"] = u.cache_write_1h
    return {
        "prompt_tokens": u.prompt,
        "completion_tokens": u.completion,
        "total_tokens": u.prompt + u.completion,
        "prompt_tokens_details": details,
        "completion_tokens_details": {"reasoning_tokens": u.reasoning},
    }


class ChatStream:
    """One relayed chat stream: forwarded untouched except the usage chunk we asked for."""

    __slots__ = ("_assembler", "_include_usage", "chunks", "usage")

    def __init__(self, include_usage: bool, assemble: bool) -> None:
        self._include_usage = include_usage
        self._assembler = Assembler() if assemble else None
        self.usage: Usage | None = None
        self.chunks = 0

    def feed(self, payload: bytes, price: Callable[[Usage], float]) -> bytes | None:
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return event(payload)  # not ours to judge; forward untouched
        if not isinstance(chunk, dict):
            return event(payload)
        if self._assembler is not None:
            self._assembler.add(chunk)
        if chunk.get("choices"):
            self.chunks += 1
        if isinstance(chunk.get("usage"), dict):
            self.usage = usage_of(chunk["usage"])
            if not chunk.get("choices"):  # the usage chunk we asked for
                if not self._include_usage:
                    return None
                chunk[COST_FIELD] = price(self.usage)
                return event(orjson.dumps(chunk))
        return event(payload)

    def assembled(self) -> bytes | None:
        return orjson.dumps(self._assembler.completion()) if self._assembler else None

    def error(self, message: str, code: str, cost_usd: float) -> bytes:
        return error_event(message, ERROR_TYPE_SERVER, code, cost_usd)


class ChatWire:
    api = CHAT_API
    path = "chat/completions"
    done_event = DONE_EVENT
    deterministic = False

    def payload(self, req: LlmRequest, upstream_model: str) -> bytes:
        body = dict(req.body)
        body["model"] = upstream_model
        if req.stream:
            body["stream"] = True
            # Usage is needed for cost even when the client did not ask for it.
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        else:
            body.pop("stream_options", None)
        return orjson.dumps(body)

    def cache_key(self, model: str, req: LlmRequest, tenant: str) -> str:
        return cache_key(model, req.body, tenant)

    def answer(self, raw: bytes) -> Usage | None:
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(parsed, dict) or not isinstance(parsed.get("choices"), list):
            return None
        # Each choice an object with a message object, as the schema says: an answer that
        # is not cannot be replayed from the cache either (L-3).
        for c in parsed["choices"]:
            if not isinstance(c, dict) or not isinstance(c.get("message"), dict):
                return None
        return usage_of(parsed.get("usage"))

    def parser(self, req: LlmRequest, assemble: bool) -> ChatStream:
        return ChatStream(req.include_usage, assemble)

    def end_of(self, payload: bytes) -> str | None:
        if payload == DONE:
            return "done"
        if payload.startswith(b'{"error"') or payload.startswith(b'{ "error"'):
            return "error"
        return None

    def first_content(self, payload: bytes) -> bool:
        return b'"choices":[]' not in payload and b'"choices": []' not in payload

    def replay(self, stored: bytes, include_usage: bool) -> list[bytes] | None:
        try:
            completion = orjson.loads(stored)
        except orjson.JSONDecodeError:
            return None  # a corrupt entry is a miss
        if not isinstance(completion, dict):
            return None
        try:
            return replay_events(completion, include_usage, 0.0)
        except (AttributeError, TypeError, ValueError):
            return None  # an entry of an odd shape is a miss, never a 500


class ChatDialect(PassThrough):
    name = "chat"
    summary = "Create a chat completion (OpenAI-compatible)"
    path = "/v1/chat/completions"
    api = CHAT_API

    def parse(self, raw: bytes, limits: Limits) -> LlmRequest:
        return parse_body(raw, limits)

    def openapi(self, limits: Limits) -> dict[str, Any]:
        return openapi.chat_operation(limits.max_messages, limits.max_tokens_cap, limits.max_n)


WIRE = ChatWire()
DIALECT = ChatDialect()
register(DIALECT, WIRE)
