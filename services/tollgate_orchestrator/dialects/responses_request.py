"""The Responses dialect's request: what ``POST /v1/responses`` accepts, checked. Pure.

The gateway checks what it reads or bounds (the model, every input item and content
part, function tools, the numbers) and passes everything else through as the client
sent it: encrypted reasoning items, hosted tools and item types it does not know go
upstream untouched. Top-level fields that are not OpenAI create parameters are
dropped, as for chat. Every failure is a 400 whose ``param`` names the field
(``input[2].content[0].type``). The OpenAPI fragment says the same.
"""

from __future__ import annotations

from typing import Any

from tollgate_orchestrator import openapi
from tollgate_orchestrator.errors import bad_request
from tollgate_orchestrator.types import RESPONSES_API, LlmRequest
from tollgate_orchestrator.validation import (
    FEATURE_TEXT_CHARS,
    FILE_ID_TOKENS,
    IMAGE_LOW_DETAIL_TOKENS,
    IMAGE_TOKENS,
    MAX_MODEL_CHARS,
    TOOL_NAME,
    Limits,
    is_int,
    is_number,
    json_tokens,
)

# OpenAI's create parameters (openai-python 3.57 ``ResponseCreateParamsBase``, a few
# more than the OpenAPI ``CreateResponse``), and ``client_metadata``, which Codex sends
# and OpenAI accepts though neither lists it: forwarded. Anything else is dropped.
CREATE_FIELDS = frozenset(
    {
        "access_programs",
        "background",
        "background_options",
        "client_metadata",
        "context_management",
        "conversation",
        "image",
        "include",
        "input",
        "instructions",
        "max_output_tokens",
        "max_tool_calls",
        "metadata",
        "model",
        "moderation",
        "parallel_tool_calls",
        "previous_response_id",
        "prompt",
        "prompt_cache_key",
        "prompt_cache_options",
        "prompt_cache_retention",
        "reasoning",
        "safety_identifier",
        "service_tier",
        "store",
        "stream",
        "stream_options",
        "temperature",
        "text",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
        "truncation",
        "user",
    }
)
ROLES = ("assistant", "developer", "system", "user")
PART_TYPES = ("input_file", "input_image", "input_text", "output_text", "refusal")
_FORMATS = ("text", "json_object", "json_schema")
_TOOL_CHOICES = ("none", "auto", "required")
_STRINGS = (
    "instructions",
    "previous_response_id",
    "user",
    "safety_identifier",
    "prompt_cache_key",
    "service_tier",
    "truncation",
    "prompt_cache_retention",
)
_OBJECTS = (
    "metadata",
    "stream_options",
    "prompt",
    "prompt_cache_options",
    "moderation",
    "background_options",
)
_BOOLEANS = ("stream", "store", "background", "parallel_tool_calls")
# What makes a request need more than its input: then ``input`` may be left out.
_CONTEXT = ("previous_response_id", "prompt", "conversation")
MIN_OUTPUT_TOKENS = 16  # OpenAI refuses a smaller max_output_tokens; so does this, at once


def _part(where: str, part: Any) -> tuple[str, int]:
    """(text, tokens beyond the text) of one content part; raises naming the bad field."""
    if not isinstance(part, dict) or not isinstance(part.get("type"), str):
        raise bad_request(where, f"'{where}' must be an object with a type.")
    kind = part["type"]
    if kind not in PART_TYPES:
        raise bad_request(
            f"{where}.type", f"'{where}.type' must be one of {', '.join(PART_TYPES)}."
        )
    if kind in ("input_text", "output_text"):
        if not isinstance(part.get("text"), str):
            raise bad_request(f"{where}.text", f"'{where}.text' must be a string.")
        return part["text"], 0
    if kind == "refusal":
        if not isinstance(part.get("refusal"), str):
            raise bad_request(f"{where}.refusal", f"'{where}.refusal' must be a string.")
        return "", len(part["refusal"]) // 4 + 1
    if kind == "input_image":
        if not any(isinstance(part.get(k), str) for k in ("image_url", "file_id")):
            raise bad_request(f"{where}.image_url", f"'{where}' needs an image_url or a file_id.")
        return "", IMAGE_LOW_DETAIL_TOKENS if part.get("detail") == "low" else IMAGE_TOKENS
    if not any(isinstance(part.get(k), str) for k in ("file_id", "file_data", "file_url")):
        raise bad_request(f"{where}.file_id", f"'{where}' needs a file_id, file_data or file_url.")
    return "", json_tokens(part) if isinstance(part.get("file_data"), str) else FILE_ID_TOKENS


