"""Helpers shared by the reliability and accounting suites: scraping, simulator faults,
and the OpenAI error-shape check every failure answer must pass."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families

from tools.stack import DEV_KEY, Stack

AUTH = {"authorization": f"Bearer {DEV_KEY}"}
CHAT = "/v1/chat/completions"

Labels = tuple[tuple[str, str], ...]
Samples = dict[tuple[str, Labels], float]


def get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def scrape_text(url: str) -> str:
    """``url``'s /metrics (a base URL, or the metrics URL itself: the orchestrator's is
    ``Stack.metrics_url``, off its API port)."""
    url = url if url.endswith("/metrics") else url + "/metrics"
    status, body = get(url)
    assert status == 200, f"{url} answered {status}"
    return body.decode()


def parse(text: str) -> Samples:
    out: Samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def scrape(url: str) -> Samples:
    return parse(scrape_text(url))


def total(samples: Samples, name: str, **match: str) -> float:
    return sum(
        v
        for (n, labels), v in samples.items()
        if n == name and all(dict(labels).get(k) == want for k, want in match.items())
    )


def delta(before: Samples, after: Samples, name: str, **match: str) -> float:
    return total(after, name, **match) - total(before, name, **match)


def sim(stack: Stack, path: str, body: Any = None, method: str | None = None) -> Any:
    data = None if body is None else orjson.dumps(body)
    req = urllib.request.Request(
        stack.sim_url + path,
        data=data,
        method=method or ("POST" if body is not None else "GET"),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        return orjson.loads(resp.read() or b"{}")


def fault(stack: Stack, *faults: Mapping[str, Any]) -> None:
    sim(stack, "/_sim/faults", list(faults))


def reset_sim(stack: Stack) -> None:
    sim(stack, "/_sim/reset", method="POST")


def error_problems(body: object) -> list[str]:
    """What is wrong with an error body, judged against OpenAI's shape; [] when it is right.

    ``type``, ``param`` and ``code`` must be real JSON values or null: never the string
    "None", never a dict where a string belongs (LiteLLM #8821)."""
    if not isinstance(body, dict) or not isinstance(body.get("error"), dict):
        return [f"not {{'error': {{...}}}}: {str(body)[:200]}"]
    err = body["error"]
    problems = []
    for key in ("message", "type", "param", "code"):
        if key not in err:
            problems.append(f"error.{key} missing")
    if not isinstance(err.get("message"), str) or not err.get("message"):
        problems.append("error.message is not a non-empty string")
    for key in ("type", "param"):
        if err.get(key) is not None and not isinstance(err[key], str):
            problems.append(f"error.{key} is {type(err[key]).__name__}")
    if err.get("code") is not None and not isinstance(err["code"], str | int):
        problems.append(f"error.code is {type(err['code']).__name__}")
    for key in ("type", "param", "code"):
        if err.get(key) in ("None", "null", ""):
            problems.append(f"error.{key} is the string {err[key]!r}")
    text = orjson.dumps(body).decode()
    if "Traceback" in text or 'File "' in text:
        problems.append("a traceback leaked into the error")
    return problems


ANTHROPIC_ERROR_TYPES = frozenset(
    {
        "invalid_request_error",
        "authentication_error",
        "permission_error",
        "not_found_error",
        "request_too_large",
        "rate_limit_error",
        "api_error",
        "overloaded_error",
        "timeout_error",
    }
)


def anthropic_error_problems(body: object) -> list[str]:
    """What is wrong with an error body, judged against Anthropic's shape
    (``{"type": "error", "error": {"type", "message"}}``); [] when it is right."""
    if not isinstance(body, dict) or body.get("type") != "error":
        return [f"not {{'type': 'error', ...}}: {str(body)[:200]}"]
    err = body.get("error")
    if not isinstance(err, dict):
        return ["error is not an object"]
    problems = []
    if err.get("type") not in ANTHROPIC_ERROR_TYPES:
        problems.append(f"error.type {err.get('type')!r} is not one of Anthropic's")
    if not isinstance(err.get("message"), str) or not err["message"]:
        problems.append("error.message is not a non-empty string")
    text = orjson.dumps(body).decode()
    if "Traceback" in text or 'File "' in text:
        problems.append("a traceback leaked into the error")
    return problems


def problems_for(path: str, body: object) -> list[str]:
    """The error shape of the API a path belongs to: Anthropic's under /v1/messages."""
    if path.startswith("/v1/messages"):
        return anthropic_error_problems(body)
    return error_problems(body)


def assert_openai_error(
    status: int, headers: Mapping[str, str], raw: bytes, *, expect_status: int | None = None
) -> dict[str, Any]:
    """Check a failure answer end to end and return its ``error`` object."""
    assert 400 <= status < 600, status
    if expect_status is not None:
        assert status == expect_status, (status, raw[:300])
    assert headers.get("x-request-id"), "x-request-id missing on an error"
    assert headers.get("content-type", "").startswith("application/json"), headers
    body = orjson.loads(raw)
    problems = error_problems(body)
    assert not problems, (problems, raw[:300])
    err: dict[str, Any] = body["error"]
    return err
