"""The OpenAPI description of ``POST /v1/messages`` and ``/v1/messages/count_tokens``.

Declared by hand, as for chat (``openapi.py``): the handler reads the raw body itself so
that bad input gets Anthropic's error shape, not FastAPI's 422. It says what
``messages_request.py`` enforces, no more: block shapes beyond their ``type`` are checked
there and named in the 400.
"""

from __future__ import annotations

from typing import Any

from tollgate_orchestrator.dialects.messages_request import (
    ASSISTANT_ONLY,
    IMAGE_TYPES,
    MIN_THINKING_BUDGET,
    SERVER_BLOCKS,
    SERVER_TOOL,
    SERVER_TOOL_TYPES,
)
from tollgate_orchestrator.validation import MAX_MODEL_CHARS, Limits

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "error"],
    "properties": {
        "type": {"const": "error"},
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
        },
    },
}

_STR: dict[str, Any] = {"type": "string"}


def _typed(kind: str, required: list[str], props: dict[str, Any]) -> dict[str, Any]:
    """One content block type, with the fields ``messages_request`` requires of it."""
    return {
        "type": "object",
        "required": ["type", *required],
        "properties": {"type": {"const": kind}, "cache_control": {"type": "object"}, **props},
    }


def _source(kind: str, field: str, **more: Any) -> dict[str, Any]:
    props = {"type": {"const": kind}, field: _STR, **more}
    return {"type": "object", "required": ["type", field, *more], "properties": props}


_TEXT_BLOCK = _typed("text", ["text"], {"text": _STR})
_IMAGE = _typed(
    "image",
    ["source"],
    {
        "source": {
            "anyOf": [
                _source("base64", "data", media_type={"enum": sorted(IMAGE_TYPES)}),
                _source("url", "url"),
                _source("file", "file_id"),
            ]
        }
    },
)
_DOCUMENT = _typed(
    "document",
    ["source"],
    {
        "source": {
            "anyOf": [
                _source("base64", "data"),
                _source("text", "data"),
                _source("url", "url"),
                _source("file", "file_id"),
                _source("content", "content"),
            ]
        },
        "title": _STR,
        "context": _STR,
    },
)
_SEARCH_RESULT = _typed(
    "search_result",
    ["source", "title", "content"],
    {"source": _STR, "title": _STR, "content": {"type": "array", "items": _TEXT_BLOCK}},
)
_TOOL_RESULT = _typed(
    "tool_result",
    ["tool_use_id"],
    {
        "tool_use_id": _STR,
        "is_error": {"type": "boolean"},
        "content": {
            "anyOf": [
                _STR,
                {
                    "type": "array",
                    "items": {"anyOf": [_TEXT_BLOCK, _IMAGE, _DOCUMENT, _SEARCH_RESULT]},
                },
            ]
        },
    },
)
_TOOL_USE = _typed(
    "tool_use", ["id", "name", "input"], {"id": _STR, "name": _STR, "input": {"type": "object"}}
)
_THINKING = _typed("thinking", ["thinking", "signature"], {"thinking": _STR, "signature": _STR})
_REDACTED = _typed("redacted_thinking", ["data"], {"data": _STR})


def _server(kinds: list[str]) -> dict[str, Any]:
    return {"type": "object", "required": ["type"], "properties": {"type": {"enum": kinds}}}


_USER_BLOCK = {
    "anyOf": [
        _TEXT_BLOCK,
        _IMAGE,
        _DOCUMENT,
        _SEARCH_RESULT,
        _TOOL_RESULT,
        _server(sorted(SERVER_BLOCKS - ASSISTANT_ONLY)),
    ]
}
_ASSISTANT_BLOCK = {
    "anyOf": [
        _TEXT_BLOCK,
        _IMAGE,
        _DOCUMENT,
        _SEARCH_RESULT,
        _TOOL_USE,
        _THINKING,
        _REDACTED,
        _server(sorted(SERVER_BLOCKS)),
    ]
}


# An answer's blocks, as the client reads them: any type (server tools add their own).
_ANSWER_BLOCK = {"type": "object", "required": ["type"], "properties": {"type": _STR}}


def _turn(role: str, block: dict[str, Any]) -> dict[str, Any]:
    content = {"anyOf": [_STR, {"type": "array", "items": block}]}
    return {
        "type": "object",
        "required": ["role", "content"],
        "properties": {"role": {"const": role}, "content": content},
    }


# anthropic-python's system turns take text only, like the top-level system.
_MESSAGE = {
    "anyOf": [
        _turn("user", _USER_BLOCK),
        _turn("assistant", _ASSISTANT_BLOCK),
        _turn("system", _TEXT_BLOCK),
    ]
}
_TOOL = {
    "anyOf": [
        {
            "type": "object",
            "required": ["name", "input_schema"],
            "properties": {
                "type": {"const": "custom"},
                "name": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,128}$"},
                "description": {"type": "string"},
                "input_schema": {"type": "object"},
            },
        },
        {
            "type": "object",
            "required": ["type", "name"],
            "description": "A server tool (web_search_20250305, bash_20250124, ...): served "
            "by an Anthropic upstream only; refused with a 400 where the model is reached "
            "through Chat Completions.",
            "properties": {
                "type": {"type": "string", "pattern": SERVER_TOOL.pattern},
                "name": {"type": "string"},
            },
        },
        {
            "type": "object",
            "required": ["type"],
            "description": "An MCP toolset (named by its mcp_server_name): as a server tool.",
            "properties": {"type": {"enum": sorted(SERVER_TOOL_TYPES)}},
        },
    ]
}


