"""Anthropic Messages (``POST /v1/messages``): the client dialect and the upstream wire format.

As a dialect it checks Anthropic's request (known fields only, every failure a 400 that
names the field) and answers in Anthropic's shapes, errors included. As a wire format it
reads usage from a ``Message`` and from a stream's ``message_start``/``message_delta``,
frames the named events Anthropic's SDKs need (``event: <type>``; they skip an event
without a name), adds the cost to ``message_delta``, assembles the ``Message`` for the
cache and replays a cached one as the events Anthropic would have sent. Pure.

Usage: Anthropic's ``input_tokens`` excludes the prompt cache, OpenAI's ``prompt_tokens``
(``accounting.Usage.prompt``) includes it, so ``prompt = input_tokens +
cache_read_input_tokens + cache_creation_input_tokens`` (api-surface §2.1).

Anthropic upstreams speak it natively (``providers/anthropic.py``); ``translate/messages_chat.py``
reaches chat ones, and ``translate/chat_messages.py`` brings chat requests to Anthropic.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import orjson

from tollgate_common.cachekey import cache_key
from tollgate_orchestrator.accounting import Usage
from tollgate_orchestrator.dialects.base import PassThrough
from tollgate_orchestrator.dialects.messages_openapi import (
    count_tokens_operation,
    messages_operation,
)
from tollgate_orchestrator.dialects.messages_request import (
    SERVER_BLOCKS,
    count_tokens,
    is_server_tool,
    parse_messages_request,
)
from tollgate_orchestrator.dialects.registry import register
from tollgate_orchestrator.errors import ApiError
from tollgate_orchestrator.sse import COST_FIELD, pieces
from tollgate_orchestrator.types import MESSAGES_API, LlmRequest
from tollgate_orchestrator.validation import Limits, decode_json, is_int

# The fields that change the answer: the cache key (with the model and the tenant).
ANSWER_FIELDS = (
    "messages",
    "system",
    "tools",
    "tool_choice",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "stop_sequences",
    "thinking",
    "service_tier",
    "output_config",
)
_EVENT_NAME = re.compile(rb"^[a-z_]{1,64}$")

# Anthropic's error types by HTTP status (https://docs.claude.com/en/api/errors).
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_type(status: int) -> str:
    return ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")


def dotted(param: str) -> str:
    """``messages[1].content[0].type`` as Anthropic writes it: ``messages.1.content.0.type``."""
    return param.replace("[", ".").replace("]", "")


def error_body(err: ApiError) -> bytes:
    message = f"{dotted(err.param)}: {err.message}" if err.param else err.message
    return orjson.dumps(
        {"type": "error", "error": {"type": error_type(err.status), "message": message}}
    )


# --- usage, framing ------------------------------------------------------------------------


def _count(obj: Mapping[str, Any], name: str) -> int:
    v = obj.get(name)
    return v if is_int(v) and v > 0 else 0


def usage_of(usage: object) -> Usage:
    """Anthropic's ``usage`` in OpenAI's convention: the prompt includes the prompt cache."""
    if not isinstance(usage, dict):
        return Usage()
    read = _count(usage, "cache_read_input_tokens")
    written = _count(usage, "cache_creation_input_tokens")
    details = usage.get("output_tokens_details")
    creation = usage.get("cache_creation")
    long = _count(creation, "ephemeral_1h_input_tokens") if isinstance(creation, dict) else 0
    return Usage(
        prompt=_count(usage, "input_tokens") + read + written,
        completion=_count(usage, "output_tokens"),
        cached=read,
        reasoning=_count(details, "thinking_tokens") if isinstance(details, dict) else 0,
        cache_write=written,
        cache_write_1h=min(long, written),
    )


def frame(payload: bytes, kind: str | None) -> bytes:
    """One SSE event named ``kind`` (its ``type``); unnamed when it has none the SDKs
    would recognise (they skip it)."""
    name = kind.encode() if kind is not None else b""
    if not _EVENT_NAME.match(name):
        return b"data: " + payload + b"\n\n"
    return b"event: " + name + b"\ndata: " + payload + b"\n\n"


def stream_error(message: str, type_: str = "api_error", cost_usd: float | None = None) -> bytes:
    body: dict[str, Any] = {"type": "error", "error": {"type": type_, "message": message}}
    if cost_usd is not None:
        body[COST_FIELD] = cost_usd
    return frame(orjson.dumps(body), "error")


# --- the stream ----------------------------------------------------------------------------


class _Blocks:
    """A ``Message``'s content rebuilt from ``content_block_*`` events, for the cache."""

    def __init__(self) -> None:
        self.blocks: dict[int, dict[str, Any]] = {}
        self.json: dict[int, list[str]] = {}  # tool inputs as their partial_json pieces

    def start(self, event: dict[str, Any]) -> None:
        block, idx = event.get("content_block"), event.get("index")
        if isinstance(block, dict) and is_int(idx):
            self.blocks[idx] = dict(block)

    def delta(self, event: dict[str, Any]) -> None:
        block, delta = self.blocks.get(event.get("index", -1)), event.get("delta")
        if block is None or not isinstance(delta, dict):
            return
        kind = delta.get("type")
        if kind == "text_delta":
            block["text"] = block.get("text", "") + str(delta.get("text", ""))
        elif kind == "input_json_delta":
            self.json.setdefault(event["index"], []).append(str(delta.get("partial_json", "")))
        elif kind == "thinking_delta":
            block["thinking"] = block.get("thinking", "") + str(delta.get("thinking", ""))
        elif kind == "signature_delta":
            block["signature"] = str(delta.get("signature", ""))
        elif kind == "citations_delta":
            block.setdefault("citations", []).append(delta.get("citation"))

    def stop(self, event: dict[str, Any]) -> None:
        idx = event.get("index", -1)
        parts, block = self.json.pop(idx, None), self.blocks.get(idx)
        if parts is None or block is None:
            return
        text = "".join(parts)
        try:
            block["input"] = orjson.loads(text) if text else block.get("input", {})
        except orjson.JSONDecodeError:
            block["input"] = {"INVALID_JSON": text}  # see translate/messages_chat.py

    def content(self) -> list[dict[str, Any]]:
        return [self.blocks[i] for i in sorted(self.blocks)]


