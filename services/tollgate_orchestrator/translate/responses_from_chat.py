"""A Chat Completions answer as the Responses API's, whole or streamed. Pure.

The way back of ``responses_chat``: a chat completion becomes a Response (a message
item with its text or refusal, a function_call item per tool call, the usage mapped,
``incomplete`` where chat stopped at the cap or the content filter), and a chat stream
the Responses events with their ``sequence_number``, from ``response.created`` to
``response.completed``. Both echo the request's fields as OpenAI does, so the Response
is whole by OpenAI's schema, and follow the chat id, so a whole and a streamed answer
of one completion name the same response.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import orjson

from tollgate_orchestrator.dialects.chat import usage_of as chat_usage_of
from tollgate_orchestrator.sse import DONE
from tollgate_orchestrator.types import LlmRequest
from tollgate_orchestrator.validation import one_of

# ``ResponseError.code`` is an enum: an upstream's other codes become server_error.
_ERROR_CODES = frozenset({"server_error", "rate_limit_exceeded", "invalid_prompt"})
_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}
# The one echoed Response field that is not nullable: left out when unset.
_NOT_NULLABLE = ("user",)


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


# --- the answer ---------------------------------------------------------------------------


def _hex(*parts: Any) -> str:
    return hashlib.sha256(orjson.dumps(parts)).hexdigest()[:48]


def response_usage(usage: Any) -> dict[str, Any] | None:
    """Chat's ``usage`` as a Response's (both count cached tokens inside the prompt)."""
    if not isinstance(usage, dict):
        return None
    u = chat_usage_of(usage)
    details: dict[str, int] = {"cached_tokens": u.cached, "cache_write_tokens": u.cache_write}
    if u.cache_write_1h:
        details["cache_write_1h_tokens"] = u.cache_write_1h
    return {
        "input_tokens": u.prompt,
        "input_tokens_details": details,
        "output_tokens": u.completion,
        "output_tokens_details": {"reasoning_tokens": u.reasoning},
        "total_tokens": u.prompt + u.completion,
    }


def _echo_tool(tool: dict[str, Any]) -> dict[str, Any]:
    out = {"type": "function", "name": tool["name"]}
    if tool.get("description") is not None:
        out["description"] = tool["description"]
    # Both required in a Response (nullable): OpenAI echoes what it ran with.
    return {**out, "parameters": tool.get("parameters"), "strict": tool.get("strict")}


def shell(req: LlmRequest, rid: str, created: int, model: str) -> dict[str, Any]:
    """A Response in progress, with the request's fields echoed as OpenAI does."""
    b = req.body
    fields = {
        "id": rid,
        "object": "response",
        "created_at": created,
        "status": "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": b.get("instructions"),
        "max_output_tokens": b.get("max_output_tokens"),
        "max_tool_calls": b.get("max_tool_calls"),
        "model": model,
        "output": [],
        "parallel_tool_calls": b.get("parallel_tool_calls") is not False,
        "previous_response_id": b.get("previous_response_id"),
        "prompt_cache_key": b.get("prompt_cache_key"),
        "reasoning": b.get("reasoning"),
        "safety_identifier": b.get("safety_identifier"),
        "service_tier": b.get("service_tier"),
        "store": b.get("store") is not False,
        "temperature": b.get("temperature"),
        "text": b.get("text") or {"format": {"type": "text"}},
        "tool_choice": b.get("tool_choice") or "auto",
        "tools": [_echo_tool(t) for t in b.get("tools") or ()],
        "top_logprobs": b.get("top_logprobs"),
        "top_p": b.get("top_p"),
        "truncation": b.get("truncation") or "disabled",
        "user": b.get("user"),
        "metadata": b.get("metadata") or {},
    }
    return {k: v for k, v in fields.items() if v is not None or k not in _NOT_NULLABLE}


def finished(response: dict[str, Any], finish_reason: Any) -> dict[str, Any]:
    """The response with its final status: incomplete where chat stopped at the cap or
    the content filter."""
    reason = _INCOMPLETE.get(finish_reason) if isinstance(finish_reason, str) else None
    if reason is None:
        return {**response, "status": "completed", "completed_at": int(time.time())}
    return {**response, "status": "incomplete", "incomplete_details": {"reason": reason}}