def _content(where: str, content: Any) -> tuple[str, int]:
    """(text, tokens beyond it) of a message's content or a call's output."""
    if isinstance(content, str):
        return content, 0
    if not isinstance(content, list):
        raise bad_request(where, f"'{where}' must be a string or an array.")
    texts: list[str] = []
    extra = 0
    for j, part in enumerate(content):
        text, tokens = _part(f"{where}[{j}]", part)
        if text:
            texts.append(text)
        extra += tokens
    return " ".join(texts), extra


def has_image(content: Any) -> bool:
    """Whether Responses content (a message's, a tool output's) holds an image part."""
    return isinstance(content, list) and any(
        isinstance(p, dict) and p.get("type") == "input_image" for p in content
    )


def _string(item: dict[str, Any], where: str, name: str) -> None:
    if not isinstance(item.get(name), str):
        raise bad_request(f"{where}.{name}", f"'{where}.{name}' must be a string.")


def _item_type(item: dict[str, Any], where: str) -> str:
    kind = item.get("type")
    if isinstance(kind, str):
        return kind
    if kind is None and "role" in item:
        return "message"  # an EasyInputMessage may leave its type out
    if kind is None and "id" in item:
        return "item_reference"  # so may a reference
    raise bad_request(f"{where}.type", f"'{where}.type' must be a string.")


class _Features:
    """What the router and the budget estimate read of the input, as it is checked."""

    def __init__(self) -> None:
        self.last_user = ""
        self.system: list[str] = []
        self.chars = 0
        self.extra = 0
        self.images = False  # an input_image part anywhere: only vision models fit

    def system_text(self, text: str) -> None:
        if sum(map(len, self.system)) < FEATURE_TEXT_CHARS:
            self.system.append(text)

    def item(self, where: str, item: Any) -> None:
        if not isinstance(item, dict):
            raise bad_request(where, f"'{where}' must be an object.")
        kind = _item_type(item, where)
        if kind == "message":
            role = item.get("role")
            if role not in ROLES:
                raise bad_request(
                    f"{where}.role", f"'{where}.role' must be one of {', '.join(ROLES)}."
                )
            text, extra = _content(f"{where}.content", item.get("content"))
            self.chars += len(text)
            self.extra += extra
            self.images = self.images or has_image(item.get("content"))
            if role == "user":
                self.last_user = text
            elif role in ("system", "developer"):
                self.system_text(text)
        elif kind == "function_call":
            for name in ("call_id", "name", "arguments"):
                _string(item, where, name)
            self.extra += json_tokens(item)
        elif kind == "function_call_output":
            _string(item, where, "call_id")
            text, extra = _content(f"{where}.output", item.get("output"))
            self.chars += len(text)
            self.extra += extra
            self.images = self.images or has_image(item.get("output"))
        elif kind == "item_reference":
            _string(item, where, "id")
        else:  # reasoning (encrypted_content untouched), hosted tool calls, new types
            self.extra += json_tokens(item)


def _input(data: dict[str, Any], limits: Limits, f: _Features) -> int:
    """Check ``input``; its number of items (turns)."""
    value = data.get("input")
    if value is None or value == [] or value == "":
        if any(data.get(k) is not None for k in _CONTEXT):
            return 0
        raise bad_request("input", "Missing required parameter: 'input'.")
    if isinstance(value, str):
        f.last_user = value
        f.chars += len(value)
        return 1
    if not isinstance(value, list):
        raise bad_request("input", "'input' must be a string or an array of items.")
    if len(value) > limits.max_messages:
        raise bad_request(
            "input", f"'input' has {len(value)} items; at most {limits.max_messages}."
        )
    for i, item in enumerate(value):
        f.item(f"input[{i}]", item)
    return len(value)