class MessagesStream:
    """One relayed Messages stream: every event framed and forwarded; the cost goes on
    ``message_delta``; usage from ``message_start`` and ``message_delta``."""

    __slots__ = ("_blocks", "_delta", "_est", "_head", "_override", "_start", "_stop", "chunks")

    def __init__(self, assemble: bool, est_prompt_tokens: int = 0) -> None:
        self._blocks = _Blocks() if assemble else None
        self._est = est_prompt_tokens  # the relay's estimate, for a stream without counts
        self._head: dict[str, Any] | None = None  # message_start's message
        self._start: dict[str, Any] = {}  # message_start's usage
        self._delta: dict[str, Any] | None = None  # the last message_delta's usage
        self._stop: dict[str, Any] = {}  # stop_reason, stop_sequence
        self._override: Usage | None = None
        self.chunks = 0

    @property
    def usage(self) -> Usage | None:
        """Exact once ``message_delta`` came; before, the start's prompt and the deltas
        seen; None (the relay estimates) while no prompt count is known: a translated
        stream only learns it at the end."""
        if self._override is not None:
            return self._override
        merged = {**self._start, **(self._delta or {})}
        prompt = usage_of(merged)
        if prompt.prompt == 0:
            return None
        if self._delta is None:
            completion = max(prompt.completion, self.chunks)
            return replace(prompt, completion=completion, reasoning=0)
        return prompt

    @usage.setter
    def usage(self, value: Usage | None) -> None:
        self._override = value

    def feed(self, payload: bytes, price: Callable[[Usage], float]) -> bytes | None:
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return frame(payload, None)  # not ours to judge; forwarded unnamed
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            return frame(payload, None)
        kind = event["type"]
        blocks = self._blocks
        if kind == "content_block_delta":
            self.chunks += 1
            if blocks is not None:
                blocks.delta(event)
        elif kind == "content_block_start" and blocks is not None:
            blocks.start(event)
        elif kind == "content_block_stop" and blocks is not None:
            blocks.stop(event)
        elif kind == "message_start":
            msg = event.get("message")
            if isinstance(msg, dict):
                self._head = msg
                self._start = msg["usage"] if isinstance(msg.get("usage"), dict) else {}
        elif kind == "message_delta":
            usage, delta = event.get("usage"), event.get("delta")
            self._delta = {**(self._delta or {}), **(usage if isinstance(usage, dict) else {})}
            if isinstance(delta, dict):
                self._stop.update(delta)
            event[COST_FIELD] = price(self._priced())
            return frame(orjson.dumps(event), kind)
        elif kind == "error":  # the upstream's own end: what it cost so far, as for chat
            event[COST_FIELD] = price(self._priced())
            return frame(orjson.dumps(event), kind)
        return frame(payload, kind)

    def _priced(self) -> Usage:
        """The usage to price now; without any counts, the relay's estimate (kept, so the
        event and the accounting say the same)."""
        usage = self.usage
        if usage is None:
            out = _count(self._delta or {}, "output_tokens")
            usage = self._override = Usage(prompt=self._est, completion=max(out, self.chunks))
        return usage

    def assembled(self) -> bytes | None:
        if self._blocks is None or self._head is None:
            return None
        usage = {**self._start, **(self._delta or {})}
        message = {
            **self._head,
            "content": self._blocks.content(),
            "stop_reason": self._stop.get("stop_reason"),
            "stop_sequence": self._stop.get("stop_sequence"),
            "usage": usage,
        }
        return orjson.dumps(message)

    def error(self, message: str, code: str, cost_usd: float) -> bytes:
        return stream_error(message, cost_usd=cost_usd)


