"""OpenAI Responses (``POST /v1/responses``): the create body as a ``Prompt``, the
answer as a ``Response`` object or as its named SSE events.

Stateless, as llmock is: ``previous_response_id`` and ``item_reference`` items are
accepted and not resolved (the gateway resolves them before a request reaches an
upstream), ``store`` is echoed, ``background`` and ``conversation`` are refused.
Hosted tools (web_search, file_search, mcp, namespace, custom, ...) are accepted and
never called: only function tools are. Reasoning models (o-series, gpt-5) answer with
a ``reasoning`` item first; with ``include: ["reasoning.encrypted_content"]`` it
carries an ``encrypted_content`` sealed with this process's key, and a reasoning
item sent back whose content this process did not seal (changed, or from another
simulator) is refused as OpenAI refuses it: 400 ``invalid_encrypted_content``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass
from typing import Any

import orjson

from tollgate_simulator.config import is_reasoning_model
from tollgate_simulator.generate import (
    EFFORTS,
    Answer,
    Function,
    Prompt,
    RequestError,
    generate,
    invalid,
    is_int,
    load_object,
    missing,
    prompt_usage,
    split,
)
from tollgate_simulator.wire import named_event

_ROLES = frozenset({"user", "assistant", "system", "developer"})
_FORMATS = frozenset({"text", "json_object", "json_schema"})
ENCRYPTED = "reasoning.encrypted_content"
_KEY = os.urandom(16)  # seals encrypted_content: another process cannot verify it
_SEAL = "sim1."
_MIN_OUTPUT = 16  # OpenAI refuses max_output_tokens below 16


def _value_error(param: str, message: str) -> RequestError:
    return RequestError(400, f"Invalid '{param}': {message}", param, "invalid_value")


def seal(seed: int, tokens: int) -> str:
    """An opaque reasoning blob that only this process can verify."""
    payload = seed.to_bytes(8, "big") + tokens.to_bytes(4, "big")
    tag = hmac.new(_KEY, payload, hashlib.sha256).digest()[:16]
    return _SEAL + base64.urlsafe_b64encode(payload + tag).decode()


def verified(blob: str) -> bool:
    if not blob.startswith(_SEAL):
        return False
    try:
        raw = base64.urlsafe_b64decode(blob[len(_SEAL) :])
    except ValueError:
        return False
    payload, tag = raw[:12], raw[12:]
    return len(raw) == 28 and hmac.compare_digest(
        tag, hmac.new(_KEY, payload, hashlib.sha256).digest()[:16]
    )


# --- the request ------------------------------------------------------------------------


@dataclass(slots=True)
class ResponsesRequest:
    model: str
    stream: bool
    prompt: Prompt
    data: dict[str, Any]  # the body, for the fields a Response echoes
    encrypted: bool  # include has reasoning.encrypted_content
    obfuscate: bool  # stream_options.include_obfuscation (on by default)

    def reply(self, id_: str, created: int) -> ResponsesReply:
        return ResponsesReply(self, generate(self.prompt), id_, created)


def _check_item(item: Any, where: str) -> None:
    if not isinstance(item, dict):
        raise invalid(where, "an object")
    kind = item.get("type")
    if kind is None or kind == "message":
        if item.get("role") not in _ROLES:
            raise _value_error(f"{where}.role", f"expected one of {', '.join(sorted(_ROLES))}.")
        content = item.get("content")
        if not isinstance(content, (str, list)):
            raise invalid(f"{where}.content", "a string or an array of content parts")
    elif not isinstance(kind, str):
        raise invalid(f"{where}.type", "a string")
    elif kind == "function_call":
        for field in ("call_id", "name", "arguments"):
            if not isinstance(item.get(field), str):
                raise missing(f"{where}.{field}")
    elif kind == "function_call_output":
        if not isinstance(item.get("call_id"), str):
            raise missing(f"{where}.call_id")
        if not isinstance(item.get("output"), (str, list)):
            raise missing(f"{where}.output")
    elif kind == "reasoning":
        blob = item.get("encrypted_content")
        if blob is not None and not (isinstance(blob, str) and verified(blob)):
            raise RequestError(
                400,
                f"The encrypted content for item {item.get('id')} could not be verified.",
                f"{where}.encrypted_content",
                "invalid_encrypted_content",
            )


def _messages(instructions: Any, items: list[Any]) -> list[dict[str, Any]]:
    """The conversation chat-shaped, as a translation to Chat Completions would send it."""
    out: list[dict[str, Any]] = []
    if isinstance(instructions, str) and instructions:
        out.append({"role": "system", "content": instructions})
    elif isinstance(instructions, list):
        out.extend(_messages(None, instructions))
    for item in items:
        kind = item.get("type")
        if kind is None or kind == "message":
            out.append({"role": item["role"], "content": item["content"]})
        elif kind == "function_call":
            call = {
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"]},
            }
            last = out[-1] if out else None
            if last and last["role"] == "assistant" and last.get("tool_calls"):
                last["tool_calls"].append(call)  # parallel calls: one assistant turn
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output" or kind.endswith("_call_output"):
            out.append(
                {"role": "tool", "tool_call_id": item.get("call_id"), "content": item.get("output")}
            )
        elif kind not in ("reasoning", "item_reference"):
            # A hosted tool's call or result, a compaction...: context, as text.
            out.append({"role": "assistant", "content": orjson.dumps(item).decode()})
    return out


def _tool_choice(
    choice: Any, fns: tuple[Function, ...]
) -> tuple[Any, str | None, tuple[Function, ...]]:
    """(auto|none|required, forced name, callable functions) from Responses' tool_choice."""
    if choice is None or choice in ("auto", "none", "required"):
        return choice or "auto", None, fns
    if not isinstance(choice, dict):
        raise _value_error("tool_choice", "expected none, auto, required or an object.")
    kind = choice.get("type")
    if kind == "function":
        name = choice.get("name")
        if not isinstance(name, str):
            raise missing("tool_choice.name")
        return "required", name, fns
    if kind == "allowed_tools":
        allowed = choice.get("tools")
        names = (
            {t.get("name") for t in allowed if isinstance(t, dict)}
            if isinstance(allowed, list)
            else set()
        )
        mode = "required" if choice.get("mode") == "required" else "auto"
        return mode, None, tuple(f for f in fns if f.name in names)
    return "auto", None, fns  # a hosted tool: never run here, so the model answers


