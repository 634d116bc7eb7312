"""OpenAI-shaped errors: one exception type, one body builder, and the one table from a
failure to the status a client sees. Pure (the gRPC face maps statuses to codes).

Every error leaves as ``{"error": {"message", "type", "param", "code"}}`` with real
JSON values or null, whatever raised it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import orjson

from tollgate_orchestrator.retry import MAX_RETRY_AFTER_SECONDS

INVALID = "invalid_request_error"  # the OpenAI error types
ERROR_TYPE_SERVER = "server_error"


class ApiError(Exception):
    """An error answered to the client in OpenAI's shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = INVALID,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
        reason: str = "",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code
        self.headers = dict(headers or {})
        self.reason = reason  # a bounded label value for tollgate_http_rejections_total

    def body(self) -> bytes:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(
    message: str, type_: str | None, param: str | None = None, code: str | int | None = None
) -> bytes:
    return orjson.dumps(
        {"error": {"message": message, "type": type_, "param": param, "code": code}}
    )


def bad_request(param: str | None, message: str, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code, reason="invalid")


def _json_scalar(value: Any) -> str | int | None:
    """Upstreams send odd things ("None", numbers); keep strings and ints, else null."""
    if value is None or value == "None" or value == "":
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | str):
        return value
    return str(value)


def upstream_error(status: int, body: object, headers: Mapping[str, str] | None = None) -> ApiError:
    """An upstream 4xx passed through in OpenAI's shape, whatever shape it came in."""
    err: Any = body.get("error", body) if isinstance(body, dict) else None
    message = f"upstream returned {status}"
    type_: str | None = INVALID if status < 500 else ERROR_TYPE_SERVER
    param: str | int | None = None
    code: str | int | None = None
    if isinstance(err, dict):
        if isinstance(err.get("message"), str) and err["message"]:
            message = err["message"]
        elif err.get("message") is not None:
            message = orjson.dumps(err["message"]).decode()
        t = _json_scalar(err.get("type"))
        type_ = str(t) if t is not None else type_
        param = _json_scalar(err.get("param"))
        code = _json_scalar(err.get("code"))
    elif isinstance(body, str) and body.strip():
        message = body.strip()[:500]
    e = ApiError(
        status,
        message,
        type_=type_ or INVALID,
        param=None if param is None else str(param),
        headers=headers,
        reason="upstream",
    )
    e.code = None if code is None else str(code)
    return e


def model_not_found(model: str) -> ApiError:
    return ApiError(
        404,
        f"The model `{model[:100]}` does not exist or you do not have access to it.",
        param="model",
        code="model_not_found",
        reason="not_found",
    )


def model_not_allowed(model: str) -> ApiError:
    return ApiError(
        403,
        f"Your key may not use the model `{model[:100]}`.",
        param="model",
        code="model_not_allowed",
        reason="forbidden",
    )


def exhausted(error_class: str, retry_after: float | None = None) -> ApiError:
    """What the client gets when no model of the chain served, by the last failure's class
    (the values of ``tollgate_orchestrator.retry``; "deadline" when time ran out)."""
    if error_class == "circuit_open":
        return ApiError(
            503,
            "Every model that could serve this request is unavailable; retry shortly.",
            type_=ERROR_TYPE_SERVER,
            code="upstream_unavailable",
            headers={"retry-after": "1"},
        )
    if error_class in ("deadline", "timeout"):
        return ApiError(
            504,
            "The upstream model did not answer in time.",
            type_=ERROR_TYPE_SERVER,
            code="timeout",
        )
    if error_class == "rate_limit":
        # Finite and at most the cap (L-2): math.ceil(inf) raised, huge values were relayed.
        seconds = 1.0 if retry_after is None or not math.isfinite(retry_after) else retry_after
        wait = max(1, math.ceil(min(seconds, MAX_RETRY_AFTER_SECONDS)))
        return ApiError(
            429,
            "The upstream model is rate limited; retry later.",
            type_="rate_limit_error",
            code="rate_limit_exceeded",
            headers={"retry-after": str(wait)},
        )
    if error_class == "upstream_auth":
        # The provider's text can hold a masked key and the account's URL: never relay it.
        return ApiError(
            502,
            "The upstream provider refused the gateway's credentials; "
            "this is a gateway configuration problem, not your API key.",
            type_=ERROR_TYPE_SERVER,
            code="upstream_auth_error",
        )
    if error_class == "model_not_found":
        return ApiError(
            502,
            "The upstream provider does not serve the model the gateway is configured with.",
            type_=ERROR_TYPE_SERVER,
            code="upstream_model_not_found",
        )
    return ApiError(
        502,
        f"The upstream model failed ({error_class}) and no fallback succeeded.",
        type_=ERROR_TYPE_SERVER,
        code="upstream_error",
    )