def _tools(value: Any) -> bool:
    """Function tools are checked as chat's are; every other type passes through."""
    if value is None:
        return False
    if not isinstance(value, list):
        raise bad_request("tools", "'tools' must be an array.")
    for i, tool in enumerate(value):
        where = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise bad_request(where, f"'{where}' must be an object.")
        if not isinstance(tool.get("type"), str):
            raise bad_request(f"{where}.type", f"'{where}.type' must be a string.")
        if tool["type"] != "function":
            continue
        name = tool.get("name")
        if not isinstance(name, str) or not TOOL_NAME.match(name):
            raise bad_request(
                f"{where}.name", f"'{where}.name' must be 1-64 letters, digits, '_' or '-'."
            )
        for field, kind, what in (
            ("description", str, "a string"),
            ("parameters", dict, "an object"),
            ("strict", bool, "a boolean"),
        ):
            if tool.get(field) is not None and not isinstance(tool[field], kind):
                raise bad_request(f"{where}.{field}", f"'{where}.{field}' must be {what}.")
    return bool(value)


def _text_format(value: Any) -> bool:
    """Check ``text``; whether it asks for JSON."""
    if value is None:
        return False
    if not isinstance(value, dict):
        raise bad_request("text", "'text' must be an object.")
    fmt = value.get("format")
    if fmt is None:
        return False
    if not isinstance(fmt, dict) or fmt.get("type") not in _FORMATS:
        raise bad_request(
            "text.format.type", "'text.format.type' must be text, json_object or json_schema."
        )
    if fmt["type"] == "json_schema":
        if not isinstance(fmt.get("name"), str):
            raise bad_request("text.format.name", "'text.format.name' must be a string.")
        if not isinstance(fmt.get("schema"), dict):
            raise bad_request("text.format.schema", "'text.format.schema' must be an object.")
    return bool(fmt["type"] != "text")


def _integer(data: dict[str, Any], name: str, lo: int, hi: int) -> int | None:
    v = data.get(name)
    # JSON Schema counts 8.0 as the integer 8: accept it and forward 8.
    if isinstance(v, float) and v.is_integer() and abs(v) < 2**63:
        v = data[name] = int(v)
    if v is None:
        return None
    if not is_int(v) or not lo <= v <= hi:
        raise bad_request(name, f"'{name}' must be an integer between {lo} and {hi}.")
    return int(v)


def _scalars(data: dict[str, Any]) -> None:
    for name, lo, hi in (("temperature", 0, 2), ("top_p", 0, 1)):
        v = data.get(name)
        if v is not None and (not is_number(v) or not lo <= v <= hi):
            raise bad_request(name, f"'{name}' must be a number between {lo} and {hi}.")
    for names, kind, what in (
        (_STRINGS, str, "a string"),
        (_OBJECTS, dict, "an object"),
        (_BOOLEANS, bool, "a boolean"),
    ):
        for name in names:
            if data.get(name) is not None and not isinstance(data[name], kind):
                raise bad_request(name, f"'{name}' must be {what}.")
    if data.get("background") is True:
        # The upstream would answer "queued" and be polled for the rest: state this gateway
        # does not relay (GET /v1/responses/{id} serves only what it stored itself).
        raise bad_request(
            "background", "Background responses are not supported by this gateway.", "unsupported"
        )
    tc = data.get("tool_choice")
    if tc is not None and tc not in _TOOL_CHOICES and not isinstance(tc, dict):
        raise bad_request("tool_choice", "'tool_choice' must be none, auto, required or an object.")
    if isinstance(tc, dict) and not isinstance(tc.get("type"), str):
        raise bad_request("tool_choice.type", "'tool_choice.type' must be a string.")
    reasoning = data.get("reasoning")
    if reasoning is not None and not isinstance(reasoning, dict):
        raise bad_request("reasoning", "'reasoning' must be an object.")
    for name in ("effort", "summary"):
        v = reasoning.get(name) if isinstance(reasoning, dict) else None
        if v is not None and not isinstance(v, str):
            raise bad_request(f"reasoning.{name}", f"'reasoning.{name}' must be a string.")
    include = data.get("include")
    if include is not None and (
        not isinstance(include, list) or not all(isinstance(x, str) for x in include)
    ):
        raise bad_request("include", "'include' must be an array of strings.")
    conversation = data.get("conversation")
    if conversation is not None and not isinstance(conversation, str | dict):
        raise bad_request("conversation", "'conversation' must be a string or an object.")
    cm = data.get("context_management")
    if cm is not None and not isinstance(cm, list):
        raise bad_request("context_management", "'context_management' must be an array.")