def _ids(chunk: dict[str, Any]) -> tuple[str, int, str]:
    """(id hex, created, model) of a chat answer or chunk: the ids follow the chat id, so
    a whole and a streamed answer of one completion name the same response."""
    created = chunk.get("created")
    created = created if isinstance(created, int) else int(time.time())
    model = chunk.get("model")
    return _hex(chunk.get("id"), created), created, model if isinstance(model, str) else ""


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _call_item(base: str, index: int, call: dict[str, Any], status: str) -> dict[str, Any]:
    fn = _obj(call.get("function"))
    call_id = call.get("id") if isinstance(call.get("id"), str) else f"call_{base[:24]}_{index}"
    return {
        "type": "function_call",
        "id": f"fc_{_hex(base, call_id)}",
        "call_id": call_id,
        "name": fn.get("name") or "",
        "arguments": fn.get("arguments") or "",
        "status": status,
    }


def response_of(completion: Any, req: LlmRequest) -> dict[str, Any] | None:
    """A chat completion as a Response; None when it is not one."""
    if not isinstance(completion, dict) or not isinstance(completion.get("choices"), list):
        return None
    choice = completion["choices"][0] if completion["choices"] else None
    if not isinstance(choice, dict) or not isinstance(choice.get("message"), dict):
        return None
    msg = choice["message"]
    base, created, model = _ids(completion)
    response = finished(
        shell(req, f"resp_{base}", created, model or req.body["model"]), choice.get("finish_reason")
    )
    status = "completed" if response["status"] == "completed" else "incomplete"
    parts = []
    if isinstance(msg.get("content"), str) and msg["content"]:
        parts.append(_text_part(msg["content"]))
    if isinstance(msg.get("refusal"), str) and msg["refusal"]:
        parts.append({"type": "refusal", "refusal": msg["refusal"]})
    tool_calls = msg.get("tool_calls")
    calls = [c for c in tool_calls if isinstance(c, dict)] if isinstance(tool_calls, list) else []
    output: list[dict[str, Any]] = []
    if parts or not calls:
        item = {"type": "message", "id": f"msg_{base}", "status": status, "role": "assistant"}
        output.append({**item, "content": parts or [_text_part("")]})
    output += [_call_item(base, i, c, status) for i, c in enumerate(calls)]
    usage = response_usage(completion.get("usage"))
    return {**response, "output": output, **({"usage": usage} if usage else {})}


# --- the stream ---------------------------------------------------------------------------


