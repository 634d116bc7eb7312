"""The OpenAPI description of the chat endpoint.

The handler reads the raw body itself (to answer malformed JSON, invalid UTF-8 and
oversize bodies with OpenAI's errors instead of FastAPI's 422), so the request
schema is declared here by hand. It says what ``validation.py`` enforces.
"""

from __future__ import annotations

from typing import Any

_NULLABLE_STRING = {"anyOf": [{"type": "string"}, {"type": "null"}]}

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": _NULLABLE_STRING,
                "param": _NULLABLE_STRING,
                "code": _NULLABLE_STRING,
            },
        }
    },
}

_CONTENT_PART = {
    "anyOf": [
        {
            "type": "object",
            "required": ["type", "text"],
            "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
        },
        {
            "type": "object",
            "required": ["type"],
            "properties": {"type": {"type": "string", "not": {"const": "text"}}},
        },
    ]
}
_CONTENT = {"anyOf": [{"type": "string"}, {"type": "array", "items": _CONTENT_PART}]}
_NULLABLE_CONTENT = {"anyOf": [*_CONTENT["anyOf"], {"type": "null"}]}


def _message(roles: list[str], required: list[str], **props: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["role", *required],
        "properties": {
            "role": {"type": "string", "enum": roles},
            "name": {"type": "string"},
            **props,
        },
    }


# What validation.py enforces per role: content is required except for assistant and
# function messages; tool messages name the call they answer.
MESSAGE_SCHEMA: dict[str, Any] = {
    "anyOf": [
        _message(["system", "developer", "user"], ["content"], content=_CONTENT),
        _message(
            ["assistant"],
            [],
            content=_NULLABLE_CONTENT,
            tool_calls={"type": "array", "items": {"type": "object"}},
        ),
        _message(
            ["tool"], ["content", "tool_call_id"], content=_CONTENT, tool_call_id={"type": "string"}
        ),
        _message(["function"], [], content=_NULLABLE_CONTENT),
    ]
}

TOOL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "function"],
    "properties": {
        "type": {"type": "string", "enum": ["function"]},
        "function": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
                "description": {"type": "string"},
                "parameters": {"type": "object"},
            },
        },
    },
}


def chat_request_schema(max_messages: int, max_tokens: int, max_n: int) -> dict[str, Any]:
    positive = {"type": "integer", "minimum": 1, "maximum": max_tokens}
    return {
        "type": "object",
        "required": ["model", "messages"],
        "properties": {
            "model": {
                "type": "string",
                "pattern": "\\S",
                "maxLength": 256,
                "description": "`auto` lets the router choose; or a catalog model name.",
            },
            "messages": {
                "type": "array",
                "minItems": 1,
                "maxItems": max_messages,
                "items": MESSAGE_SCHEMA,
            },
            "stream": {"type": "boolean"},
            "stream_options": {
                "type": "object",
                "properties": {"include_usage": {"type": "boolean"}},
            },
            "temperature": {"type": "number", "minimum": 0, "maximum": 2},
            "top_p": {"type": "number", "minimum": 0, "maximum": 1},
            "max_tokens": positive,
            "max_completion_tokens": positive,
            "n": {"type": "integer", "minimum": 1, "maximum": max_n},
            # JSON integers beyond 64 bits parse as floats, which the parser refuses; the
            # bound keeps clear of the edge, where a float's rounding crosses it.
            "seed": {"type": "integer", "minimum": -(2**62), "maximum": 2**62},
            "stop": {
                "anyOf": [
                    {"type": "string"},
                    {"type": "array", "items": {"type": "string"}, "maxItems": 4},
                ]
            },
            "presence_penalty": {"type": "number", "minimum": -2, "maximum": 2},
            "frequency_penalty": {"type": "number", "minimum": -2, "maximum": 2},
            "tools": {"type": "array", "items": TOOL_SCHEMA},
            "tool_choice": {
                "anyOf": [
                    {"type": "string", "enum": ["none", "auto", "required"]},
                    {"type": "object"},
                ]
            },
            "response_format": {
                "type": "object",
                "required": ["type"],
                "properties": {
                    "type": {"type": "string", "enum": ["text", "json_object", "json_schema"]}
                },
            },
            "user": {"type": "string"},
            "metadata": {"type": "object"},
        },
    }


