"""Anthropic Messages over an upstream that speaks only Chat Completions, and back. Pure.

The request (what a chat upstream cannot do is refused with a 400 naming it, never
dropped unseen, except thinking, which only shapes effort):

- ``system`` (and ``system`` turns) → system messages, text blocks joined by newlines;
- user text and image blocks → content parts (a base64 image → a ``data:`` URL); a PDF
  document → a ``file`` part; a text document → text; ``tool_result`` blocks → ``tool``
  messages (``tool_call_id`` = ``tool_use_id``; ``is_error`` → the content starts with
  ``Error: ``), placed before the turn's other content, as chat wants results right after
  the assistant's calls;
- assistant text and ``tool_use`` → content and ``tool_calls`` (arguments: the input as
  JSON); ``thinking``/``redacted_thinking`` blocks are dropped (their signatures mean
  nothing to another model);
- custom tools → function tools (``input_schema`` → ``parameters``); server tools
  (``web_search_20250305``, ``bash_20250124``, ...) → 400 ``unsupported_tool``;
- ``tool_choice`` any → ``required``, tool → the named function, none → ``none``;
  ``disable_parallel_tool_use`` → ``parallel_tool_calls: false``;
- ``stop_sequences`` → ``stop`` (at most 4); ``max_tokens`` → ``max_completion_tokens``;
  ``metadata.user_id`` → ``user``; ``service_tier`` standard_only → ``default``;
  ``top_k`` is dropped (chat has none);
- ``thinking: enabled`` → ``reasoning_effort`` by ``budget_tokens``: under 4,096 low,
  under 16,384 medium, else high; ``adaptive`` and ``disabled`` send none (the model's
  default); ``output_config.effort`` → ``reasoning_effort`` as it is (it wins);
- ``output_config.format`` (a JSON schema) → a strict ``json_schema`` response format;
  the top-level ``cache_control`` is dropped (chat upstreams cache on their own).

The answer: a ``Message`` (``msg_`` + hex of the completion's id) with a text block and
``tool_use`` blocks (id = the call's id, input = the parsed arguments; arguments that are
not a JSON object become ``{"INVALID_JSON": "<raw>"}``, the wrapping Anthropic's docs
suggest for invalid tool input, so nothing is lost and the client can tell). Stop
reasons: stop → ``end_turn`` (chat does not say whether a stop sequence matched),
length → ``max_tokens``, tool_calls → ``tool_use``, content_filter → ``refusal``.
Usage: ``input_tokens`` = prompt - cached, ``cache_read_input_tokens`` = cached,
``cache_creation_input_tokens`` = 0 (chat does not report writes), ``output_tokens`` =
completion.

The stream: chat sends its usage last, so ``message_start`` carries zeros and the real
figures (``input_tokens``, ``cache_read_input_tokens``, ``output_tokens``: all allowed
there, and both SDKs take them) come in ``message_delta``'s usage; zeros left there were
LiteLLM's bug (#24176).
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import orjson

from tollgate_orchestrator.accounting import Usage
from tollgate_orchestrator.dialects.chat import usage_of as chat_usage
from tollgate_orchestrator.dialects.messages import is_server_tool, message_usage
from tollgate_orchestrator.dialects.registry import register
from tollgate_orchestrator.errors import ApiError
from tollgate_orchestrator.sse import DONE
from tollgate_orchestrator.translate import chat_completion
from tollgate_orchestrator.types import CHAT_API, MESSAGES_API, LlmRequest

MAX_STOP = 4  # OpenAI's limit on ``stop``
MAX_FUNCTION_NAME = 64  # OpenAI's limit on a function's name
# thinking.budget_tokens → reasoning_effort: (budget below, effort); above them all: high.
EFFORT_BY_BUDGET = ((4096, "low"), (16384, "medium"))
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
SERVICE_TIERS = {"auto": "auto", "standard_only": "default"}


def _refuse(param: str, message: str, code: str = "unsupported_content") -> ApiError:
    return ApiError(400, message, param=param, code=code, reason="invalid")


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _texts(blocks: list[dict[str, Any]]) -> list[str]:
    return [b["text"] for b in blocks if b.get("type") == "text"]


def _plain(content: str | list[dict[str, Any]]) -> str:
    return content if isinstance(content, str) else "\n".join(_texts(content))


# --- the request ----------------------------------------------------------------------------


def _image(block: dict[str, Any], where: str) -> dict[str, Any]:
    src = block["source"]
    if src["type"] == "base64":
        url = f"data:{src['media_type']};base64,{src['data']}"
    elif src["type"] == "url":
        url = src["url"]
    else:
        raise _refuse(f"{where}.source.type", "An image by file_id cannot reach a chat upstream.")
    return {"type": "image_url", "image_url": {"url": url}}


def _document(block: dict[str, Any], where: str) -> list[dict[str, Any]]:
    src, title = block["source"], block.get("title")
    kind = src["type"]
    if kind == "base64" and src.get("media_type") == "application/pdf":
        name = f"{title}.pdf" if isinstance(title, str) and title else "document.pdf"
        data = f"data:application/pdf;base64,{src['data']}"
        return [{"type": "file", "file": {"filename": name, "file_data": data}}]
    if kind == "text" or (kind == "content" and isinstance(src.get("content"), str)):
        text = src["data"] if kind == "text" else src["content"]
    elif kind == "content":
        return _parts(src["content"], f"{where}.source.content")
    else:
        raise _refuse(
            f"{where}.source.type",
            f"A document by {kind} cannot reach a chat upstream; send it as base64 or text.",
        )
    head = f"{title}\n\n" if isinstance(title, str) and title else ""
    return [{"type": "text", "text": head + text}]


def _parts(blocks: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    """User content blocks as chat content parts; tool results are ``_user``'s."""
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        kind, here = block["type"], f"{where}[{j}]"
        if kind == "tool_result":
            continue
        if kind == "text":
            parts.append({"type": "text", "text": block["text"]})
        elif kind == "image":
            parts.append(_image(block, here))
        elif kind == "document":
            parts.extend(_document(block, here))
        elif kind == "search_result":
            text = "\n".join(_texts(block["content"]))
            parts.append({"type": "text", "text": f"{block['title']} ({block['source']})\n{text}"})
        else:
            raise _refuse(f"{here}.type", f"A `{kind}` block cannot reach a chat upstream.")
    return parts