def _input_items(data: dict[str, Any]) -> list[Any]:
    raw = data.get("input")
    if raw is None:
        raise missing("input")
    if isinstance(raw, str):
        return [{"role": "user", "content": raw}]
    if not isinstance(raw, list):
        raise invalid("input", "a string or an array of input items")
    for i, item in enumerate(raw):
        _check_item(item, f"input[{i}]")
    instructions = data.get("instructions")
    if isinstance(instructions, list):
        for i, item in enumerate(instructions):
            _check_item(item, f"instructions[{i}]")
    elif instructions is not None and not isinstance(instructions, str):
        raise invalid("instructions", "a string")
    return raw


def _check_options(data: dict[str, Any]) -> None:
    """The fields the answer echoes or that change nothing here: right types, or a 400."""
    if data.get("background"):
        raise _value_error("background", "background responses are not simulated (stateless).")
    if data.get("conversation") is not None:
        raise _value_error("conversation", "conversations are not simulated (stateless).")
    for name in ("stream", "store", "parallel_tool_calls"):
        if data.get(name) is not None and not isinstance(data[name], bool):
            raise invalid(name, "a boolean")
    for name in ("previous_response_id", "user", "prompt_cache_key", "safety_identifier"):
        if data.get(name) is not None and not isinstance(data[name], str):
            raise invalid(name, "a string")
    for name, top in (("temperature", 2), ("top_p", 1)):
        v = data.get(name)
        if v is not None and (
            isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= top
        ):
            raise _value_error(name, f"expected a number between 0 and {top}.")
    metadata = data.get("metadata")
    if metadata is not None and not (
        isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())
    ):
        raise invalid("metadata", "an object of string values")
    include = data.get("include")
    if include is not None and not (
        isinstance(include, list) and all(isinstance(x, str) for x in include)
    ):
        raise invalid("include", "an array of strings")
    for name in ("reasoning", "text", "stream_options"):
        if data.get(name) is not None and not isinstance(data[name], dict):
            raise invalid(name, "an object")
    effort = (data.get("reasoning") or {}).get("effort")
    if effort is not None and effort not in EFFORTS:
        raise _value_error("reasoning.effort", f"expected one of {', '.join(EFFORTS)}.")


