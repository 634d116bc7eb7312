"""The Anthropic Messages request, checked: every failure a 400 whose ``param`` names the
field (``messages[1].content[0].type``), every field Anthropic does not define dropped.
Also what the router and the budget learn from it (``LlmRequest``'s features). Pure.

Blocks an Anthropic upstream takes that a chat one cannot (thinking, server tools, PDFs
by URL) are kept here; ``translate/messages_chat.py`` refuses or drops them.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from tollgate_orchestrator.errors import bad_request
from tollgate_orchestrator.types import MESSAGES_API, LlmRequest
from tollgate_orchestrator.validation import (
    FEATURE_TEXT_CHARS,
    FILE_ID_TOKENS,
    MAX_MODEL_CHARS,
    Limits,
    decode_json,
    is_int,
    is_number,
    one_of,
)

# Request fields forwarded upstream; everything else is dropped.
KNOWN_FIELDS = frozenset(
    {
        "model",
        "max_tokens",
        "messages",
        "system",
        "tools",
        "tool_choice",
        "stop_sequences",
        "temperature",
        "top_p",
        "top_k",
        "stream",
        "metadata",
        "thinking",
        "service_tier",
        # anthropic-python 2.15: structured output and effort; prompt caching of the whole
        # request (its own temperature, top_p and top_k are gone, other clients send them).
        "output_config",
        "cache_control",
    }
)
ROLES = ("user", "assistant", "system")  # "system" turns: anthropic-python 2.15 sends them
# Anthropic's image cost is width x height / 750, about 1,600 tokens at the largest size
# it keeps before resizing (1.15 megapixels): the budget's bound for an image.
IMAGE_TOKENS = 1600
# Anthropic adds a system prompt of its own when tools are given (346 tokens with
# tool_choice auto or none on current models).
TOOL_SYSTEM_TOKENS = 346
MIN_THINKING_BUDGET = 1024
TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
# Server tools run at Anthropic (web_search_20250305, bash_20250124, ...): versioned by date.
SERVER_TOOL = re.compile(r"^[a-z][a-z0-9_]*_\d{8}$")
SERVER_TOOL_TYPES = frozenset({"mcp_toolset"})
IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
# Blocks of server tools and containers: kept for a native upstream, refused by translations.
SERVER_BLOCKS = frozenset(
    {
        "server_tool_use",
        "web_search_tool_result",
        "web_fetch_tool_result",
        "code_execution_tool_result",
        "bash_code_execution_tool_result",
        "text_editor_code_execution_tool_result",
        "tool_search_tool_result",
        "container_upload",
        "mcp_tool_use",
        "mcp_tool_result",
    }
)
ASSISTANT_ONLY = frozenset({"tool_use", "thinking", "redacted_thinking", "server_tool_use"})
_TOOL_RESULT_PARTS = frozenset({"text", "image", "document", "search_result"})
_TOOL_CHOICES = frozenset({"auto", "any", "tool", "none"})
_THINKING = frozenset({"enabled", "disabled", "adaptive"})
_SERVICE_TIERS = frozenset({"auto", "standard_only"})
EFFORTS = frozenset({"low", "medium", "high", "xhigh", "max"})


def json_tokens(value: Any) -> int:
    return len(orjson.dumps(value)) // 4  # a decoded body always serialises


def _wanted(value: Any, what: str) -> str:
    return "Field required." if value is None else f"Must be {what}."


def _string(obj: dict[str, Any], name: str, where: str, required: bool = True) -> None:
    v = obj.get(name)
    if v is None and not required:
        return
    if not isinstance(v, str):
        raise bad_request(f"{where}.{name}", _wanted(v, "a string"))


def _object(obj: dict[str, Any], name: str, where: str) -> None:
    """An optional object field (``cache_control``, ``citations`` settings)."""
    if obj.get(name) is not None and not isinstance(obj[name], dict):
        raise bad_request(f"{where}.{name}", "Must be an object.")


def _source(block: dict[str, Any], where: str, kinds: frozenset[str]) -> dict[str, Any]:
    src = block.get("source")
    if not isinstance(src, dict):
        raise bad_request(f"{where}.source", _wanted(src, "an object"))
    kind = src.get("type")
    if not isinstance(kind, str) or kind not in kinds:  # a list or a dict is no type either
        raise bad_request(f"{where}.source.type", f"Must be one of {', '.join(sorted(kinds))}.")
    field = {"base64": "data", "text": "data", "url": "url", "file": "file_id"}.get(kind)
    if field is not None:
        _string(src, field, f"{where}.source")
    return src


class _Tally:
    """What the router and the budget learn from the blocks of a request."""

    __slots__ = ("chars", "extra", "images", "text")

    def __init__(self) -> None:
        self.chars = 0  # prompt text, ~4 characters a token
        self.extra = 0  # tokens that are not text: images, documents, tool calls
        self.images = False  # an image block anywhere (tool results too): vision models only
        self.text: list[str] = []  # the text blocks of the message being read

    def add_text(self, text: str, routed: bool = True) -> None:
        self.chars += len(text)
        if routed:
            self.text.append(text)


def _image(block: dict[str, Any], where: str, tally: _Tally) -> None:
    src = _source(block, where, frozenset({"base64", "url", "file"}))
    if src["type"] == "base64" and not one_of(src.get("media_type"), IMAGE_TYPES):
        raise bad_request(
            f"{where}.source.media_type", f"Must be one of {', '.join(sorted(IMAGE_TYPES))}."
        )
    tally.extra += IMAGE_TOKENS
    tally.images = True


def _document(block: dict[str, Any], where: str, tally: _Tally) -> None:
    kinds = frozenset({"base64", "text", "url", "content", "file"})
    src = _source(block, where, kinds)
    for name in ("title", "context"):
        _string(block, name, where, required=False)
    if src["type"] == "text":
        tally.add_text(src["data"], routed=False)
    elif src["type"] == "base64":
        tally.extra += json_tokens(src)  # inline data: its size, as for chat's file parts
    elif src["type"] == "content":
        content = src.get("content")
        if isinstance(content, str):
            tally.add_text(content, routed=False)
        elif isinstance(content, list):
            _blocks(content, f"{where}.source.content", "user", tally, frozenset({"text", "image"}))
        else:
            raise bad_request(f"{where}.source.content", "Must be a string or an array.")
    else:
        tally.extra += FILE_ID_TOKENS  # by reference: no size here


def _block(
    block: Any, where: str, role: str, tally: _Tally, allowed: frozenset[str] | None
) -> None:
    if not isinstance(block, dict):
        raise bad_request(where, "Must be an object.")
    kind = block.get("type")
    if not isinstance(kind, str):
        raise bad_request(f"{where}.type", _wanted(kind, "a string"))
    if allowed is not None and kind not in allowed:
        raise bad_request(f"{where}.type", f"Must be one of {', '.join(sorted(allowed))}.")
    if role == "system" and kind != "text":
        raise bad_request(f"{where}.type", "A system prompt takes text blocks only.")
    if kind in ASSISTANT_ONLY and role != "assistant":
        raise bad_request(f"{where}.type", f"A `{kind}` block belongs in an assistant turn.")
    _object(block, "cache_control", where)
    if kind == "text":
        _string(block, "text", where)
        tally.add_text(block["text"])
    elif kind == "image":
        _image(block, where, tally)
    elif kind == "document":
        _document(block, where, tally)
    elif kind == "search_result":
        for name in ("source", "title"):
            _string(block, name, where)
        content = block.get("content")
        if not isinstance(content, list):
            raise bad_request(f"{where}.content", _wanted(content, "an array"))
        _blocks(content, f"{where}.content", "user", tally, frozenset({"text"}))
    elif kind == "tool_use":
        for name in ("id", "name"):
            _string(block, name, where)
        if not isinstance(block.get("input"), dict):
            raise bad_request(f"{where}.input", _wanted(block.get("input"), "an object"))
        tally.extra += json_tokens(block["input"]) + len(block["name"]) // 4 + 1
    elif kind == "tool_result":
        _tool_result(block, where, role, tally)
    elif kind == "thinking":
        for name in ("thinking", "signature"):
            _string(block, name, where)
        tally.add_text(block["thinking"], routed=False)
    elif kind == "redacted_thinking":
        _string(block, "data", where)
        tally.extra += json_tokens(block["data"])
    elif kind in SERVER_BLOCKS:
        tally.extra += json_tokens(block)
    else:
        raise bad_request(f"{where}.type", f"Unknown content block type '{kind[:64]}'.")


def _tool_result(block: dict[str, Any], where: str, role: str, tally: _Tally) -> None:
    if role != "user":
        raise bad_request(f"{where}.type", "A tool_result block belongs in a user turn.")
    _string(block, "tool_use_id", where)
    if block.get("is_error") is not None and not isinstance(block["is_error"], bool):
        raise bad_request(f"{where}.is_error", "Must be a boolean.")
    content = block.get("content")
    if isinstance(content, str):
        tally.add_text(content, routed=False)
    elif isinstance(content, list):
        _blocks(content, f"{where}.content", "user", tally, _TOOL_RESULT_PARTS, routed=False)
    elif content is not None:
        raise bad_request(f"{where}.content", "Must be a string or an array.")


def _blocks(
    blocks: list[Any],
    where: str,
    role: str,
    tally: _Tally,
    allowed: frozenset[str] | None = None,
    routed: bool = True,
) -> None:
    mark = len(tally.text)
    for j, block in enumerate(blocks):
        _block(block, f"{where}[{j}]", role, tally, allowed)
    if not routed:
        del tally.text[mark:]  # a tool's output is no question to route by


def _content(msg: dict[str, Any], where: str, role: str, tally: _Tally) -> None:
    content = msg.get("content")
    if isinstance(content, str):
        tally.add_text(content)
    elif isinstance(content, list):
        _blocks(content, f"{where}.content", role, tally)
    else:
        raise bad_request(f"{where}.content", _wanted(content, "a string or an array"))


def _messages(value: Any, limits: Limits, tally: _Tally) -> tuple[str, list[str]]:
    """(the last user text, the text of ``system`` turns)."""
    if value is None:
        raise bad_request("messages", "Field required.")
    if not isinstance(value, list) or not value:
        raise bad_request("messages", "Must be a non-empty array.")
    if len(value) > limits.max_messages:
        raise bad_request("messages", f"Has {len(value)} items; at most {limits.max_messages}.")
    last_user = ""
    system: list[str] = []
    for i, msg in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise bad_request(where, "Must be an object.")
        role = msg.get("role")
        if role not in ROLES:
            raise bad_request(f"{where}.role", "Must be 'user' or 'assistant' (or 'system').")
        tally.text = []
        _content(msg, where, role, tally)
        text = " ".join(tally.text)
        # A turn of tool results only keeps the question that started the tool loop.
        if role == "user" and text:
            last_user = text
        elif role == "system":
            system.append(text)
    return last_user[-FEATURE_TEXT_CHARS:], system


def _system(value: Any, tally: _Tally) -> str:
    if value is None:
        return ""
    tally.text = []
    if isinstance(value, str):
        tally.add_text(value)
    elif isinstance(value, list):
        _blocks(value, "system", "system", tally, frozenset({"text"}))
    else:
        raise bad_request("system", "Must be a string or an array of text blocks.")
    return "\n".join(tally.text)


def is_server_tool(tool: dict[str, Any]) -> bool:
    return tool.get("type") not in (None, "custom")


def _tools(value: Any) -> bool:
    if value is None:
        return False
    if not isinstance(value, list):
        raise bad_request("tools", "Must be an array.")
    for i, tool in enumerate(value):
        where = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise bad_request(where, "Must be an object.")
        kind = tool.get("type")
        if is_server_tool(tool):
            if not isinstance(kind, str) or not (
                SERVER_TOOL.match(kind) or kind in SERVER_TOOL_TYPES
            ):
                raise bad_request(
                    f"{where}.type",
                    "Must be 'custom' or a server tool type such as web_search_20250305.",
                )
            if kind not in SERVER_TOOL_TYPES:  # a versioned tool is named (web_search)
                _string(tool, "name", where)
            continue
        name = tool.get("name")
        if not isinstance(name, str) or not TOOL_NAME.match(name):
            raise bad_request(f"{where}.name", "Must be 1-128 letters, digits, '_' or '-'.")
        _string(tool, "description", where, required=False)
        if not isinstance(tool.get("input_schema"), dict):
            raise bad_request(
                f"{where}.input_schema", _wanted(tool.get("input_schema"), "an object")
            )
        _object(tool, "cache_control", where)
    return bool(value)


def _tool_choice(value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, dict) or not one_of(value.get("type"), _TOOL_CHOICES):
        raise bad_request("tool_choice.type", "Must be one of any, auto, none, tool.")
    if value["type"] == "tool" and not isinstance(value.get("name"), str):
        raise bad_request("tool_choice.name", "Field required for type 'tool'.")
    dp = value.get("disable_parallel_tool_use")
    if dp is not None and not isinstance(dp, bool):
        raise bad_request("tool_choice.disable_parallel_tool_use", "Must be a boolean.")


def _thinking(value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, dict) or not one_of(value.get("type"), _THINKING):
        raise bad_request("thinking.type", "Must be one of adaptive, disabled, enabled.")
    if value["type"] == "enabled":
        budget = value.get("budget_tokens")
        if not is_int(budget) or budget < MIN_THINKING_BUDGET:
            raise bad_request(
                "thinking.budget_tokens", f"Must be an integer of at least {MIN_THINKING_BUDGET}."
            )


def _output_config(value: Any) -> bool:
    """Whether it asks for JSON (``format``); checks ``effort`` too."""
    if value is None:
        return False
    if not isinstance(value, dict):
        raise bad_request("output_config", "Must be an object.")
    effort = value.get("effort")
    if effort is not None and not one_of(effort, EFFORTS):
        raise bad_request("output_config.effort", f"Must be one of {', '.join(sorted(EFFORTS))}.")
    fmt = value.get("format")
    if fmt is None:
        return False
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        raise bad_request("output_config.format.type", "Must be 'json_schema'.")
    if not isinstance(fmt.get("schema"), dict):
        raise bad_request("output_config.format.schema", _wanted(fmt.get("schema"), "an object"))
    return True


def _number(body: dict[str, Any], name: str, lo: float, hi: float) -> None:
    v = body.get(name)
    if v is not None and (not is_number(v) or not lo <= v <= hi):
        raise bad_request(name, f"Must be a number between {lo:g} and {hi:g}.")


def _misc(body: dict[str, Any]) -> None:
    stop = body.get("stop_sequences")
    if stop is not None and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        raise bad_request("stop_sequences", "Must be an array of strings.")
    _number(body, "temperature", 0, 1)
    _number(body, "top_p", 0, 1)
    top_k = body.get("top_k")
    if top_k is not None and (not is_int(top_k) or top_k < 0):
        raise bad_request("top_k", "Must be a non-negative integer.")
    if body.get("stream") is not None and not isinstance(body["stream"], bool):
        raise bad_request("stream", "Must be a boolean.")
    meta = body.get("metadata")
    if meta is not None:
        if not isinstance(meta, dict):
            raise bad_request("metadata", "Must be an object.")
        uid = meta.get("user_id")
        if uid is not None and not isinstance(uid, str):
            raise bad_request("metadata.user_id", "Must be a string.")
        body["metadata"] = {"user_id": uid} if uid is not None else {}
    tier = body.get("service_tier")
    if tier is not None and not one_of(tier, _SERVICE_TIERS):
        raise bad_request("service_tier", "Must be 'auto' or 'standard_only'.")


def _ints(data: dict[str, Any]) -> None:
    """JSON has one number type: 8.0 is the integer 8 (as for chat), sent on as 8."""
    thinking = data.get("thinking")
    places = [(data, "max_tokens"), (data, "top_k")]
    if isinstance(thinking, dict):
        places.append((thinking, "budget_tokens"))
    for obj, name in places:
        v = obj.get(name)
        if isinstance(v, float) and v.is_integer() and abs(v) < 2**63:
            obj[name] = int(v)


def _max_tokens(data: dict[str, Any], limits: Limits) -> int:
    v = data.get("max_tokens")
    if v is None:
        raise bad_request("max_tokens", "Field required.")
    if not is_int(v) or v < 1:
        raise bad_request("max_tokens", "Must be a positive integer.")
    if v > limits.max_tokens_cap:
        raise bad_request("max_tokens", f"Is {v}; at most {limits.max_tokens_cap}.")
    return int(v)


def parse_messages_request(data: Any, limits: Limits, counting: bool = False) -> LlmRequest:
    """Check a decoded body; raises ``ApiError`` (400) naming the first bad field.
    ``counting``: a count_tokens body (no ``max_tokens``, nothing but the prompt)."""
    if not isinstance(data, dict):
        raise bad_request(None, "The request body must be a JSON object.")
    _ints(data)
    model = data.get("model")
    if model is None:
        raise bad_request("model", "Field required.")
    if not isinstance(model, str) or not model.strip() or len(model) > MAX_MODEL_CHARS:
        raise bad_request("model", "Must be a non-empty string.")
    max_tokens = None if counting else _max_tokens(data, limits)
    tally = _Tally()
    last_user, system_turns = _messages(data.get("messages"), limits, tally)
    system = _system(data.get("system"), tally)
    has_tools = _tools(data.get("tools"))
    _tool_choice(data.get("tool_choice"))
    _thinking(data.get("thinking"))
    json_mode = _output_config(data.get("output_config"))
    if data.get("cache_control") is not None and not isinstance(data["cache_control"], dict):
        raise bad_request("cache_control", "Must be an object.")
    if not counting:
        _misc(data)
    body = {k: v for k, v in data.items() if k in KNOWN_FIELDS}
    for name in ("tools", "tool_choice", "output_config"):
        if body.get(name) is not None:
            tally.extra += json_tokens(body[name])
    if has_tools:
        tally.extra += TOOL_SYSTEM_TOKENS
    system_text = "\n".join(t for t in (system, *system_turns) if t)
    return LlmRequest(
        body=body,
        model=model.strip(),
        stream=bool(data.get("stream")) and not counting,
        include_usage=True,  # every Messages stream carries its usage
        max_tokens=max_tokens,
        n=1,
        has_tools=has_tools,
        json_mode=json_mode,
        last_user_text=last_user,
        system_text=system_text[:FEATURE_TEXT_CHARS],
        turns=len(data["messages"]) + (1 if system else 0),
        prompt_chars=tally.chars,
        api=MESSAGES_API,
        est_extra_tokens=tally.extra,
        has_images=tally.images,
    )


def count_tokens(raw: bytes, limits: Limits) -> bytes:
    """``POST /v1/messages/count_tokens``: the prompt estimate the budget reserves for."""
    req = parse_messages_request(decode_json(raw), limits, counting=True)
    return orjson.dumps({"input_tokens": req.est_prompt_tokens})