def _tool_result(block: dict[str, Any], where: str) -> dict[str, Any]:
    content = block.get("content")
    if isinstance(content, list):
        for j, part in enumerate(content):
            if part["type"] != "text":
                raise _refuse(
                    f"{where}.content[{j}].type",
                    "A chat upstream takes only text in a tool result.",
                )
    text = _plain(content) if content is not None else ""
    if block.get("is_error"):
        text = "Error: " + text
    return {"role": "tool", "tool_call_id": block["tool_use_id"], "content": text}


def _user(content: str | list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    results = [
        _tool_result(b, f"{where}[{j}]")
        for j, b in enumerate(content)
        if b["type"] == "tool_result"
    ]
    parts = _parts(content, where)
    if len(parts) == 1 and parts[0]["type"] == "text":
        return [*results, {"role": "user", "content": parts[0]["text"]}]
    if parts or not results:
        return [*results, {"role": "user", "content": parts or ""}]
    return results


def _assistant(content: str | list[dict[str, Any]], where: str) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        kind = block["type"]
        if kind == "text":
            texts.append(block["text"])
        elif kind == "tool_use":
            args = orjson.dumps(block["input"]).decode()
            fn = {"name": block["name"], "arguments": args}
            calls.append({"id": block["id"], "type": "function", "function": fn})
        elif kind not in ("thinking", "redacted_thinking"):
            raise _refuse(f"{where}[{j}].type", f"A `{kind}` block cannot reach a chat upstream.")
    msg: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        msg["tool_calls"] = calls
    elif msg["content"] is None:
        msg["content"] = ""
    return msg


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    system = body.get("system")
    if system is not None and _plain(system):
        out.append({"role": "system", "content": _plain(system)})
    for i, msg in enumerate(body["messages"]):
        role, content, where = msg["role"], msg["content"], f"messages[{i}].content"
        if role == "user":
            out.extend(_user(content, where))
        elif role == "assistant":
            out.append(_assistant(content, where))
        else:
            out.append({"role": "system", "content": _plain(content)})
    return out


def _tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    server = [(i, t) for i, t in enumerate(tools) if is_server_tool(t)]
    if server:
        names = ", ".join(f"`{t.get('name') or t['type']}` ({t['type']})" for _, t in server)
        raise _refuse(
            f"tools[{server[0][0]}]",
            f"Server tools run only at Anthropic, and this model is reached through Chat "
            f"Completions, which cannot run them: {names}.",
            "unsupported_tool",
        )
    out = []
    for i, tool in enumerate(tools):
        if len(tool["name"]) > MAX_FUNCTION_NAME:
            raise _refuse(
                f"tools[{i}].name",
                f"A chat upstream takes tool names of at most {MAX_FUNCTION_NAME} characters.",
                "unsupported_tool",
            )
        fn: dict[str, Any] = {"name": tool["name"], "parameters": tool["input_schema"]}
        if isinstance(tool.get("description"), str):
            fn["description"] = tool["description"]
        if isinstance(tool.get("strict"), bool):
            fn["strict"] = tool["strict"]
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(choice: dict[str, Any]) -> str | dict[str, Any]:
    kind = choice["type"]
    if kind == "tool":
        return {"type": "function", "function": {"name": choice["name"]}}
    return {"any": "required", "none": "none"}.get(kind, "auto")


def effort(budget_tokens: int) -> str:
    for below, name in EFFORT_BY_BUDGET:
        if budget_tokens < below:
            return name
    return "high"


def chat_body(body: dict[str, Any], stream: bool) -> dict[str, Any]:
    """A checked Messages body as a Chat Completions body; raises ``ApiError`` (400)."""
    out: dict[str, Any] = {"model": body["model"], "messages": _messages(body)}
    tools = _tools(body.get("tools") or [])
    if tools:
        out["tools"] = tools
        choice = body.get("tool_choice")
        if choice is not None:
            out["tool_choice"] = _tool_choice(choice)
            if choice.get("disable_parallel_tool_use") and choice["type"] != "none":
                out["parallel_tool_calls"] = False
    stop = body.get("stop_sequences")
    if stop:
        if len(stop) > MAX_STOP:
            raise _refuse(
                "stop_sequences",
                f"A chat upstream takes at most {MAX_STOP} stop sequences; {len(stop)} given.",
                "unsupported_value",
            )
        out["stop"] = stop
    out["max_completion_tokens"] = body["max_tokens"]
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            out[name] = body[name]
    user = (body.get("metadata") or {}).get("user_id")
    if user is not None:
        out["user"] = user
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") == "enabled":
        out["reasoning_effort"] = effort(thinking["budget_tokens"])
    config = body.get("output_config") or {}
    if config.get("effort") is not None:
        out["reasoning_effort"] = config["effort"]  # OpenAI's values include Anthropic's
    if config.get("format") is not None:
        schema = {"name": "output", "schema": config["format"]["schema"], "strict": True}
        out["response_format"] = {"type": "json_schema", "json_schema": schema}
    tier = body.get("service_tier")
    if tier in SERVICE_TIERS:
        out["service_tier"] = SERVICE_TIERS[tier]
    if stream:
        out["stream"] = True
    return out


# --- the answer -----------------------------------------------------------------------------


def message_id(chat_id: object, fallback: bytes) -> str:
    seed = chat_id.encode() if isinstance(chat_id, str) and chat_id else fallback
    return "msg_" + hashlib.sha256(seed).hexdigest()[:24]


def tool_input(arguments: object) -> dict[str, Any]:
    raw = arguments if isinstance(arguments, str) else ""
    if not raw.strip():
        return {}
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {"INVALID_JSON": raw}
    return parsed if isinstance(parsed, dict) else {"INVALID_JSON": raw}


def stop_reason(finish: object, called: bool) -> str:
    # Some servers say "stop" after tool calls: the client still has tools to run.
    if called and finish in (None, "stop"):
        return "tool_use"
    return STOP_REASONS.get(finish, "end_turn") if isinstance(finish, str) else "end_turn"


def message(completion: dict[str, Any], raw: bytes, model: str) -> dict[str, Any] | None:
    choices = completion.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    msg = choices[0].get("message")
    if not isinstance(msg, dict):
        return None
    content: list[dict[str, Any]] = []
    text = "".join(t for t in (msg.get("content"), msg.get("refusal")) if isinstance(t, str))
    if text:
        content.append({"type": "text", "text": text})
    calls = [c for c in msg.get("tool_calls") or () if isinstance(c, dict)]
    mid = message_id(completion.get("id"), raw)
    for k, call in enumerate(calls):
        fn = _obj(call.get("function"))
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id") or f"toolu_{mid[4:]}_{k}",
                "name": fn.get("name") or "",
                "input": tool_input(fn.get("arguments")),
            }
        )
    if not content:
        content.append({"type": "text", "text": ""})
    return {
        "id": mid,
        "type": "message",
        "role": "assistant",
        "model": completion.get("model") if isinstance(completion.get("model"), str) else model,
        "content": content,
        "stop_reason": stop_reason(choices[0].get("finish_reason"), bool(calls)),
        "stop_sequence": None,
        "usage": message_usage(chat_usage(completion.get("usage"))),
    }


