"""OpenAI Responses: the client dialect and the upstream wire format. Pure.

As a dialect it passes through (``responses_request`` checks the body): the body goes
upstream as the client sent it, the model replaced, and the answer comes back byte for
byte. As a wire format it frames the named events, reads usage from the terminal
``response.completed``/``response.incomplete`` (or a whole Response) and prices it
there, and replays a cached Response as the event sequence OpenAI sends.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import orjson

from tollgate_common.cachekey import cache_key
from tollgate_orchestrator.accounting import Usage
from tollgate_orchestrator.dialects.base import PassThrough
from tollgate_orchestrator.dialects.registry import register
from tollgate_orchestrator.dialects.responses_request import operation, parse_responses_request
from tollgate_orchestrator.sse import COST_FIELD, pieces
from tollgate_orchestrator.types import RESPONSES_API, LlmRequest
from tollgate_orchestrator.validation import Limits, decode_json, is_int

# Fields that change the answer: the cache key. ``previous_response_id``, ``prompt`` and
# ``conversation`` name context that is not in ``input``: two requests that differ only
# there must not share an answer. ``image`` and ``access_programs`` may change it too.
ANSWER_FIELDS = (
    "input",
    "instructions",
    "tools",
    "tool_choice",
    "text",
    "reasoning",
    "temperature",
    "top_p",
    "max_output_tokens",
    "parallel_tool_calls",
    "truncation",
    "include",
    "service_tier",
    "top_logprobs",
    "max_tool_calls",
    "previous_response_id",
    "prompt",
    "conversation",
    "image",
    "access_programs",
)
# Stream events, by ``type``.
TERMINAL = {
    "response.completed": "done",
    "response.incomplete": "done",
    "response.failed": "error",
    "error": "error",
}
PREAMBLE = frozenset({"response.created", "response.in_progress", "response.queued"})
DELTAS = frozenset({"response.output_text.delta", "response.function_call_arguments.delta"})
_TYPE = re.compile(rb'^\s*\{\s*"type"\s*:\s*"([A-Za-z0-9_.\-]{1,100})"')
_EVENT_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")
REPLAY_PIECE_CHARS = 64


# --- the wire ---------------------------------------------------------------------------


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def usage_of(usage: object) -> Usage:
    """A Response's ``usage``, tolerant of whatever an upstream sends. ``input_tokens``
    includes the cached and cache-write tokens, as ``Usage.prompt`` does."""
    if not isinstance(usage, dict):
        return Usage()
    inp = usage.get("input_tokens_details")
    out = usage.get("output_tokens_details")
    inp = inp if isinstance(inp, dict) else {}
    out = out if isinstance(out, dict) else {}
    return Usage(
        _count(usage.get("input_tokens")),
        _count(usage.get("output_tokens")),
        _count(inp.get("cached_tokens")),
        _count(out.get("reasoning_tokens")),
        _count(inp.get("cache_write_tokens")),
        _count(inp.get("cache_write_1h_tokens")),
    )


def event_type(payload: bytes) -> str | None:
    """The ``type`` of an event payload: read from its head (OpenAI writes it first),
    else from the whole JSON."""
    m = _TYPE.match(payload)
    if m is not None:
        return m.group(1).decode()
    try:
        ev = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    kind = ev.get("type") if isinstance(ev, dict) else None
    return kind if isinstance(kind, str) else None


def named_event(kind: str | None, payload: bytes) -> bytes:
    """One SSE event; an event name that could break the framing is left out."""
    if kind is None or not _EVENT_NAME.match(kind):
        return b"data: " + payload + b"\n\n"
    return b"event: " + kind.encode() + b"\ndata: " + payload + b"\n\n"


class ResponsesStream:
    """One relayed Responses stream: every payload forwarded as it came, framed as a named
    event; the terminal event gets the cost and gives the usage and the whole answer."""

    __slots__ = ("_assemble", "_response", "_sequence", "chunks", "usage")

    def __init__(self, assemble: bool) -> None:
        self._assemble = assemble
        self._response: dict[str, Any] | None = None
        self._sequence = -1
        self.usage: Usage | None = None
        self.chunks = 0

    def feed(self, payload: bytes, price: Callable[[Usage], float]) -> bytes | None:
        try:
            ev = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return named_event(None, payload)  # not ours to judge; forward untouched
        if not isinstance(ev, dict):
            return named_event(None, payload)
        kind = ev.get("type")
        kind = kind if isinstance(kind, str) else None
        if is_int(ev.get("sequence_number")):
            self._sequence = ev["sequence_number"]
        if kind in DELTAS:
            self.chunks += 1
        elif kind in TERMINAL and isinstance(ev.get("response"), dict):
            self._response = ev["response"]
            if isinstance(ev["response"].get("usage"), dict):
                self.usage = usage_of(ev["response"]["usage"])
                if TERMINAL[kind] == "done":
                    ev[COST_FIELD] = price(self.usage)
                    return named_event(kind, orjson.dumps(ev))
        return named_event(kind, payload)

    def assembled(self) -> bytes | None:
        if not self._assemble or self._response is None:
            return None
        if self._response.get("status") not in ("completed", "incomplete"):
            return None
        return orjson.dumps(self._response)

    def error(self, message: str, code: str, cost_usd: float) -> bytes:
        self._sequence += 1
        ev = {
            "type": "error",
            "code": code,
            "message": message,
            "param": None,
            "sequence_number": self._sequence,
            COST_FIELD: cost_usd,
        }
        return named_event("error", orjson.dumps(ev))


def replay_events(response: dict[str, Any], cost_usd: float) -> list[dict[str, Any]]:
    """A whole Response as the events of its stream, numbered from 0: created,
    in_progress, each output item (its parts and deltas), then the terminal event."""
    events: list[dict[str, Any]] = []

    def emit(kind: str, **fields: Any) -> None:
        events.append({"type": kind, **fields, "sequence_number": len(events)})

    shell = {**response, "status": "in_progress", "output": [], "completed_at": None}
    shell.pop("usage", None)  # ResponseUsage is not nullable: absent until the end
    shell["incomplete_details"] = None
    emit("response.created", response=shell)
    emit("response.in_progress", response=shell)
    for i, item in enumerate(response["output"]):
        kind = item.get("type")
        item_id = item.get("id") or item.get("call_id") or ""
        at = {"item_id": item_id, "output_index": i}
        if kind == "message":
            emit(
                "response.output_item.added",
                output_index=i,
                item={**item, "status": "in_progress", "content": []},
            )
            for j, part in enumerate(item.get("content") or ()):
                _replay_part(emit, {**at, "content_index": j}, part)
        elif kind == "function_call":
            args = item.get("arguments") or ""
            added = {**item, "arguments": "", "status": "in_progress"}
            emit("response.output_item.added", output_index=i, item=added)
            for piece in pieces(args, REPLAY_PIECE_CHARS):
                emit("response.function_call_arguments.delta", **at, delta=piece)
            emit(
                "response.function_call_arguments.done",
                **at,
                name=item.get("name", ""),
                arguments=args,
            )
        else:
            emit("response.output_item.added", output_index=i, item=item)
        emit("response.output_item.done", output_index=i, item=item)
    status = response.get("status")
    terminal = "response.incomplete" if status == "incomplete" else "response.completed"
    emit(terminal, response=response)
    events[-1][COST_FIELD] = cost_usd
    return events


def _replay_part(emit: Callable[..., None], at: dict[str, Any], part: dict[str, Any]) -> None:
    kind = part.get("type")
    if kind == "output_text":
        text = part.get("text") or ""
        emit("response.content_part.added", **at, part={**part, "text": ""})
        for piece in pieces(text, REPLAY_PIECE_CHARS):
            emit("response.output_text.delta", **at, delta=piece, logprobs=[])
        emit("response.output_text.done", **at, text=text, logprobs=part.get("logprobs") or [])
    elif kind == "refusal":
        refusal = part.get("refusal") or ""
        emit("response.content_part.added", **at, part={**part, "refusal": ""})
        for piece in pieces(refusal, REPLAY_PIECE_CHARS):
            emit("response.refusal.delta", **at, delta=piece)
        emit("response.refusal.done", **at, refusal=refusal)
    else:
        emit("response.content_part.added", **at, part=part)
    emit("response.content_part.done", **at, part=part)


def _response_of(raw: bytes) -> dict[str, Any] | None:
    """A whole Response, or None when ``raw`` is not one."""
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(parsed, dict) or parsed.get("object") != "response":
        return None
    output = parsed.get("output")
    if not isinstance(output, list) or not all(isinstance(i, dict) for i in output):
        return None
    return parsed


class ResponsesWire:
    api = RESPONSES_API
    path = "responses"
    done_event = b""  # response.completed is itself the client's last event
    deterministic = False

    def payload(self, req: LlmRequest, upstream_model: str) -> bytes:
        body = dict(req.body)
        body["model"] = upstream_model
        if req.stream:
            body["stream"] = True
        else:
            body.pop("stream_options", None)  # only valid with a stream
        return orjson.dumps(body)

    def cache_key(self, model: str, req: LlmRequest, tenant: str) -> str:
        return cache_key(model, req.body, tenant, ANSWER_FIELDS, RESPONSES_API)

    def answer(self, raw: bytes) -> Usage | None:
        response = _response_of(raw)
        return None if response is None else usage_of(response.get("usage"))

    def parser(self, req: LlmRequest, assemble: bool) -> ResponsesStream:
        return ResponsesStream(assemble)

    def end_of(self, payload: bytes) -> str | None:
        kind = event_type(payload)
        return TERMINAL.get(kind) if kind is not None else None

    def first_content(self, payload: bytes) -> bool:
        return event_type(payload) not in PREAMBLE

    def replay(self, stored: bytes, include_usage: bool) -> list[bytes] | None:
        response = _response_of(stored)
        if response is None or response.get("status") not in ("completed", "incomplete"):
            return None  # a corrupt or unfinished entry is a miss
        try:
            events = replay_events(response, 0.0)
            return [named_event(ev["type"], orjson.dumps(ev)) for ev in events]
        except (AttributeError, TypeError, ValueError):
            return None  # an entry of an odd shape is a miss, never a 500


# --- the dialect ------------------------------------------------------------------------


class ResponsesDialect(PassThrough):
    name = "responses"
    summary = "Create a model response (OpenAI Responses API)"
    path = "/v1/responses"
    api = RESPONSES_API

    def parse(self, raw: bytes, limits: Limits) -> LlmRequest:
        return parse_responses_request(decode_json(raw), limits)

    def openapi(self, limits: Limits) -> dict[str, Any]:
        return operation(limits)


WIRE = ResponsesWire()
DIALECT = ResponsesDialect()
register(DIALECT, WIRE)