def parse_responses_request(data: Any, limits: Limits) -> LlmRequest:
    """Check a decoded body; raises ``ApiError`` (400) naming the first bad field."""
    if not isinstance(data, dict):
        raise bad_request(None, "The request body must be a JSON object.")
    model = data.get("model")
    if model is None:
        raise bad_request("model", "Missing required parameter: 'model'.")
    if not isinstance(model, str) or not model.strip() or len(model) > MAX_MODEL_CHARS:
        raise bad_request("model", "'model' must be a non-empty string.")
    _scalars(data)
    f = _Features()
    instructions = data.get("instructions")
    if isinstance(instructions, str) and instructions:
        f.system_text(instructions)
        f.chars += len(instructions)
    turns = _input(data, limits, f) + bool(instructions)
    max_tokens = _integer(data, "max_output_tokens", MIN_OUTPUT_TOKENS, limits.max_tokens_cap)
    _integer(data, "top_logprobs", 0, 20)
    _integer(data, "max_tool_calls", 0, 2**31)
    has_tools = _tools(data.get("tools"))
    json_mode = _text_format(data.get("text"))
    body = {k: v for k, v in data.items() if k in CREATE_FIELDS}
    # Definitions the upstream bills as prompt: tools, the tool choice, a JSON schema.
    for name in ("tools", "tool_choice"):
        if body.get(name) is not None:
            f.extra += json_tokens(body[name])
    if json_mode and body["text"]["format"]["type"] == "json_schema":
        f.extra += json_tokens(body["text"]["format"])
    return LlmRequest(
        body=body,
        model=model.strip(),
        stream=bool(data.get("stream")),
        include_usage=True,  # a Responses stream always ends with its usage
        max_tokens=max_tokens,
        n=1,
        has_tools=has_tools,
        json_mode=json_mode,
        last_user_text=f.last_user[-FEATURE_TEXT_CHARS:],
        system_text="\n".join(f.system)[:FEATURE_TEXT_CHARS],
        turns=turns,
        prompt_chars=f.chars,
        est_extra_tokens=f.extra,
        api=RESPONSES_API,
        has_images=f.images,
    )


# --- its OpenAPI fragment --------------------------------------------------------------


_STR: dict[str, Any] = {"type": "string"}


def _obj(required: list[str], **props: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": props}


_PART_SCHEMA: dict[str, Any] = {
    "anyOf": [
        _obj(["type", "text"], type={"enum": ["input_text", "output_text"]}, text=_STR),
        _obj(["type", "refusal"], type={"const": "refusal"}, refusal=_STR),
        _obj(["type", "image_url"], type={"const": "input_image"}, image_url=_STR),
        _obj(["type", "file_id"], type={"const": "input_file"}, file_id=_STR),
        _obj(["type", "file_data"], type={"const": "input_file"}, file_data=_STR),
    ]
}
_CONTENT_SCHEMA: dict[str, Any] = {"anyOf": [_STR, {"type": "array", "items": _PART_SCHEMA}]}
_ITEM_SCHEMA: dict[str, Any] = {
    "description": "An input item: a message (role and content), function_call, "
    "function_call_output; reasoning items (passed through untouched), item_reference "
    "(resolved from the store) and other item types are served too, but need state or an "
    "upstream that knows them, which a schema cannot describe.",
    "anyOf": [
        _obj(
            ["role", "content"],
            type={"const": "message"},
            role={"enum": list(ROLES)},
            content=_CONTENT_SCHEMA,
        ),
        _obj(
            ["type", "call_id", "name", "arguments"],
            type={"const": "function_call"},
            call_id=_STR,
            name=_STR,
            arguments=_STR,
        ),
        _obj(
            ["type", "call_id", "output"],
            type={"const": "function_call_output"},
            call_id=_STR,
            output=_CONTENT_SCHEMA,
        ),
    ],
}
_TOOL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type"],
    "description": "A function tool, or a hosted tool (web_search, file_search, mcp, ...) "
    "for an upstream that runs it; refused for a Chat Completions upstream.",
    "properties": {
        "type": {"type": "string"},
        "name": {"type": "string", "pattern": TOOL_NAME.pattern},
        "description": {"type": "string"},
        "parameters": {"type": "object"},
        "strict": {"type": "boolean"},
    },
}


