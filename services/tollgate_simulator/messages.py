"""Anthropic Messages (``POST /v1/messages``, ``/v1/messages/count_tokens``): the body
as a ``Prompt``, the answer as a ``Message`` or as its named SSE events.

Errors use Anthropic's shape (``{"type":"error","error":{"type","message"}}``, the
message naming the field as ``messages.0.role: ...``); the HTTP app renders them.

Prompt caching follows Anthropic's rules, statelessly: only blocks marked with
``cache_control`` (or a top-level ``cache_control``) are breakpoints, and nothing is
cached below 1024 tokens. The prefix up to the last breakpoint but one counts as read
from the cache (as if an earlier turn had written it) and the rest up to the last
breakpoint as written; with one breakpoint the whole prefix is read, as chat's static
prefix is. ``usage.input_tokens`` excludes both, as Anthropic's does. ``thinking``,
``stop_sequences`` and server tools (``web_search_*``, ``bash_*``...) are accepted and
not simulated: no thinking blocks, no early stop, only custom tools are called.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from tollgate_simulator.generate import (
    Answer,
    Function,
    Prompt,
    RequestError,
    content_tokens,
    generate,
    is_int,
    load_object,
    split,
    text_tokens,
)
from tollgate_simulator.wire import named_event

_CACHE_MIN = 1024
_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
# Anthropic's tool_choice types as the generator's modes.
_CHOICES: dict[str, Literal["auto", "none", "required"]] = {
    "auto": "auto",
    "any": "required",
    "tool": "required",
    "none": "none",
}


def _error(param: str, message: str) -> RequestError:
    return RequestError(400, f"{param}: {message}", param)


def _required(param: str) -> RequestError:
    return _error(param, "Field required")


# --- the request ------------------------------------------------------------------------


@dataclass(slots=True)
class MessagesRequest:
    model: str
    stream: bool
    prompt: Prompt
    ttl: Literal["5m", "1h"]  # of the last breakpoint: where cache writes are billed

    def reply(self, id_: str, created: int) -> MessagesReply:
        return MessagesReply(self, generate(self.prompt), id_)


@dataclass(slots=True)
class CountTokens:
    """``/v1/messages/count_tokens``: the same parse, answered with the input tokens."""

    model: str
    total: int
    stream: bool = False

    def reply(self, id_: str, created: int) -> CountReply:
        return CountReply(self.total)


@dataclass(slots=True)
class CountReply:
    total: int
    tokens: int = 0
    think_tokens: int = 0
    preamble: int = 0
    closing: int = 0

    def body(self) -> bytes:
        return orjson.dumps({"input_tokens": self.total})

    def events(self) -> list[tuple[bytes, int]]:
        return []


def _blocks(content: Any, where: str) -> list[dict[str, Any]]:
    """A message's (or system's) content as blocks; a string is one text block."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise _error(where, "Input should be a valid list")
    for i, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise _required(f"{where}.{i}.type")
        if block["type"] == "text" and not isinstance(block.get("text"), str):
            raise _required(f"{where}.{i}.text")
        if block["type"] == "tool_use" and not isinstance(block.get("name"), str):
            raise _required(f"{where}.{i}.name")
        if block["type"] == "tool_result" and not isinstance(block.get("tool_use_id"), str):
            raise _required(f"{where}.{i}.tool_use_id")
    return content


def _block_tokens(block: dict[str, Any]) -> int:
    kind = block["type"]
    if kind == "text":
        return text_tokens(block["text"])
    if kind == "tool_result":
        return 3 + content_tokens(block.get("content"))
    if kind in ("image", "document"):
        return 85  # as chat counts an image part
    return text_tokens(orjson.dumps(block).decode())  # tool_use, thinking, ...


