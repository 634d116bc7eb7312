"""Fault injection: a FIFO queue of faults, each consumed by the next calls to its model.

Faults apply to every API alike. A fault either fails a call with an HTTP status and
an error body in the API's own shape (OpenAI's, or Anthropic's on /v1/messages),
delays a successful answer (``status: 200`` with ``delay_ms``), or breaks a
stream after its first chunks (``mid_stream_error``). ``delay_ms`` is absolute:
``latency_scale`` does not touch it, so timeout tests work with instant models.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tollgate_common.config import format_validation_error


class FaultError(ValueError):
    """A fault request is invalid; the message names the field."""


class Fault(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(default="*", min_length=1)
    status: int = 200
    count: int = Field(default=1, ge=1)
    delay_ms: float = Field(default=0, ge=0)
    retry_after: float | None = Field(default=None, ge=0)
    mid_stream_error: bool = False
    after_chunks: int = Field(default=1, ge=1)  # chunks sent before a mid-stream break
    # Optional overrides of the error body, e.g. code "insufficient_quota" on a 429.
    code: str | None = None
    message: str | None = None
    type: str | None = None

    @model_validator(mode="after")
    def _check(self) -> Fault:
        if self.status != 200 and not 400 <= self.status <= 599:
            raise ValueError("status: must be 200 (slow or broken answer) or 400-599")
        if self.mid_stream_error and self.status != 200:
            raise ValueError("status: a mid_stream_error fault answers 200 first; omit status")
        if self.status == 200 and not self.mid_stream_error and self.delay_ms == 0:
            raise ValueError("status: 200 needs delay_ms or mid_stream_error, else it does nothing")
        return self

    def public(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


def parse_faults(body: bytes) -> list[Fault]:
    """One fault object or a list of them."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise FaultError(f"body: not valid JSON: {exc}") from exc
    items = data if isinstance(data, list) else [data]
    faults = []
    for i, item in enumerate(items):
        where = f"[{i}]." if isinstance(data, list) else ""
        if not isinstance(item, dict):
            raise FaultError(f"{where or 'body'}: a fault must be a JSON object")
        try:
            faults.append(Fault.model_validate(item))
        except ValidationError as exc:
            raise FaultError(f"{where}{format_validation_error(exc)}") from exc
    return faults


class FaultQueue:
    """Faults in the order they were queued; the first one matching the model wins."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []

    def add(self, faults: list[Fault]) -> None:
        self._faults.extend(faults)

    def clear(self) -> None:
        self._faults.clear()

    def __len__(self) -> int:
        return len(self._faults)

    def pending(self) -> list[dict[str, Any]]:
        return [f.public() for f in self._faults]

    def take(self, model: str) -> Fault | None:
        """Consume one call of the first fault for ``model`` (or "*")."""
        if not self._faults:  # the hot path: nothing queued
            return None
        for i, fault in enumerate(self._faults):
            if fault.model == model or fault.model == "*":
                if fault.count <= 1:
                    del self._faults[i]
                else:
                    self._faults[i] = fault.model_copy(update={"count": fault.count - 1})
                return fault
        return None


# status -> (type, code, message) in OpenAI's style.
_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request (simulated)."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided (simulated)."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Forbidden."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist (simulated)."),
    408: ("timeout", None, "Request timed out (simulated)."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached (simulated)."),
    500: ("server_error", None, "The server had an error while processing your request."),
    502: ("server_error", "bad_gateway", "Bad gateway (simulated)."),
    503: ("server_error", "service_unavailable", "The engine is currently overloaded."),
    504: ("timeout", None, "Gateway timeout (simulated)."),
}


def error_body(
    message: str, type_: str, param: str | None = None, code: str | None = None
) -> bytes:
    return orjson.dumps(
        {"error": {"message": message, "type": type_, "param": param, "code": code}}
    )


# status -> Anthropic's error type (its error shape has a type and a message, no code).
_ANTHROPIC_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def anthropic_error_body(status: int, message: str, type_: str | None = None) -> bytes:
    if type_ is None:
        default = "invalid_request_error" if status < 500 else "api_error"
        type_ = _ANTHROPIC_TYPES.get(status, default)
    return orjson.dumps({"type": "error", "error": {"type": type_, "message": message}})


def fault_error_body(fault: Fault, anthropic: bool = False) -> bytes:
    default_type = "invalid_request_error" if fault.status < 500 else "server_error"
    type_, code, message = _ERRORS.get(fault.status, (default_type, None, "Simulated error."))
    if anthropic:
        return anthropic_error_body(fault.status, fault.message or message, fault.type)
    return error_body(fault.message or message, fault.type or type_, None, fault.code or code)


def retry_after_value(seconds: float) -> bytes:
    return (str(int(seconds)) if seconds == int(seconds) else f"{seconds:g}").encode()