def request_schema(limits: Limits) -> dict[str, Any]:
    string = {"type": "string"}
    obj = {"type": "object"}
    return {
        "type": "object",
        # OpenAI lets `input` go with `previous_response_id`, `prompt` or `conversation`;
        # the contract here is the request this gateway always serves.
        "required": ["model", "input"],
        "properties": {
            "model": {
                "type": "string",
                "pattern": "[!-~]",  # a visible character (Python's whitespace is not JSON's)
                "maxLength": MAX_MODEL_CHARS,
                "description": "`auto` lets the router choose; or a catalog model name.",
            },
            "input": {
                "anyOf": [
                    {"type": "string", "minLength": 1},
                    {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": limits.max_messages,
                        "items": _ITEM_SCHEMA,
                    },
                ]
            },
            "instructions": string,
            "tools": {"type": "array", "items": _TOOL_SCHEMA},
            "tool_choice": {
                "anyOf": [
                    {"type": "string", "enum": list(_TOOL_CHOICES)},
                    {"type": "object", "required": ["type"], "properties": {"type": string}},
                ]
            },
            "max_output_tokens": {
                "type": "integer",
                "minimum": MIN_OUTPUT_TOKENS,
                "maximum": limits.max_tokens_cap,
            },
            "temperature": {"type": "number", "minimum": 0, "maximum": 2},
            "top_p": {"type": "number", "minimum": 0, "maximum": 1},
            "top_logprobs": {"type": "integer", "minimum": 0, "maximum": 20},
            "stream": {"type": "boolean"},
            "store": {"type": "boolean"},
            "background": {"type": "boolean", "enum": [False]},  # refused: see parse
            "parallel_tool_calls": {"type": "boolean"},
            "previous_response_id": {"type": "string", "minLength": 1},
            "text": {
                "type": "object",
                "properties": {
                    "format": {
                        "anyOf": [
                            _obj(["type"], type={"enum": ["text", "json_object"]}),
                            _obj(
                                ["type", "name", "schema"],
                                type={"const": "json_schema"},
                                name=_STR,
                                schema={"type": "object"},
                            ),
                        ]
                    }
                },
            },
            "reasoning": obj,
            "include": {"type": "array", "items": string},
            "metadata": {  # OpenAI's bounds: 16 string values, keys of 64, values of 512
                "type": "object",
                "maxProperties": 16,
                "propertyNames": {"maxLength": 64},
                "additionalProperties": {"type": "string", "maxLength": 512},
            },
            "truncation": string,
            "service_tier": string,
            "user": string,
            "safety_identifier": string,
            "prompt_cache_key": string,
        },
    }


RESPONSE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "object", "output"],
    "properties": {
        "id": {"type": "string"},
        "object": {"type": "string", "enum": ["response"]},
        "status": {"type": "string"},
        "model": {"type": "string"},
        "output": {"type": "array", "items": {"type": "object"}},
        "usage": {"type": "object"},
    },
}


def operation(limits: Limits) -> dict[str, Any]:
    """``openapi_extra`` for POST /v1/responses."""
    return openapi.llm_operation(
        request_schema(limits),
        RESPONSE_SCHEMA,
        "A Response, or with `stream: true` its named server-sent events, ending with "
        "`response.completed` (which carries `x_tollgate_cost_usd`).",
        " Also: a hosted tool for a Chat Completions upstream (`unsupported_tool`), an "
        "unknown `previous_response_id` (`previous_response_not_found`).",
    )
