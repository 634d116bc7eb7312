"""Vendor flavours of the OpenAI wire: Gemini's compatible endpoint and Azure OpenAI.

Same answers as ``/v1`` (same generator, same usage, so a recount holds), served under
each vendor's own paths, with its auth, its error shapes and its quirks, so that a
gateway's adapters can be tested end to end against them:

- Gemini (``/v1beta/openai/chat/completions``, ``/v1beta/openai/embeddings``): errors
  wrapped in a one-element list with a gRPC ``status``; the key as a bearer (or
  ``x-goog-api-key``), a wrong one a 400 ``API key not valid``, as Google answers. Its chat
  quirks, the harshest reported shapes (api-surface §2.2): ``finish_reason: "stop"``
  alongside tool calls; streamed calls whole, one chunk each, without ``index`` or
  ``id``; the finish reason in a chunk of its own after them, carrying the usage (no
  ``choices: []`` usage chunk); a thought signature in ``extra_content`` on each call.
- Azure v1 (``/openai/v1/...``) and classic (``/openai/deployments/{d}/chat/completions``,
  ``.../embeddings``, ``/openai/responses``, with ``?api-version=``): ``api-key`` or a
  bearer required (any value without a simulator key, that one with it); classic needs
  ``api-version`` (missing: 404 ``Resource not found``; malformed: 400 ``API version not
  supported``) and answers as the deployment whatever the body's ``model``. Errors are
  ``{"error": {"code", "message"}}`` (``DeploymentNotFound`` for an unknown model); chat
  answers carry content-filter results, and a stream opens with Azure's ``choices: []``
  chunk of prompt-filter results.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import orjson

from tollgate_common.asgi import Scope
from tollgate_simulator import chat
from tollgate_simulator.faults import Fault
from tollgate_simulator.generate import ToolCall
from tollgate_simulator.wire import Reply

GEMINI = "gemini"
AZURE = "azure"  # the v1 API
AZURE_CLASSIC = "azure-classic"

# Vendor path -> (the OpenAI path whose endpoint serves it, vendor).
ROUTES: dict[str, tuple[str, str]] = {
    "/v1beta/openai/chat/completions": ("/chat/completions", GEMINI),
    "/v1beta/openai/embeddings": ("/embeddings", GEMINI),
    "/openai/v1/chat/completions": ("/chat/completions", AZURE),
    "/openai/v1/responses": ("/responses", AZURE),
    "/openai/v1/embeddings": ("/embeddings", AZURE),
    "/openai/responses": ("/responses", AZURE_CLASSIC),
}
# Also under /v1: where one base URL serves every provider (``upstream_base_url``).
_DEPLOYMENT = re.compile(
    r"^(?:/v1)?/openai/deployments/([^/]{1,256})(/chat/completions|/embeddings)$"
)
_API_VERSION = re.compile(r"^(\d{4}-\d{2}-\d{2}(-preview)?|preview|latest)$")

# HTTP status -> gRPC status name, as Google's errors carry it.
_GRPC = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_AZURE_CODES = {
    400: "BadRequest",
    404: "DeploymentNotFound",
    429: "429",
    500: "InternalServerError",
}
_AZURE_DENIED = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to "
    "provide a valid key for an active subscription and use a correct regional API endpoint "
    "for your resource."
)


def deployment_route(path: str) -> tuple[str, str] | None:
    """``(OpenAI path, deployment)`` of a classic deployments path, else None."""
    m = _DEPLOYMENT.match(path)
    return (m.group(2), m.group(1)) if m else None


def with_model(body: bytes, deployment: str) -> bytes:
    """The body answered as ``deployment``: Azure ignores the body's ``model``."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body  # the endpoint's parser says what is wrong with it
    if not isinstance(data, dict):
        return body
    return orjson.dumps({**data, "model": deployment})


def error_body(vendor: str, status: int, message: str, code: str | None = None) -> bytes:
    if vendor == GEMINI:
        err = {"code": status, "message": message, "status": _GRPC.get(status, "UNKNOWN")}
        return orjson.dumps([{"error": err}])
    return orjson.dumps(
        {"error": {"code": code or _AZURE_CODES.get(status, str(status)), "message": message}}
    )


def fault_body(vendor: str, fault: Fault) -> bytes:
    message = fault.message or f"Simulated {fault.status} error."
    return error_body(vendor, fault.status, message, fault.code)


def model_not_found(vendor: str, model: str) -> tuple[int, bytes]:
    if vendor == GEMINI:
        message = f"models/{model} is not found for API version v1main, or is not supported."
        return 404, error_body(vendor, 404, message)
    message = (
        "The API deployment for this resource does not exist. If you created the deployment "
        "within the last 5 minutes, please wait a moment and try again."
    )
    return 404, error_body(vendor, 404, message, "DeploymentNotFound")


def _header(scope: Scope, name: bytes) -> bytes:
    return next((bytes(v) for k, v in scope["headers"] if k == name), b"")