# --- the stream -----------------------------------------------------------------------------


def _dump(obj: dict[str, Any]) -> bytes:
    return orjson.dumps(obj)


class ChatToMessages:
    """Chat chunks in, Messages events out (unframed: the Messages wire frames them)."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.id = ""
        self.started = self.ended = False
        self.open: int | None = None  # the content block being written
        self.open_text = False
        self.blocks = 0  # content blocks started
        self.tools: dict[int, int] = {}  # chat tool call index → content block index
        self.finish: object = None
        self.usage: Usage | None = None

    def feed(self, payload: bytes) -> list[bytes]:
        if self.ended:
            return []
        if payload == DONE:
            return self._end()
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return []  # nothing a Messages client could read
        if not isinstance(chunk, dict):
            return []
        if "error" in chunk and not chunk.get("choices"):
            self.ended = True
            return [_error(chunk["error"])]
        out = [] if self.started else [self._start(chunk, payload)]
        if isinstance(chunk.get("usage"), dict):
            self.usage = chat_usage(chunk["usage"])
        for choice in chunk.get("choices") or ():
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                out.extend(self._choice(choice))
        return out

    def _start(self, chunk: dict[str, Any], payload: bytes) -> bytes:
        self.started = True
        self.id = message_id(chunk.get("id"), payload)
        model = chunk.get("model") if isinstance(chunk.get("model"), str) else self.model
        head: dict[str, Any] = {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},  # known at the end: message_delta
        }
        return _dump({"type": "message_start", "message": head})

    def _choice(self, choice: dict[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        delta = _obj(choice.get("delta"))
        for text in (delta.get("content"), delta.get("refusal")):
            if isinstance(text, str) and text:
                out.extend(self._text(text))
        for call in delta.get("tool_calls") or ():
            if isinstance(call, dict):
                out.extend(self._tool(call))
        if choice.get("finish_reason") is not None:
            self.finish = choice["finish_reason"]
            out.extend(self._close())
        return out

    def _open(self, block: dict[str, Any], text: bool) -> list[bytes]:
        out = self._close()
        self.open, self.open_text = self.blocks, text
        self.blocks += 1
        out.append(
            _dump({"type": "content_block_start", "index": self.open, "content_block": block})
        )
        return out

    def _close(self) -> list[bytes]:
        if self.open is None:
            return []
        index, self.open = self.open, None
        return [_dump({"type": "content_block_stop", "index": index})]

    def _text(self, text: str) -> list[bytes]:
        out = (
            []
            if self.open is not None and self.open_text
            else self._open({"type": "text", "text": ""}, text=True)
        )
        delta = {"type": "text_delta", "text": text}
        out.append(_dump({"type": "content_block_delta", "index": self.open, "delta": delta}))
        return out

    def _tool(self, call: dict[str, Any]) -> list[bytes]:
        k = call.get("index", 0)
        fn = _obj(call.get("function"))
        out: list[bytes] = []
        if k not in self.tools:
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": call.get("id") or f"toolu_{self.id[4:]}_{k}",
                "name": fn.get("name") or "",
                "input": {},
            }
            out = self._open(block, text=False)
            self.tools[k] = self.blocks - 1
        args = fn.get("arguments")
        if isinstance(args, str) and args:
            delta = {"type": "input_json_delta", "partial_json": args}
            out.append(
                _dump({"type": "content_block_delta", "index": self.tools[k], "delta": delta})
            )
        return out

    def _end(self) -> list[bytes]:
        self.ended = True
        out = [] if self.started else [self._start({}, b"")]
        out.extend(self._close())
        usage = message_usage(self.usage) if self.usage is not None else {"output_tokens": 0}
        delta = {"stop_reason": stop_reason(self.finish, bool(self.tools)), "stop_sequence": None}
        out.append(_dump({"type": "message_delta", "delta": delta, "usage": usage}))
        out.append(b'{"type":"message_stop"}')
        return out


def _error(err: object) -> bytes:
    message = err.get("message") if isinstance(err, dict) else None
    text = message if isinstance(message, str) and message else "The upstream stream failed."
    return _dump({"type": "error", "error": {"type": "api_error", "message": text}})


class MessagesToChat:
    source = MESSAGES_API
    target = CHAT_API

    def request(self, req: LlmRequest) -> LlmRequest:
        return dataclasses.replace(req, body=chat_body(req.body, req.stream), api=CHAT_API)

    def answer(self, raw: bytes, req: LlmRequest) -> bytes | None:
        completion = chat_completion(raw)
        if completion is None:
            return None
        out = message(completion, raw, req.model)
        return orjson.dumps(out) if out is not None else None

    def stream(self, req: LlmRequest) -> ChatToMessages:
        return ChatToMessages(req.model)


TRANSLATION = MessagesToChat()
register(translation=TRANSLATION)