class ChatStreamAsResponses:
    """Chat chunks in, Responses events out (JSON payloads, numbered from 0): the
    lifecycle events first, each output item opened as it starts and closed when chat
    finishes, then ``response.completed`` (or ``.incomplete``) with the usage of chat's
    usage chunk on ``[DONE]``; a chat error payload becomes ``response.failed``."""

    def __init__(self, req: LlmRequest) -> None:
        self.req = req
        self._out: list[bytes] = []
        self._seq = 0
        self._response: dict[str, Any] | None = None
        self._base = ""
        self._items: list[dict[str, Any]] = []
        self._open: list[int] = []  # output indices not yet done
        self._message: int | None = None  # the open message item
        self._parts: dict[str, int] = {}  # its open parts: output_text | refusal -> index
        self._calls: dict[int, int] = {}  # chat tool call index -> output index
        self._usage: dict[str, Any] | None = None
        self._finish: Any = None
        self._ended = False

    def feed(self, payload: bytes) -> list[bytes]:
        if self._ended:
            return []
        if payload == DONE:
            self._end()
        else:
            try:
                chunk = orjson.loads(payload)
            except orjson.JSONDecodeError:
                return []  # nothing a Responses client could read
            if isinstance(chunk, dict) and chunk.get("error") is not None:
                self._failed(chunk["error"])
            elif isinstance(chunk, dict):
                self._chunk(chunk)
        out, self._out = self._out, []
        return out

    def _emit(self, kind: str, **fields: Any) -> None:
        # Serialised now: the items go on changing after the event that shows them.
        ev = {"type": kind, **fields, "sequence_number": self._seq}
        self._seq += 1
        self._out.append(orjson.dumps(ev))

    def _start(self, chunk: dict[str, Any]) -> dict[str, Any]:
        if self._response is None:
            self._base, created, model = _ids(chunk)
            rid = f"resp_{self._base}"
            self._response = shell(self.req, rid, created, model or self.req.body["model"])
            self._emit("response.created", response=self._response)
            self._emit("response.in_progress", response=self._response)
        return self._response

    def _chunk(self, chunk: dict[str, Any]) -> None:
        self._start(chunk)
        if isinstance(chunk.get("usage"), dict):
            self._usage = response_usage(chunk["usage"])
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # n is 1 for a Responses request
            delta = _obj(choice.get("delta"))
            for kind, key in (("output_text", "content"), ("refusal", "refusal")):
                if isinstance(delta.get(key), str) and delta[key]:
                    self._part_delta(kind, delta[key])
            calls = delta.get("tool_calls")
            for tc in calls if isinstance(calls, list) else ():
                if isinstance(tc, dict):
                    self._tool_delta(tc)
            if choice.get("finish_reason") is not None:
                self._finish = choice["finish_reason"]
                self._close_all()

    def _open_message(self) -> tuple[int, dict[str, Any]]:
        if self._message is None:
            i = self._message = len(self._items)
            suffix = f"_{i}" if i else ""
            item = {
                "type": "message",
                "id": f"msg_{self._base}{suffix}",
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            }
            self._items.append(item)
            self._open.append(i)
            self._emit("response.output_item.added", output_index=i, item=item)
        return self._message, self._items[self._message]

    def _part(self, kind: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """(where, the part) of the open message's ``kind`` part, opened if need be."""
        i, item = self._open_message()
        at = {"item_id": item["id"], "output_index": i}
        j = self._parts.get(kind)
        if j is None:
            j = self._parts[kind] = len(item["content"])
            part = _text_part("") if kind == "output_text" else {"type": "refusal", "refusal": ""}
            item["content"].append(part)
            self._emit("response.content_part.added", **at, content_index=j, part=part)
        return {**at, "content_index": j}, item["content"][j]

    def _part_delta(self, kind: str, text: str) -> None:
        at, part = self._part(kind)
        if kind == "output_text":
            part["text"] += text
            self._emit("response.output_text.delta", **at, delta=text, logprobs=[])
        else:
            part["refusal"] += text
            self._emit("response.refusal.delta", **at, delta=text)

    def _tool_delta(self, tc: dict[str, Any]) -> None:
        index = tc.get("index", 0) if isinstance(tc.get("index"), int) else 0
        fn = _obj(tc.get("function"))
        i = self._calls.get(index)
        if i is None:
            self._close_message()  # OpenAI ends the message before a call starts
            i = self._calls[index] = len(self._items)
            item = _call_item(
                self._base, index, {**tc, "function": {"name": fn.get("name")}}, "in_progress"
            )
            self._items.append(item)
            self._open.append(i)
            self._emit("response.output_item.added", output_index=i, item=item)
        elif isinstance(fn.get("name"), str):
            self._items[i]["name"] += fn["name"]  # a name sent in pieces
        args = fn.get("arguments")
        if isinstance(args, str) and args:
            item = self._items[i]
            item["arguments"] += args
            self._emit(
                "response.function_call_arguments.delta",
                item_id=item["id"],
                output_index=i,
                delta=args,
            )

    def _status(self) -> str:
        return "incomplete" if one_of(self._finish, _INCOMPLETE) else "completed"

    def _close_message(self) -> None:
        if self._message is None:
            return
        i, item = self._message, self._items[self._message]
        at = {"item_id": item["id"], "output_index": i}
        for j, part in enumerate(item["content"]):
            if part["type"] == "output_text":
                self._emit(
                    "response.output_text.done",
                    **at,
                    content_index=j,
                    text=part["text"],
                    logprobs=[],
                )
            else:
                self._emit("response.refusal.done", **at, content_index=j, refusal=part["refusal"])
            self._emit("response.content_part.done", **at, content_index=j, part=part)
        item["status"] = self._status()
        self._emit("response.output_item.done", output_index=i, item=item)
        self._open.remove(i)
        self._message = None
        self._parts = {}

    def _close_all(self) -> None:
        self._close_message()
        for i in list(self._open):
            item = self._items[i]
            self._emit(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=i,
                name=item["name"],
                arguments=item["arguments"],
            )
            item["status"] = self._status()
            self._emit("response.output_item.done", output_index=i, item=item)
            self._open.remove(i)

    def _end(self) -> None:
        response = self._start({})
        if not self._items:  # an empty answer is still one message, as OpenAI sends it
            self._part("output_text")
        self._close_all()
        done = finished({**response, "output": self._items}, self._finish)
        if self._usage is not None:
            done["usage"] = self._usage
        kind = "response.completed" if done["status"] == "completed" else "response.incomplete"
        self._emit(kind, response=done)
        self._ended = True

    def _failed(self, err: Any) -> None:
        response = self._start({})
        err = _obj(err)
        code = err.get("code")
        code = code if isinstance(code, str) and code in _ERROR_CODES else "server_error"
        message = err.get("message") if isinstance(err.get("message"), str) else ""
        failed = {
            **response,
            "status": "failed",
            "error": {"code": code, "message": message or "The upstream failed."},
            "output": self._items,
        }
        if self._usage is not None:
            failed["usage"] = self._usage
        self._emit("response.failed", response=failed)
        self._ended = True
