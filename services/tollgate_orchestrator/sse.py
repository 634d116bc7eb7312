"""Server-sent events for chat completions: split, assemble, replay. Pure.

Upstream chunks are forwarded as received; they are parsed only to capture usage
and to assemble the whole answer for the cache. A cached answer replays as the
chunks OpenAI would have sent.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

DONE = b"[DONE]"
DONE_EVENT = b"data: [DONE]\n\n"
COST_FIELD = "x_tollgate_cost_usd"  # added to the usage chunk: a stream has no cost header
_REPLAY_PIECE = re.compile(r"\S+\s*|\s+")


MAX_LINE_BYTES = 1024 * 1024


class LineTooLong(ValueError):
    """An SSE line past the cap: a protocol error, the stream ends."""


class StreamStalled(Exception):
    """A stream ran past its total duration (``duration``) or went without a data
    payload for too long (``idle``; comments and keep-alives are not progress)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LineSplitter:
    """Bytes in, complete lines out (without their line ending); an unfinished line
    may not grow past ``max_line`` bytes (``LineTooLong``)."""

    __slots__ = ("_buf", "max_line")

    def __init__(self, max_line: int = MAX_LINE_BYTES) -> None:
        self._buf = b""
        self.max_line = max_line

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf + data if self._buf else data
        lines = buf.split(b"\n")
        self._buf = lines.pop()
        if len(self._buf) > self.max_line:
            self._buf = b""
            raise LineTooLong(f"an SSE line is longer than {self.max_line} bytes")
        return [line[:-1] if line.endswith(b"\r") else line for line in lines]

    @property
    def pending(self) -> bytes:
        return self._buf


def data_of(line: bytes) -> bytes | None:
    """The payload of a ``data:`` line; None for comments, blank and other fields."""
    if not line.startswith(b"data:"):
        return None
    payload = line[5:]
    return payload[1:] if payload.startswith(b" ") else payload


def event(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


def error_event(message: str, type_: str, code: str | None, cost_usd: float | None) -> bytes:
    err: dict[str, Any] = {"message": message, "type": type_, "param": None, "code": code}
    body: dict[str, Any] = {"error": err}
    if cost_usd is not None:
        body[COST_FIELD] = cost_usd
    return event(orjson.dumps(body))


class Assembler:
    """Rebuilds a ``chat.completion`` from stream chunks, for the cache."""

    def __init__(self) -> None:
        self.head: dict[str, Any] = {}
        self.choices: dict[int, dict[str, Any]] = {}
        self.usage: dict[str, Any] | None = None

    def add(self, chunk: dict[str, Any]) -> None:
        # Azure's prompt-filter chunk comes first with an empty id: take the head from
        # the first chunk that names the completion.
        if not self.head or (not self.head.get("id") and chunk.get("id")):
            self.head = {
                k: chunk[k]
                for k in ("id", "created", "model", "system_fingerprint", "service_tier")
                if k in chunk
            }
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        for c in chunk.get("choices") or ():
            if isinstance(c, dict):
                self._add_choice(c)

    def _add_choice(self, c: dict[str, Any]) -> None:
        idx = c.get("index", 0)
        ch = self.choices.get(idx)
        if ch is None:
            ch = self.choices[idx] = {
                "index": idx,
                # refusal is required (string or null) in OpenAI's ChatCompletionResponseMessage.
                "message": {"role": "assistant", "content": None, "refusal": None},
                "logprobs": None,
                "finish_reason": None,
                "_content": [],
                "_tools": {},
            }
        delta = c.get("delta") or {}
        if isinstance(delta.get("content"), str):
            ch["_content"].append(delta["content"])
        if isinstance(delta.get("refusal"), str):
            ch["message"]["refusal"] = (ch["message"].get("refusal") or "") + delta["refusal"]
        for tc in delta.get("tool_calls") or ():
            if not isinstance(tc, dict):
                continue
            slot = ch["_tools"].setdefault(
                tc.get("index", 0),
                {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
            )
            if tc.get("id"):
                slot["id"] = tc["id"]
            fn = tc.get("function") or {}
            slot["function"]["name"] += fn.get("name") or ""
            slot["function"]["arguments"] += fn.get("arguments") or ""
        if c.get("finish_reason") is not None:
            ch["finish_reason"] = c["finish_reason"]

    def completion(self) -> dict[str, Any]:
        choices = []
        for idx in sorted(self.choices):
            ch = dict(self.choices[idx])
            content = ch.pop("_content")
            tools = ch.pop("_tools")
            msg = dict(ch["message"])
            if content:
                msg["content"] = "".join(content)
            if tools:
                msg["tool_calls"] = [tools[k] for k in sorted(tools)]
            ch["message"] = msg
            choices.append(ch)
        out: dict[str, Any] = {**self.head, "object": "chat.completion", "choices": choices}
        if self.usage is not None:
            out["usage"] = self.usage
        return out


def pieces(text: str, size: int) -> list[str]:
    """Split text into pieces of about ``size`` characters at word boundaries."""
    out: list[str] = []
    cur = ""
    for m in _REPLAY_PIECE.finditer(text):
        if cur and len(cur) + len(m.group()) > size:
            out.append(cur)
            cur = ""
        cur += m.group()
    if cur:
        out.append(cur)
    return out


def replay(
    completion: dict[str, Any], include_usage: bool, cost_usd: float, piece_chars: int = 64
) -> list[bytes]:
    """A stored ``chat.completion`` as the SSE events of a stream, ``[DONE]`` included."""
    head: dict[str, Any] = {
        "id": completion.get("id", "chatcmpl-tollgate-cache"),
        "object": "chat.completion.chunk",
        "created": completion.get("created", 0),
        "model": completion.get("model", ""),
    }
    if "system_fingerprint" in completion:
        head["system_fingerprint"] = completion["system_fingerprint"]
    events: list[bytes] = []

    def emit(choices: list[dict[str, Any]], **extra: Any) -> None:
        events.append(event(orjson.dumps({**head, "choices": choices, **extra})))

    for ch in completion.get("choices") or ():
        idx = ch.get("index", 0)
        msg = ch.get("message") or {}
        first: dict[str, Any] = {"role": msg.get("role", "assistant"), "content": ""}
        emit([{"index": idx, "delta": first, "logprobs": None, "finish_reason": None}])
        content = msg.get("content")
        if isinstance(content, str):
            for piece in pieces(content, piece_chars):
                d: dict[str, Any] = {"content": piece}
                emit([{"index": idx, "delta": d, "logprobs": None, "finish_reason": None}])
        for i, tc in enumerate(msg.get("tool_calls") or ()):
            d = {"tool_calls": [{"index": i, **tc}]}
            emit([{"index": idx, "delta": d, "logprobs": None, "finish_reason": None}])
        fin = ch.get("finish_reason") or "stop"
        emit([{"index": idx, "delta": {}, "logprobs": None, "finish_reason": fin}])
    if include_usage:
        emit([], usage=completion.get("usage"), **{COST_FIELD: cost_usd})
    events.append(DONE_EVENT)
    return events