def json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def error_content(description: str) -> dict[str, Any]:
    return {"description": description, **json_content(ERROR_SCHEMA)}


COMPLETION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["choices"],
    "properties": {
        "id": {"type": "string"},
        "object": {"type": "string"},
        "model": {"type": "string"},
        "choices": {"type": "array", "items": {"type": "object"}},
        "usage": {"type": "object"},
    },
}


def llm_operation(
    request: dict[str, Any],
    answer: dict[str, Any],
    described: str,
    bad: str = "",
    streams: bool = True,
) -> dict[str, Any]:
    """``openapi_extra`` of an LLM endpoint in OpenAI's error shape: its request schema, its
    answer (JSON, or server-sent events with ``stream: true``) and the errors every one has."""
    content: dict[str, Any] = {"application/json": {"schema": answer}}
    if streams:
        content["text/event-stream"] = {"schema": {"type": "string"}}
    return {
        "requestBody": {"required": True, **json_content(request)},
        "responses": {
            "200": {
                "description": described,
                "content": content,
            },
            "400": error_content(f"Invalid request; `param` names the field.{bad}"),
            "401": error_content("Missing or wrong API key."),
            "403": error_content("The key may not use this model."),
            "404": error_content("Unknown model."),
            "413": error_content("Request body too large."),
            "429": error_content("Budget exhausted or upstream rate limited."),
            "502": error_content("Every upstream attempt failed."),
            "503": error_content(
                "Over the concurrency cap, or no model available; see Retry-After."
            ),
            "504": error_content("The upstream did not answer within the deadline."),
        },
    }


def chat_operation(max_messages: int, max_tokens: int, max_n: int) -> dict[str, Any]:
    """``openapi_extra`` for POST /v1/chat/completions."""
    return llm_operation(
        chat_request_schema(max_messages, max_tokens, max_n),
        COMPLETION_SCHEMA,
        "A chat completion, or with `stream: true` server-sent events.",
    )


MODEL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "object", "owned_by"],
    "properties": {
        "id": {"type": "string"},
        "object": {"type": "string"},
        "created": {"type": "integer"},
        "owned_by": {"type": "string"},
    },
}
MODELS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["object", "data"],
    "properties": {
        "object": {"type": "string"},
        "data": {
            "type": "array",
            "items": MODEL_SCHEMA,
        },
    },
}


def models_operation() -> dict[str, Any]:
    return {
        "responses": {
            "200": {"description": "The model catalog.", **json_content(MODELS_SCHEMA)},
            "401": error_content("Missing or wrong API key."),
        }
    }


def model_operation() -> dict[str, Any]:
    return {
        "responses": {
            "200": {"description": "One model this key may use.", **json_content(MODEL_SCHEMA)},
            "401": error_content("Missing or wrong API key."),
            "404": error_content("No such model, or not one this key may use."),
        }
    }


def probe_operation(description: str, codes: tuple[str, ...] = ("200",)) -> dict[str, Any]:
    schema = {"type": "object", "properties": {"status": {"type": "string"}}}
    return {"responses": {c: {"description": description, **json_content(schema)} for c in codes}}


def bearer_security(schema: dict[str, Any], secured: list[str]) -> dict[str, Any]:
    """Declare the bearer key and require it on the ``secured`` paths."""
    components = schema.setdefault("components", {})
    components.setdefault("securitySchemes", {})["bearerAuth"] = {
        "type": "http",
        "scheme": "bearer",
    }
    # Anthropic's clients send the key as x-api-key (Claude Code, older SDKs) or as a bearer.
    components["securitySchemes"]["apiKeyAuth"] = {
        "type": "apiKey",
        "in": "header",
        "name": "x-api-key",
    }
    either: list[dict[str, list[str]]] = [{"bearerAuth": []}, {"apiKeyAuth": []}]
    for path in secured:
        security = either if path.startswith("/v1/messages") else [{"bearerAuth": []}]
        for op in schema.get("paths", {}).get(path, {}).values():
            op["security"] = security
    return schema