def refusal(vendor: str, scope: Scope, key: bytes) -> tuple[int, bytes] | None:
    """Why the vendor would refuse this request before reading it (auth, api-version)."""
    bearer = _header(scope, b"authorization")
    if vendor == GEMINI:
        given = bearer.removeprefix(b"Bearer ") if bearer else _header(scope, b"x-goog-api-key")
        if key and not hmac.compare_digest(given, key):
            return 400, error_body(vendor, 400, "API key not valid. Please pass a valid API key.")
        return None
    api_key = _header(scope, b"api-key")
    if key:
        ok = hmac.compare_digest(api_key, key) or hmac.compare_digest(bearer, b"Bearer " + key)
    else:
        ok = bool(api_key) or bearer.startswith(b"Bearer ")
    if not ok:
        return 401, error_body(vendor, 401, _AZURE_DENIED, "401")
    if vendor == AZURE_CLASSIC:
        query = parse_qs(bytes(scope.get("query_string", b"")).decode("latin-1"))
        version = query.get("api-version")
        if not version:
            return 404, error_body(vendor, 404, "Resource not found", "404")
        if not _API_VERSION.match(version[0]):
            return 400, error_body(vendor, 400, "API version not supported", "BadRequest")
    return None


# --- answers --------------------------------------------------------------------------


def _signature(call_id: str) -> str:
    return hashlib.sha256(call_id.encode()).hexdigest()[:32]


def _gemini_call(call: ToolCall) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
        "extra_content": {"google": {"thought_signature": _signature(call.id)}},
    }


@dataclass(slots=True)
class _VendorReply:
    """A chat reply in a vendor's shape, paced as the reply it wraps."""

    inner: chat.ChatReply

    @property
    def tokens(self) -> int:
        return self.inner.tokens

    @property
    def think_tokens(self) -> int:
        return self.inner.think_tokens


@dataclass(slots=True)
class GeminiChatReply(_VendorReply):
    preamble: int = 0
    closing: int = 2  # the finish chunk, [DONE]

    def body(self) -> bytes:
        out = orjson.loads(self.inner.body())
        for key in ("service_tier", "system_fingerprint"):
            out.pop(key, None)
        answer = self.inner.answer
        for choice in out["choices"]:
            if answer.tool_calls:
                choice["message"]["tool_calls"] = [
                    {"id": "", **_gemini_call(c)} for c in answer.tool_calls
                ]
                choice["finish_reason"] = "stop"
        return orjson.dumps(out)

    def events(self) -> list[tuple[bytes, int]]:
        answer, req = self.inner.answer, self.inner.req
        head = {
            "id": self.inner.id_,
            "object": "chat.completion.chunk",
            "created": self.inner.created,
            "model": req.model,
        }

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            return b"data: " + orjson.dumps({**head, "choices": [choice], **extra}) + b"\n\n"

        events: list[tuple[bytes, int]] = []
        for i, call in enumerate(answer.tool_calls):
            delta: dict[str, Any] = {"tool_calls": [_gemini_call(call)]}
            if i == 0:
                delta["role"] = "assistant"
            events.append((chunk(delta), max(1, len(call.arguments) // 4)))
        if not answer.tool_calls:
            for i, piece in enumerate(answer.pieces or [""]):
                delta = {"role": "assistant", "content": piece} if i == 0 else {"content": piece}
                events.append((chunk(delta), 1))
        finish = "stop" if answer.tool_calls else answer.finish_reason
        extra = {"usage": chat.chat_usage(answer)} if req.include_usage else {}
        events.append((chunk({}, finish, **extra), 0))
        events.append((chat.DONE, 0))
        return events


_FILTERS = {
    name: {"filtered": False, "severity": "safe"}
    for name in ("hate", "self_harm", "sexual", "violence")
}


@dataclass(slots=True)
class AzureChatReply(_VendorReply):
    preamble: int = 1  # the prompt-filter chunk

    @property
    def closing(self) -> int:
        return self.inner.closing

    def body(self) -> bytes:
        out = orjson.loads(self.inner.body())
        out["prompt_filter_results"] = [{"prompt_index": 0, "content_filter_results": _FILTERS}]
        for choice in out["choices"]:
            choice["content_filter_results"] = _FILTERS
        return orjson.dumps(out)

    def events(self) -> list[tuple[bytes, int]]:
        first = {
            "id": "",
            "object": "",
            "created": 0,
            "model": "",
            "choices": [],
            "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": _FILTERS}],
        }
        return [(b"data: " + orjson.dumps(first) + b"\n\n", 0), *self.inner.events()]


def flavour(vendor: str, reply: Reply) -> Reply:
    """The reply as the vendor shapes it (chat only: other APIs answer as OpenAI's)."""
    if not isinstance(reply, chat.ChatReply):
        return reply
    if vendor == GEMINI:
        return GeminiChatReply(reply)
    return AzureChatReply(reply)