# --- the wire ------------------------------------------------------------------------------


def message_usage(usage: Usage) -> dict[str, Any]:
    """``accounting.Usage`` as Anthropic's ``usage``: input excludes the prompt cache."""
    out: dict[str, Any] = {
        "input_tokens": max(0, usage.prompt - usage.cached - usage.cache_write),
        "cache_creation_input_tokens": usage.cache_write,
        "cache_read_input_tokens": usage.cached,
        "output_tokens": usage.completion,
    }
    if usage.cache_write:
        out["cache_creation"] = {
            "ephemeral_5m_input_tokens": usage.cache_write - usage.cache_write_1h,
            "ephemeral_1h_input_tokens": usage.cache_write_1h,
        }
    if usage.reasoning:
        out["output_tokens_details"] = {"thinking_tokens": usage.reasoning}
    return out


def _is_message(obj: Any) -> bool:
    if not isinstance(obj, dict) or obj.get("type") != "message":
        return False
    content = obj.get("content")
    if not isinstance(content, list):
        return False
    return all(isinstance(b, dict) and isinstance(b.get("type"), str) for b in content)


def _replay_block(i: int, block: dict[str, Any]) -> list[bytes]:
    """One content block as content_block_start, its deltas and content_block_stop."""
    kind = block["type"]
    deltas: list[dict[str, Any]] = []
    if kind == "text":
        start: dict[str, Any] = {"type": "text", "text": ""}
        text = str(block.get("text", ""))
        deltas = [{"type": "text_delta", "text": p} for p in pieces(text, 64)]
    elif kind in ("tool_use", "server_tool_use"):
        start = {**block, "input": {}}
        js = orjson.dumps(block.get("input", {})).decode()
        deltas = [
            {"type": "input_json_delta", "partial_json": js[k : k + 64]}
            for k in range(0, len(js), 64)
        ]
    elif kind == "thinking":
        start = {"type": "thinking", "thinking": "", "signature": ""}
        thinking = str(block.get("thinking", ""))
        deltas = [{"type": "thinking_delta", "thinking": p} for p in pieces(thinking, 64)]
        deltas.append({"type": "signature_delta", "signature": str(block.get("signature", ""))})
    else:
        start = block  # redacted thinking, tool results: whole in their start event
    opened = {"type": "content_block_start", "index": i, "content_block": start}
    out = [frame(orjson.dumps(opened), "content_block_start")]
    for d in deltas:
        ev = {"type": "content_block_delta", "index": i, "delta": d}
        out.append(frame(orjson.dumps(ev), "content_block_delta"))
    closed = {"type": "content_block_stop", "index": i}
    out.append(frame(orjson.dumps(closed), "content_block_stop"))
    return out