def _prompt_properties(limits: Limits) -> dict[str, Any]:
    return {
        "model": {
            "type": "string",
            "pattern": "[!-~]",  # a visible character (Python's whitespace is not JSON's)
            "maxLength": MAX_MODEL_CHARS,
            "description": "`auto` lets the router choose; or a catalog model name.",
        },
        "messages": {
            "type": "array",
            "minItems": 1,
            "maxItems": limits.max_messages,
            "items": _MESSAGE,
        },
        "system": {"anyOf": [{"type": "string"}, {"type": "array", "items": _TEXT_BLOCK}]},
        "tools": {"type": "array", "items": _TOOL},
        "tool_choice": {
            "anyOf": [
                {
                    "type": "object",
                    "required": ["type"],
                    "properties": {
                        "type": {"type": "string", "enum": ["auto", "any", "none"]},
                        "disable_parallel_tool_use": {"type": "boolean"},
                    },
                },
                {
                    "type": "object",
                    "required": ["type", "name"],
                    "properties": {
                        "type": {"const": "tool"},
                        "name": {"type": "string"},
                        "disable_parallel_tool_use": {"type": "boolean"},
                    },
                },
            ]
        },
        "thinking": {
            "anyOf": [
                {
                    "type": "object",
                    "required": ["type", "budget_tokens"],
                    "properties": {
                        "type": {"const": "enabled"},
                        "budget_tokens": {"type": "integer", "minimum": MIN_THINKING_BUDGET},
                    },
                },
                {
                    "type": "object",
                    "required": ["type"],
                    "properties": {"type": {"type": "string", "enum": ["disabled", "adaptive"]}},
                },
            ]
        },
    }


def request_schema(limits: Limits) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["model", "max_tokens", "messages"],
        "properties": {
            **_prompt_properties(limits),
            "max_tokens": {"type": "integer", "minimum": 1, "maximum": limits.max_tokens_cap},
            "stop_sequences": {"type": "array", "items": {"type": "string"}},
            "temperature": {"type": "number", "minimum": 0, "maximum": 1},
            "top_p": {"type": "number", "minimum": 0, "maximum": 1},
            "top_k": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
            "stream": {"type": "boolean"},
            "metadata": {"type": "object", "properties": {"user_id": {"type": "string"}}},
            "service_tier": {"type": "string", "enum": ["auto", "standard_only"]},
        },
    }


MESSAGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "type", "role", "content", "model", "stop_reason", "usage"],
    "properties": {
        "id": {"type": "string"},
        "type": {"const": "message"},
        "role": {"const": "assistant"},
        "content": {"type": "array", "items": _ANSWER_BLOCK},
        "model": {"type": "string"},
        "stop_reason": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "stop_sequence": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "usage": {
            "type": "object",
            "required": ["input_tokens", "output_tokens"],
            "properties": {
                "input_tokens": {"type": "integer"},
                "output_tokens": {"type": "integer"},
                "cache_read_input_tokens": {"type": "integer"},
                "cache_creation_input_tokens": {"type": "integer"},
            },
        },
    },
}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, **_json(ERROR_SCHEMA)}


_HEADERS = [
    {
        "name": name,
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": description,
    }
    for name, description in (
        ("x-api-key", "The API key (or send it as `Authorization: Bearer`)."),
        ("anthropic-version", "Accepted, not checked."),
        ("anthropic-beta", "Accepted, not checked, never passed to a chat upstream."),
    )
]
_ERRORS = {
    "400": _error("Invalid request; the message starts with the field (`messages.0.role: ...`)."),
    "401": _error("Missing or wrong API key (`authentication_error`)."),
    "413": _error("Request body too large (`request_too_large`)."),
}


def messages_operation(limits: Limits) -> dict[str, Any]:
    """``openapi_extra`` for POST /v1/messages."""
    return {
        "parameters": _HEADERS,
        "requestBody": {"required": True, **_json(request_schema(limits))},
        "responses": {
            "200": {
                "description": "A message, or with `stream: true` server-sent events "
                "(`message_start` ... `message_stop`; the cost is `x_tollgate_cost_usd` "
                "on `message_delta`).",
                "content": {
                    "application/json": {"schema": MESSAGE_SCHEMA},
                    "text/event-stream": {"schema": {"type": "string"}},
                },
            },
            **_ERRORS,
            "404": _error("Unknown model (`not_found_error`)."),
            "429": _error("Budget exhausted or upstream rate limited (`rate_limit_error`)."),
            "502": _error("Every upstream attempt failed (`api_error`)."),
            "503": _error("Over the concurrency cap, or no model available (`overloaded_error`)."),
            "504": _error("The upstream did not answer within the deadline (`timeout_error`)."),
        },
    }


def count_tokens_operation(limits: Limits) -> dict[str, Any]:
    """``openapi_extra`` for POST /v1/messages/count_tokens."""
    schema = {
        "type": "object",
        "required": ["model", "messages"],
        "properties": _prompt_properties(limits),
    }
    counted = {
        "type": "object",
        "required": ["input_tokens"],
        "properties": {"input_tokens": {"type": "integer", "minimum": 0}},
    }
    return {
        "parameters": _HEADERS,
        "requestBody": {"required": True, **_json(schema)},
        "responses": {
            "200": {
                "description": "The estimate of the prompt's tokens the budget reserves for "
                "(about 4 characters a token, plus images, documents and tools).",
                **_json(counted),
            },
            **_ERRORS,
        },
    }
