"""OpenAI Embeddings: the client dialect and the upstream wire format. Pure.

It passes through like chat: the known fields go upstream, the model replaced, and
the answer comes back byte for byte (``encoding_format: base64`` is encoded by the
upstream, never here). An embedding is a function of its input, so the wire is
deterministic: cached by default. There is no completion: the budget reserves the
prompt only (``max_tokens`` 0), and nothing streams.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from tollgate_common.cachekey import cache_key
from tollgate_orchestrator import openapi
from tollgate_orchestrator.accounting import Usage
from tollgate_orchestrator.dialects.base import PassThrough
from tollgate_orchestrator.dialects.registry import register
from tollgate_orchestrator.errors import ERROR_TYPE_SERVER, bad_request
from tollgate_orchestrator.sse import error_event
from tollgate_orchestrator.types import EMBEDDINGS_API, LlmRequest
from tollgate_orchestrator.validation import (
    FEATURE_TEXT_CHARS,
    MAX_MODEL_CHARS,
    Limits,
    decode_json,
    is_int,
)

MAX_INPUTS = 2048  # OpenAI's limit on every input array (CreateEmbeddingRequest)
ENCODINGS = ("float", "base64")
CHARS_PER_TOKEN = 4  # a token-id input counts as this many characters of prompt
# Other than chat's (tollgate_common.cachekey): the two key spaces can never meet.
ANSWER_FIELDS = ("input", "encoding_format", "dimensions")
FIELDS = ("model", "input", "encoding_format", "dimensions", "user")  # the rest is dropped


def _as_int(v: object) -> int | None:
    """A JSON integer (JSON Schema counts 8.0 as 8, as validation.py does), else None."""
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if isinstance(v, float) and v.is_integer() and abs(v) < 2**63:
        return int(v)
    return None


MAX_TOKEN_ID = 2**31 - 1  # beyond any tokenizer's vocabulary; and what the schema says


def _tokens(value: list[Any], where: str) -> list[int]:
    """A list of token ids: non-negative integers."""
    out = []
    for j, t in enumerate(value):
        n = _as_int(t)
        if n is None or not 0 <= n <= MAX_TOKEN_ID:
            raise bad_request(
                f"{where}[{j}]",
                f"'{where}[{j}]' must be a token id (an integer 0..{MAX_TOKEN_ID}).",
            )
        out.append(n)
    return out


def _check_input(value: Any) -> tuple[str | list[Any], int, str]:
    """(the input as it goes upstream, prompt characters, first string or "")."""
    if value is None:
        raise bad_request("input", "Missing required parameter: 'input'.")
    if isinstance(value, str):
        if not value:
            raise bad_request("input", "'input' must not be empty.")
        return value, len(value), value
    if not isinstance(value, list):
        raise bad_request(
            "input", "'input' must be a string, an array of strings, or an array of token ids."
        )
    if not value:
        raise bad_request("input", "'input' must contain at least one item.")
    if len(value) > MAX_INPUTS:
        raise bad_request("input", f"'input' has {len(value)} items; at most {MAX_INPUTS}.")
    first = value[0]
    if isinstance(first, str):  # strings
        for i, s in enumerate(value):
            if not isinstance(s, str) or not s:
                raise bad_request(f"input[{i}]", f"'input[{i}]' must be a non-empty string.")
        return value, sum(map(len, value)), first
    if isinstance(first, list):  # token lists
        lists = []
        for i, ids in enumerate(value):
            if not isinstance(ids, list) or not ids:
                raise bad_request(
                    f"input[{i}]", f"'input[{i}]' must be a non-empty array of token ids."
                )
            lists.append(_tokens(ids, f"input[{i}]"))
        return lists, CHARS_PER_TOKEN * sum(map(len, lists)), ""
    ids = _tokens(value, "input")  # one input as token ids
    return ids, CHARS_PER_TOKEN * len(ids), ""


def parse_embeddings_request(data: Any) -> LlmRequest:
    """Check a decoded body; raises ``ApiError`` (400) naming the first bad field."""
    if not isinstance(data, dict):
        raise bad_request(None, "The request body must be a JSON object.")
    model = data.get("model")
    if model is None:
        raise bad_request("model", "Missing required parameter: 'model'.")
    if not isinstance(model, str) or not model.strip() or len(model) > MAX_MODEL_CHARS:
        raise bad_request("model", "'model' must be a non-empty string.")
    inputs, chars, first = _check_input(data.get("input"))
    body: dict[str, Any] = {"model": model, "input": inputs}
    fmt = data.get("encoding_format")
    if fmt is not None:
        if fmt not in ENCODINGS:
            raise bad_request("encoding_format", "'encoding_format' must be float or base64.")
        body["encoding_format"] = fmt
    if data.get("dimensions") is not None:
        dims = _as_int(data["dimensions"])
        if dims is None or dims < 1:
            raise bad_request("dimensions", "'dimensions' must be a positive integer.")
        body["dimensions"] = dims
    if data.get("user") is not None:
        if not isinstance(data["user"], str):
            raise bad_request("user", "'user' must be a string.")
        body["user"] = data["user"]
    return LlmRequest(
        body=body,
        model=model.strip(),
        stream=False,
        include_usage=True,  # the answer always carries its usage
        max_tokens=0,  # no completion: the budget reserves the prompt only
        n=1,
        has_tools=False,
        json_mode=False,
        last_user_text=first[:FEATURE_TEXT_CHARS],
        system_text="",
        turns=0,
        prompt_chars=chars,
        api=EMBEDDINGS_API,
    )


def _answer_shaped(parsed: object) -> bool:
    """A ``CreateEmbeddingResponse`` as far as replaying it needs: the vectors themselves
    (thousands of floats each) are not inspected."""
    if not isinstance(parsed, dict) or parsed.get("object") != "list":
        return False
    data = parsed.get("data")
    if not isinstance(data, list):
        return False
    return all(
        isinstance(d, dict)
        and d.get("object") == "embedding"
        and isinstance(d.get("embedding"), list | str)
        and is_int(d.get("index"))
        for d in data
    )


class EmbeddingsStream:
    """Embeddings never stream; this parser exists for the protocol and forwards nothing."""

    __slots__ = ("chunks", "usage")

    def __init__(self) -> None:
        self.usage: Usage | None = None
        self.chunks = 0

    def feed(self, payload: bytes, price: Callable[[Usage], float]) -> bytes | None:
        return None

    def assembled(self) -> bytes | None:
        return None

    def error(self, message: str, code: str, cost_usd: float) -> bytes:
        return error_event(message, ERROR_TYPE_SERVER, code, cost_usd)


class EmbeddingsWire:
    api = EMBEDDINGS_API
    path = "embeddings"
    done_event = b""
    deterministic = True  # the same input embeds the same: cacheable by default

    def payload(self, req: LlmRequest, upstream_model: str) -> bytes:
        return orjson.dumps({**req.body, "model": upstream_model})

    def cache_key(self, model: str, req: LlmRequest, tenant: str) -> str:
        # Every field that changes the answer; an unset encoding is the default, float.
        # ``user`` does not: a tenant's end users share its cache, as with chat (L-7).
        b = req.body
        canonical = {**b, "encoding_format": b.get("encoding_format", "float")}
        return cache_key(model, canonical, tenant, ANSWER_FIELDS, EMBEDDINGS_API)

    def answer(self, raw: bytes) -> Usage | None:
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        if not _answer_shaped(parsed):
            return None
        usage = parsed.get("usage")
        prompt = _as_int(usage.get("prompt_tokens")) if isinstance(usage, dict) else None
        return Usage(prompt=max(prompt or 0, 0))

    def parser(self, req: LlmRequest, assemble: bool) -> EmbeddingsStream:
        return EmbeddingsStream()

    def end_of(self, payload: bytes) -> str | None:
        return "error" if payload.lstrip().startswith(b'{"error"') else None

    def first_content(self, payload: bytes) -> bool:
        return True

    def replay(self, stored: bytes, include_usage: bool) -> list[bytes] | None:
        return None  # nothing streams: a hit is always returned whole


def request_schema() -> dict[str, Any]:
    """What ``parse_embeddings_request`` enforces."""
    token = {"type": "integer", "minimum": 0, "maximum": MAX_TOKEN_ID}
    tokens = {"type": "array", "minItems": 1, "items": token}
    return {
        "type": "object",
        "required": ["model", "input"],
        "properties": {
            "model": {
                "type": "string",
                "pattern": "\\S",
                "maxLength": MAX_MODEL_CHARS,
                "description": "`auto` is the policy's default embedding model; or a catalog "
                "embedding model.",
            },
            "input": {
                "oneOf": [
                    {"type": "string", "minLength": 1},
                    {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": MAX_INPUTS,
                        "items": {"type": "string", "minLength": 1},
                    },
                    {**tokens, "maxItems": MAX_INPUTS},
                    {"type": "array", "minItems": 1, "maxItems": MAX_INPUTS, "items": tokens},
                ]
            },
            "encoding_format": {"type": "string", "enum": list(ENCODINGS)},
            "dimensions": {"type": "integer", "minimum": 1},
            "user": {"type": "string"},
        },
    }


EMBEDDING_RESPONSE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["object", "data", "model", "usage"],
    "properties": {
        "object": {"const": "list"},
        "model": {"type": "string"},
        "data": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["object", "embedding", "index"],
                "properties": {
                    "object": {"const": "embedding"},
                    "embedding": {
                        "anyOf": [
                            {"type": "array", "items": {"type": "number"}},
                            {"type": "string", "description": "base64 of float32s"},
                        ]
                    },
                    "index": {"type": "integer"},
                },
            },
        },
        "usage": {
            "type": "object",
            "properties": {
                "prompt_tokens": {"type": "integer"},
                "total_tokens": {"type": "integer"},
            },
        },
    },
}


class EmbeddingsDialect(PassThrough):
    name = "embeddings"
    summary = "Create embeddings (OpenAI-compatible)"
    path = "/v1/embeddings"
    api = EMBEDDINGS_API

    def parse(self, raw: bytes, limits: Limits) -> LlmRequest:
        return parse_embeddings_request(decode_json(raw))

    def openapi(self, limits: Limits) -> dict[str, Any]:
        return openapi.llm_operation(
            request_schema(),
            EMBEDDING_RESPONSE_SCHEMA,
            "The embeddings, in the order of the inputs.",
            " Also: a model that is not an embedding model.",
            streams=False,
        )


WIRE = EmbeddingsWire()
DIALECT = EmbeddingsDialect()
register(DIALECT, WIRE)