def _tools(data: dict[str, Any]) -> list[dict[str, Any]]:
    tools = data.get("tools")
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise invalid("tools", "an array of objects")
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
            raise missing(f"tools[{i}].type")
        if tool["type"] == "function" and not (isinstance(tool.get("name"), str) and tool["name"]):
            raise missing(f"tools[{i}].name")
    return tools


def _format(data: dict[str, Any]) -> dict[str, Any]:
    fmt = (data.get("text") or {}).get("format") or {"type": "text"}
    if not isinstance(fmt, dict) or fmt.get("type") not in _FORMATS:
        raise _value_error("text.format.type", f"expected one of {', '.join(sorted(_FORMATS))}.")
    if fmt["type"] == "json_schema" and not isinstance(fmt.get("schema"), dict):
        raise missing("text.format.schema")
    return fmt


def parse_request(body: bytes) -> ResponsesRequest:
    data = load_object(body)
    model = data.get("model")
    if model is None:
        raise missing("model")
    if not isinstance(model, str) or not model:
        raise invalid("model", "a non-empty string")
    items = _input_items(data)
    _check_options(data)
    cap = data.get("max_output_tokens")
    if cap is not None and (not is_int(cap) or cap < _MIN_OUTPUT):
        raise RequestError(
            400,
            f"Invalid 'max_output_tokens': integer below minimum value. Expected a value >= "
            f"{_MIN_OUTPUT}, but got {cap} instead.",
            "max_output_tokens",
            "integer_below_min_value",
        )
    functions = [t for t in _tools(data) if t["type"] == "function"]
    fmt = _format(data)

    messages = _messages(data.get("instructions"), items)
    # Counted as a translation to chat would send them: the same usage either way.
    chat_tools = [
        {
            "type": "function",
            "function": {k: t[k] for k in ("name", "description", "parameters") if k in t},
        }
        for t in functions
    ]
    prompt_tokens, cached = prompt_usage(messages, chat_tools or None)
    fns = tuple(Function(t["name"], t.get("parameters")) for t in functions)
    mode, forced, fns = _tool_choice(data.get("tool_choice"), fns)
    prompt = Prompt(
        model=model,
        messages=messages,
        prompt_tokens=prompt_tokens,
        cached_tokens=cached,
        functions=fns,
        tool_choice=mode,
        forced=forced,
        parallel_tool_calls=data.get("parallel_tool_calls") is not False,
        max_tokens=cap,
        json_format=fmt["type"] if fmt["type"] != "text" else None,
        json_schema=fmt.get("schema"),
        reasoning_effort=(data.get("reasoning") or {}).get("effort"),
    )
    return ResponsesRequest(
        model=model,
        stream=bool(data.get("stream")),
        prompt=prompt,
        data=data,
        encrypted=ENCRYPTED in (data.get("include") or ()),
        obfuscate=(data.get("stream_options") or {}).get("include_obfuscation") is not False,
    )


# --- the Response -------------------------------------------------------------------------


def usage(answer: Answer) -> dict[str, Any]:
    return {
        "input_tokens": answer.prompt_tokens,
        "input_tokens_details": {
            "cached_tokens": answer.cached_tokens,
            "cache_write_tokens": answer.cache_write_tokens,
        },
        "output_tokens": answer.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": answer.reasoning_tokens},
        "total_tokens": answer.prompt_tokens + answer.completion_tokens,
    }