def _chat_shaped(role: str, blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One Anthropic turn as chat messages: tool results become "tool" messages."""
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for b in blocks:
        kind = b["type"]
        if kind == "text":
            parts.append({"type": "text", "text": b["text"]})
        elif kind == "tool_use":
            args = orjson.dumps(b.get("input") or {}).decode()
            fn = {"name": b["name"], "arguments": args}
            calls.append({"id": b.get("id"), "type": "function", "function": fn})
        elif kind == "tool_result":
            c = b.get("content")
            out.append({"role": "tool", "tool_call_id": b["tool_use_id"], "content": c or ""})
        elif kind not in ("thinking", "redacted_thinking"):
            parts.append({"type": kind})  # an image or document: no text
    if parts or calls:
        msg: dict[str, Any] = {"role": role, "content": parts or None}
        if len(parts) == 1 and parts[0].get("text") is not None:
            msg["content"] = parts[0]["text"]
        if calls:
            msg["tool_calls"] = calls
        out.append(msg)
    return out


def _cache(bps: list[tuple[int, str]]) -> tuple[int, int, Literal["5m", "1h"]]:
    """(read, written, ttl) from the breakpoints, (prefix tokens, ttl) in prompt order."""
    if not bps or bps[-1][0] < _CACHE_MIN:
        return 0, 0, "5m"
    last, ttl = bps[-1]
    earlier = [n for n, _ in bps[:-1] if _CACHE_MIN <= n < last]
    read = earlier[-1] if earlier else last
    return read, last - read, "1h" if ttl == "1h" else "5m"


def _ttl(block: Any) -> str | None:
    cc = block.get("cache_control") if isinstance(block, dict) else None
    if not isinstance(cc, dict):
        return None
    return "1h" if cc.get("ttl") == "1h" else "5m"


@dataclass(slots=True)
class _Walk:
    """The prompt walked in Anthropic's cache order (tools, system, messages)."""

    total: int = 3  # tokens so far
    breakpoints: list[tuple[int, str]] = field(default_factory=list)  # (prefix, ttl)
    functions: list[Function] = field(default_factory=list)
    chat: list[dict[str, Any]] = field(default_factory=list)  # the conversation, chat-shaped

    def add(self, tokens: int, block: Any) -> None:
        self.total += tokens
        if ttl := _ttl(block):
            self.breakpoints.append((self.total, ttl))


def _walk(data: dict[str, Any], messages: list[Any]) -> _Walk:
    w = _Walk()
    tools = data.get("tools") or []
    if not isinstance(tools, list):
        raise _error("tools", "Input should be a valid list")
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise _error(f"tools.{i}", "Input should be a valid dictionary")
        if tool.get("type") == "mcp_toolset":  # named by its mcp_server_name
            w.add(text_tokens(orjson.dumps(tool).decode()), tool)
            continue
        if not isinstance(tool.get("name"), str):
            raise _required(f"tools.{i}.name")
        if tool.get("type") in (None, "custom"):  # else a server tool: never called here
            schema = tool.get("input_schema")
            if not isinstance(schema, dict):
                raise _required(f"tools.{i}.input_schema")
            w.functions.append(Function(tool["name"], schema))
        w.add(text_tokens(orjson.dumps(tool).decode()), tool)
    system = data.get("system")
    if system is not None:
        blocks = _blocks(system, "system")
        w.chat.append({"role": "system", "content": "".join(b.get("text", "") for b in blocks)})
        w.total += 3
        for block in blocks:
            w.add(_block_tokens(block), block)
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise _error(f"messages.{i}", "Input should be a valid dictionary")
        role = msg.get("role")
        if role not in ("user", "assistant", "system"):  # anthropic-python 2.15 sends system turns
            raise _error(f"messages.{i}.role", "Input should be 'user', 'assistant' or 'system'")
        if "content" not in msg:
            raise _required(f"messages.{i}.content")
        blocks = _blocks(msg["content"], f"messages.{i}.content")
        w.total += 3
        for block in blocks:
            w.add(_block_tokens(block), block)
        w.chat.extend(_chat_shaped(role, blocks))
    w.add(0, data)  # a top-level cache_control: automatic caching up to the last block
    return w


def parse_request(body: bytes, count_only: bool = False) -> MessagesRequest | CountTokens:
    data = load_object(body)
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise _required("model") if model is None else _error("model", "Input should be a string")
    cap = data.get("max_tokens")
    if cap is None and not count_only:
        raise _required("max_tokens")
    if cap is not None and (not is_int(cap) or cap < 1):
        raise _error("max_tokens", "Input should be greater than or equal to 1")
    messages = data.get("messages")
    if messages is None:
        raise _required("messages")
    if not isinstance(messages, list) or not messages:
        raise _error("messages", "Input should be a non-empty list")
    stream = data.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _error("stream", "Input should be a valid boolean")
    w = _walk(data, messages)
    if count_only:
        return CountTokens(model, w.total)
    read, written, ttl = _cache(w.breakpoints)

    choice = data.get("tool_choice") or {"type": "auto"}
    if not isinstance(choice, dict) or choice.get("type") not in _CHOICES:
        raise _error("tool_choice.type", "Input should be 'auto', 'any', 'tool' or 'none'")
    forced = choice.get("name") if choice["type"] == "tool" else None
    if choice["type"] == "tool" and not isinstance(forced, str):
        raise _required("tool_choice.name")
    # Structured outputs: output_format (beta) or output_config.format.
    fmt = data.get("output_format") or (data.get("output_config") or {}).get("format")
    schema = fmt.get("schema") if isinstance(fmt, dict) else None
    prompt = Prompt(
        model=model,
        messages=w.chat,
        prompt_tokens=w.total,
        cached_tokens=read,
        cache_write_tokens=written,
        functions=tuple(w.functions),
        tool_choice=_CHOICES[choice["type"]],
        forced=forced,
        parallel_tool_calls=choice.get("disable_parallel_tool_use") is not True,
        max_tokens=cap,
        json_format="json_schema" if isinstance(schema, dict) else None,
        json_schema=schema,
        reasons=False,  # Anthropic thinks only with `thinking`, which is not simulated
    )
    return MessagesRequest(model, bool(stream), prompt, ttl)


# --- the Message --------------------------------------------------------------------------


def usage(answer: Answer, ttl: str, output_tokens: int | None = None) -> dict[str, Any]:
    written = answer.cache_write_tokens
    return {
        "input_tokens": answer.prompt_tokens - answer.cached_tokens - written,
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": answer.cached_tokens,
        "cache_creation": {
            "ephemeral_5m_input_tokens": 0 if ttl == "1h" else written,
            "ephemeral_1h_input_tokens": written if ttl == "1h" else 0,
        },
        "output_tokens": answer.completion_tokens if output_tokens is None else output_tokens,
        "service_tier": "standard",
    }


def tool_use_id(call_id: str) -> str:
    return "toolu_" + call_id.removeprefix("call_")


@dataclass(slots=True)
class MessagesReply:
    req: MessagesRequest
    answer: Answer
    id_: str
    think_tokens: int = 0
    preamble: int = 3  # message_start, content_block_start, ping
    closing: int = 2  # message_delta (stop_reason, usage), message_stop

    @property
    def tokens(self) -> int:
        return self.answer.completion_tokens

    def _message(self, content: list[dict[str, Any]], done: bool) -> dict[str, Any]:
        ans = self.answer
        return {
            "id": self.id_,
            "type": "message",
            "role": "assistant",
            "model": self.req.model,
            "content": content,
            "stop_reason": _STOP[ans.finish_reason] if done else None,
            "stop_sequence": None,
            "usage": usage(ans, self.req.ttl, None if done else 1),
        }

    def content(self) -> list[dict[str, Any]]:
        ans = self.answer
        if ans.tool_calls:
            return [
                {
                    "type": "tool_use",
                    "id": tool_use_id(c.id),
                    "name": c.name,
                    "input": orjson.loads(c.arguments),
                }
                for c in ans.tool_calls
            ]
        return [{"type": "text", "text": ans.text}]

    def body(self) -> bytes:
        return orjson.dumps(self._message(self.content(), True))

    def events(self) -> list[tuple[bytes, int]]:
        ans = self.answer
        out: list[tuple[bytes, int]] = []

        def emit(kind: str, data: dict[str, Any], tokens: int = 0) -> None:
            out.append((named_event(kind, orjson.dumps({"type": kind, **data})), tokens))

        emit("message_start", {"message": self._message([], False)})
        if ans.tool_calls:
            for i, call in enumerate(ans.tool_calls):
                block = {"type": "tool_use", "id": tool_use_id(call.id), "name": call.name}
                emit("content_block_start", {"index": i, "content_block": {**block, "input": {}}})
                if i == 0:
                    emit("ping", {})
                for part in split(call.arguments, 16):
                    delta = {"type": "input_json_delta", "partial_json": part}
                    emit("content_block_delta", {"index": i, "delta": delta}, 4)
                emit("content_block_stop", {"index": i})
        else:
            emit("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
            emit("ping", {})
            head = b'{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":'
            for piece in ans.pieces:
                data = head + orjson.dumps(piece) + b"}}"
                out.append((named_event("content_block_delta", data), 1))
            emit("content_block_stop", {"index": 0})
        stop = {"stop_reason": _STOP[ans.finish_reason], "stop_sequence": None}
        # Usage here is cumulative: the whole input again and the final output count.
        final_usage = usage(ans, self.req.ttl)
        del final_usage["cache_creation"], final_usage["service_tier"]
        emit("message_delta", {"delta": stop, "usage": final_usage})
        emit("message_stop", {})
        return out