def replay(message: dict[str, Any]) -> list[bytes]:
    """A stored ``Message`` as the events of a stream, ``message_stop`` included."""
    usage = message["usage"] if isinstance(message.get("usage"), dict) else {}
    head = {
        **message,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {**usage, "output_tokens": 0},
    }
    events = [frame(orjson.dumps({"type": "message_start", "message": head}), "message_start")]
    for i, block in enumerate(message["content"]):
        events.extend(_replay_block(i, block))
    delta = {
        "type": "message_delta",
        "delta": {
            "stop_reason": message.get("stop_reason") or "end_turn",
            "stop_sequence": message.get("stop_sequence"),
        },
        "usage": usage,
        COST_FIELD: 0.0,  # a cache hit costs nothing
    }
    events.append(frame(orjson.dumps(delta), "message_delta"))
    events.append(frame(b'{"type":"message_stop"}', "message_stop"))
    return events


def _kind(payload: bytes) -> str | None:
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    kind = obj.get("type") if isinstance(obj, dict) else None
    return kind if isinstance(kind, str) else None


class MessagesWire:
    api = MESSAGES_API
    path = "messages"
    done_event = b""  # message_stop is an event the client needs: it goes through feed
    deterministic = False

    def payload(self, req: LlmRequest, upstream_model: str) -> bytes:
        body = dict(req.body)
        body["model"] = upstream_model
        if req.stream:
            body["stream"] = True
        else:
            body.pop("stream", None)
        return orjson.dumps(body)

    def cache_key(self, model: str, req: LlmRequest, tenant: str) -> str:
        return cache_key(model, req.body, tenant, ANSWER_FIELDS, MESSAGES_API)

    def answer(self, raw: bytes) -> Usage | None:
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        return usage_of(message.get("usage")) if _is_message(message) else None

    def parser(self, req: LlmRequest, assemble: bool) -> MessagesStream:
        return MessagesStream(assemble, req.est_prompt_tokens)

    def end_of(self, payload: bytes) -> str | None:
        # Parsed only when it may be one: text deltas can say "message_stop" too.
        if b"message_stop" not in payload and b"error" not in payload:
            return None
        kind = _kind(payload)
        return "done" if kind == "message_stop" else "error" if kind == "error" else None

    def first_content(self, payload: bytes) -> bool:
        return _kind(payload) not in ("message_start", "ping")

    def replay(self, stored: bytes, include_usage: bool) -> list[bytes] | None:
        try:
            message = orjson.loads(stored)
        except orjson.JSONDecodeError:
            return None  # a corrupt entry is a miss
        if not _is_message(message):
            return None
        try:
            return replay(message)
        except (AttributeError, TypeError, ValueError, orjson.JSONEncodeError):
            return None  # an entry of an odd shape is a miss, never a 500


# --- the dialect ---------------------------------------------------------------------------


def _header(headers: Mapping[str, str], name: str) -> str | None:
    v = headers.get(name)
    if v is None:  # a plain dict (tests, gRPC metadata) may keep the client's case
        v = next((val for k, val in headers.items() if k.lower() == name), None)
    return v


class MessagesDialect(PassThrough):
    name = "messages"
    summary = "Create a message (Anthropic Messages API)"
    path = "/v1/messages"
    api = MESSAGES_API

    def parse(self, raw: bytes, limits: Limits) -> LlmRequest:
        return parse_messages_request(decode_json(raw), limits)

    def error_body(self, err: ApiError) -> bytes:
        return error_body(err)

    def authorization(self, headers: Mapping[str, str]) -> str | None:
        """``x-api-key`` (Claude Code, litellm, older SDKs) or ``Authorization: Bearer``
        (the current SDKs). ``anthropic-version`` and ``anthropic-beta`` are accepted and
        not checked: a translated request has no use for them."""
        key = _header(headers, "x-api-key")
        if key:
            return f"Bearer {key.strip()}"
        return _header(headers, "authorization")

    def openapi(self, limits: Limits) -> dict[str, Any]:
        return messages_operation(limits)


def count_tokens_openapi(limits: Limits | None = None) -> dict[str, Any]:
    """The OpenAPI fragment of ``POST /v1/messages/count_tokens`` (served by ``count_tokens``)."""
    return count_tokens_operation(limits or Limits())


WIRE = MessagesWire()
DIALECT = MessagesDialect()
register(DIALECT, WIRE)

__all__ = [
    "DIALECT",
    "SERVER_BLOCKS",
    "WIRE",
    "count_tokens",
    "count_tokens_openapi",
    "error_body",
    "is_server_tool",
    "message_usage",
    "parse_messages_request",
    "usage_of",
]