def _echo_tool(tool: dict[str, Any]) -> dict[str, Any]:
    if tool.get("type") != "function":
        return tool
    # As OpenAI echoes a function tool: every field present, strict on by default.
    return {
        "type": "function",
        "name": tool["name"],
        "description": tool.get("description"),
        "parameters": tool.get("parameters"),
        "strict": tool.get("strict", True),
    }


@dataclass(slots=True)
class ResponsesReply:
    req: ResponsesRequest
    answer: Answer
    id_: str
    created: int

    @property
    def suffix(self) -> str:
        return self.id_.removeprefix("resp_")

    @property
    def tokens(self) -> int:
        return self.answer.completion_tokens

    @property
    def think_tokens(self) -> int:
        return 0  # paced on the reasoning item's done event instead, as OpenAI streams it

    @property
    def status(self) -> str:
        return "incomplete" if self.answer.finish_reason == "length" else "completed"

    def response(self, status: str, output: list[dict[str, Any]] | None) -> dict[str, Any]:
        """The Response object; ``output`` None = not finished yet (stream snapshots)."""
        d = self.req.data
        model = self.req.model
        effort = (d.get("reasoning") or {}).get("effort") or "medium"
        summary = (d.get("reasoning") or {}).get("summary")
        done = output is not None
        return {
            "id": self.id_,
            "object": "response",
            "created_at": self.created,
            "status": status,
            "background": False,
            "completed_at": self.created if status == "completed" else None,
            "error": None,
            "incomplete_details": (
                {"reason": "max_output_tokens"} if status == "incomplete" else None
            ),
            "instructions": d.get("instructions"),
            "max_output_tokens": d.get("max_output_tokens"),
            "max_tool_calls": d.get("max_tool_calls"),
            "model": model,
            "output": output or [],
            "parallel_tool_calls": d.get("parallel_tool_calls") is not False,
            "previous_response_id": d.get("previous_response_id"),
            "prompt_cache_key": d.get("prompt_cache_key"),
            "reasoning": (
                {"effort": effort, "summary": summary}
                if is_reasoning_model(model)
                else {"effort": None, "summary": None}
            ),
            "safety_identifier": d.get("safety_identifier"),
            "service_tier": "default",
            "store": d.get("store") is not False,
            "temperature": d.get("temperature", 1.0),
            "text": d.get("text") or {"format": {"type": "text"}, "verbosity": "medium"},
            "tool_choice": d.get("tool_choice") or "auto",
            "tools": [_echo_tool(t) for t in d.get("tools") or ()],
            "top_logprobs": d.get("top_logprobs", 0),
            "top_p": d.get("top_p", 1.0),
            "truncation": d.get("truncation") or "disabled",
            "metadata": d.get("metadata") or {},
            # Not null: the schema has usage and user as objects and strings only.
            **({"usage": usage(self.answer)} if done else {}),
            **({"user": d["user"]} if isinstance(d.get("user"), str) else {}),
        }

    def _reasoning_item(self, done: bool) -> dict[str, Any]:
        item: dict[str, Any] = {"id": f"rs_{self.suffix}", "type": "reasoning", "summary": []}
        if done and self.req.encrypted:
            item["encrypted_content"] = seal(self.answer.seed, self.answer.reasoning_tokens)
        return item

    def _message(self, status: str, text: str | None) -> dict[str, Any]:
        content = [] if text is None else [_text_part(text)]
        return {
            "id": f"msg_{self.suffix}",
            "type": "message",
            "status": status,
            "role": "assistant",
            "content": content,
        }

    def _call(self, i: int, status: str, arguments: str) -> dict[str, Any]:
        call = self.answer.tool_calls[i]
        return {
            "id": f"fc_{self.suffix}{i:02d}",
            "type": "function_call",
            "status": status,
            "arguments": arguments,
            "call_id": call.id,
            "name": call.name,
        }

    def output(self) -> list[dict[str, Any]]:
        ans = self.answer
        items = [self._reasoning_item(True)] if ans.reasoning_tokens else []
        items += [self._call(i, "completed", c.arguments) for i, c in enumerate(ans.tool_calls)]
        if not ans.tool_calls and ans.pieces:
            items.append(self._message(self.status, ans.text))
        return items

    def body(self) -> bytes:
        return orjson.dumps(self.response(self.status, self.output()))

    @property
    def preamble(self) -> int:
        # created, in_progress, [reasoning added + done], item added, [content part added]
        reasoning = 2 if self.answer.reasoning_tokens else 0
        return 2 + reasoning + (1 if self.answer.tool_calls else 2)

    closing = 1  # response.completed / response.incomplete

    def events(self) -> list[tuple[bytes, int]]:
        ans = self.answer
        ev = _Events()
        ev.emit("response.created", response=self.response("in_progress", None))
        ev.emit("response.in_progress", response=self.response("in_progress", None))
        index = 0
        if ans.reasoning_tokens:
            ev.emit("response.output_item.added", output_index=0, item=self._reasoning_item(False))
            # The thinking happens here, after the response was created: pace it here.
            ev.emit(
                "response.output_item.done",
                ans.reasoning_tokens,
                output_index=0,
                item=self._reasoning_item(True),
            )
            index = 1
        for i, call in enumerate(ans.tool_calls):
            at, item_id = index + i, f"fc_{self.suffix}{i:02d}"
            item = self._call(i, "in_progress", "")
            ev.emit("response.output_item.added", 1, output_index=at, item=item)
            for part in split(call.arguments, 16):
                delta: dict[str, Any] = {"item_id": item_id, "output_index": at, "delta": part}
                ev.emit("response.function_call_arguments.delta", 4, **delta)
            ev.emit(
                "response.function_call_arguments.done",
                item_id=item_id,
                output_index=at,
                name=call.name,
                arguments=call.arguments,
            )
            item = self._call(i, "completed", call.arguments)
            ev.emit("response.output_item.done", output_index=at, item=item)
        if not ans.tool_calls and ans.pieces:
            self._text_events(ev, index)
        final = "response.incomplete" if self.status == "incomplete" else "response.completed"
        ev.emit(final, response=self.response(self.status, self.output()))
        return ev.out

    def _text_events(self, ev: _Events, index: int) -> None:
        item_id = f"msg_{self.suffix}"
        where: dict[str, Any] = {"item_id": item_id, "output_index": index, "content_index": 0}
        ev.emit(
            "response.output_item.added",
            output_index=index,
            item=self._message("in_progress", None),
        )
        ev.emit("response.content_part.added", **where, part=_text_part(""))
        # Deltas from a byte template: one small concatenation per token.
        head = (
            b'{"type":"response.output_text.delta","item_id":"' + item_id.encode()
            + b'","output_index":' + str(index).encode()
            + b',"content_index":0,"logprobs":[],"sequence_number":'
        )  # fmt: skip
        for piece in self.answer.pieces:
            pad = b""
            if self.req.obfuscate:  # OpenAI pads deltas so their length leaks nothing
                pad = b',"obfuscation":"' + b"x" * (16 - len(piece) % 16) + b'"'
            delta = b',"delta":' + orjson.dumps(piece) + pad + b"}"
            ev.raw("response.output_text.delta", head + str(ev.seq).encode() + delta, 1)
        text = self.answer.text
        ev.emit("response.output_text.done", **where, text=text, logprobs=[])
        ev.emit("response.content_part.done", **where, part=_text_part(text))
        item = self._message(self.status, text)
        ev.emit("response.output_item.done", output_index=index, item=item)


class _Events:
    """A Responses stream being built: every event gets the next ``sequence_number``."""

    def __init__(self) -> None:
        self.out: list[tuple[bytes, int]] = []

    @property
    def seq(self) -> int:
        return len(self.out)

    def emit(self, kind: str, tokens: int = 0, **fields: Any) -> None:
        data = {"type": kind, "sequence_number": self.seq, **fields}
        self.out.append((named_event(kind, orjson.dumps(data)), tokens))

    def raw(self, kind: str, data: bytes, tokens: int) -> None:
        self.out.append((named_event(kind, data), tokens))


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
