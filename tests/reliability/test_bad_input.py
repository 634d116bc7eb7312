"""The bad-input matrix (issue 4 §5), end to end against real processes.

Every malformed request must get one fast 4xx in OpenAI's shape whose ``param`` names
the field (null when the body as a whole is at fault: it does not parse, it is not
UTF-8, it is too large), with real JSON values and an ``x-request-id``: never a 5xx,
never a traceback. Then schemathesis fuzzes every operation of the app's own OpenAPI
schema, positive and negative, with a fixed seed and bounded examples.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx2
import openai
import orjson
import pytest
from openai import OpenAI

from tests.reliability.common import (
    AUTH,
    CHAT,
    anthropic_error_problems,
    assert_openai_error,
    problems_for,
)
from tools.stack import DEV_KEY, Stack

pytestmark = pytest.mark.integration

MAX_MESSAGES = 2048  # the orchestrator's defaults: the matrix tests what users get
MAX_TOKENS_CAP = 131_072
MAX_BODY = 1024 * 1024
USER = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(
        log_dir=tmp_path_factory.mktemp("bad-input"),
        sim_env={"TOLLGATE_SIM_LATENCY_SCALE": "0"},  # fuzzed valid requests answer at once
    )
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def http(stack: Stack) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=stack.base_url, timeout=30) as c:
        yield c


def body(**fields: Any) -> bytes:
    base: dict[str, Any] = {"model": "auto", "messages": USER}
    base.update(fields)
    return orjson.dumps({k: v for k, v in base.items() if v is not _DROP})


_DROP = object()


@dataclass(frozen=True)
class Case:
    name: str
    raw: bytes
    param: str | None
    status: int = 400
    code: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


def _tool(**fn: Any) -> list[dict[str, Any]]:
    return [{"type": "function", "function": {"name": "lookup", **fn}}]


CASES = [
    # malformed JSON and whole-body faults: nothing to name, so param is null
    Case("malformed json", b'{"model": "auto", "messages": [', None),
    Case("empty body", b"", None),
    Case("body is an array", b"[1, 2]", None),
    Case("body is null", b"null", None),
    Case("NaN literal", b'{"model": "auto", "messages": [], "temperature": NaN}', None),
    Case("nesting too deep", b"[" * 5000 + b"]" * 5000, None),
    Case(
        "invalid utf-8",
        b'{"model": "auto", "messages": [{"role": "user", "content": "\xff\xfe"}]}',
        None,
    ),
    Case(
        "lone surrogate",
        b'{"model": "auto", "messages": [{"role": "user", "content": "\\ud800"}]}',
        None,
    ),
    # wrong types
    Case("model is a number", body(model=5), "model"),
    Case("model is blank", body(model="   "), "model"),
    Case("model missing", body(model=_DROP), "model"),
    Case("messages is a string", body(messages="hello"), "messages"),
    Case("messages missing", body(messages=_DROP), "messages"),
    Case("message is a string", body(messages=["hello"]), "messages[0]"),
    Case(
        "content is a number",
        body(messages=[{"role": "user", "content": 5}]),
        "messages[0].content",
    ),
    Case(
        "content part without text",
        body(messages=[{"role": "user", "content": [{"type": "text", "text": 3}]}]),
        "messages[0].content[0].text",
    ),
    Case("temperature is a string", body(temperature="hot"), "temperature"),
    Case("max_tokens is a float", body(max_tokens=1.5), "max_tokens"),
    Case("max_tokens is a boolean", body(max_tokens=True), "max_tokens"),
    Case(
        "max_tokens beyond 64 bits",
        body(max_tokens=_DROP)[:-1] + b',"max_tokens":123456789012345678901234567890}',
        "max_tokens",
    ),
    Case("n is a boolean", body(n=True), "n"),
    Case("seed is a string", body(seed="7"), "seed"),
    Case("stop holds a number", body(stop=[1]), "stop"),
    Case("user is an object", body(user={"id": 1}), "user"),
    Case("metadata is a list", body(metadata=[1]), "metadata"),
    Case("response_format type unknown", body(response_format={"type": "yaml"}), "response_format"),
    Case("tool_choice unknown", body(tool_choice="sometimes"), "tool_choice"),
    # empty and unknown values
    Case("empty messages", body(messages=[]), "messages"),
    Case("too many messages", body(messages=USER * (MAX_MESSAGES + 1)), "messages"),
    Case("unknown role", body(messages=[{"role": "wizard", "content": "x"}]), "messages[0].role"),
    Case("role is a number", body(messages=[{"role": 1, "content": "x"}]), "messages[0].role"),
    Case(
        "later message has an unknown role",
        body(messages=[*USER, {"role": "robot", "content": "x"}]),
        "messages[1].role",
    ),
    Case("user without content", body(messages=[{"role": "user"}]), "messages[0].content"),
    Case(
        "tool message without tool_call_id",
        body(messages=[{"role": "tool", "content": "42"}]),
        "messages[0].tool_call_id",
    ),
    # out of range
    Case("negative max_tokens", body(max_tokens=-1), "max_tokens"),
    Case("zero max_completion_tokens", body(max_completion_tokens=0), "max_completion_tokens"),
    Case("max_tokens over the cap", body(max_tokens=MAX_TOKENS_CAP + 1), "max_tokens"),
    Case("temperature above 2", body(temperature=2.5), "temperature"),
    Case("temperature below 0", body(temperature=-0.1), "temperature"),
    Case("top_p above 1", body(top_p=1.01), "top_p"),
    Case("presence_penalty below -2", body(presence_penalty=-3), "presence_penalty"),
    Case("n of 0", body(n=0), "n"),
    Case("top_logprobs of 21", body(top_logprobs=21), "top_logprobs"),
    # unknown model: 404 model_not_found, as OpenAI answers it
    Case("unknown model", body(model="gpt-17-ultra"), "model", 404, "model_not_found"),
    Case("model with a NUL", body(model="auto\u0000"), "model", 404, "model_not_found"),
    # non-boolean stream
    Case("stream is a string", body(stream="true"), "stream"),
    Case("stream is a number", body(stream=1), "stream"),
    Case("stream_options is a string", body(stream=True, stream_options="usage"), "stream_options"),
    Case(
        "include_usage is a string",
        body(stream=True, stream_options={"include_usage": "yes"}),
        "stream_options.include_usage",
    ),
    # malformed tools
    Case("tools is an object", body(tools={"type": "function"}), "tools"),
    Case("tool is a string", body(tools=["lookup"]), "tools[0]"),
    Case(
        "tool type unknown",
        body(tools=[{"type": "plugin", "function": {"name": "x"}}]),
        "tools[0].type",
    ),
    Case("tool without function", body(tools=[{"type": "function"}]), "tools[0].function"),
    Case("tool name with a space", body(tools=_tool(name="look up")), "tools[0].function.name"),
    Case("tool name too long", body(tools=_tool(name="x" * 65)), "tools[0].function.name"),
    Case(
        "tool parameters a list", body(tools=_tool(parameters=[])), "tools[0].function.parameters"
    ),
    Case(
        "tool description a number",
        body(tools=_tool(description=3)),
        "tools[0].function.description",
    ),
    # a huge body: 413 before it is parsed
    Case(
        "huge body",
        body(messages=[{"role": "user", "content": "a" * (MAX_BODY + 1)}]),
        None,
        413,
        "request_too_large",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gets_a_4xx_naming_the_field(http: httpx2.Client, case: Case) -> None:
    resp = http.post(CHAT, content=case.raw, headers={**AUTH, **case.headers})
    err = assert_openai_error(
        resp.status_code, resp.headers, resp.content, expect_status=case.status
    )
    assert err["param"] == case.param, err
    assert err["code"] == case.code, err
    assert err["type"] == "invalid_request_error"


# The other client APIs: each names the bad field in its own error shape (Anthropic's has
# no ``param``: the field leads the message, as Anthropic's own errors do).
DIALECT_CASES = [
    ("/v1/responses", {"model": "auto", "input": 3}, "input"),
    ("/v1/responses", {"model": "auto", "input": "hi", "temperature": 9}, "temperature"),
    (
        "/v1/responses",
        {"model": "auto", "input": [{"type": "message", "role": "wizard", "content": "hi"}]},
        "input[0].role",
    ),
    (
        "/v1/responses",
        {"model": "auto", "input": "hi", "tools": [{"type": "function"}]},
        "tools[0].name",
    ),
    ("/v1/responses", {"model": "auto", "input": "hi", "background": True}, "background"),
    ("/v1/embeddings", {"model": "auto", "input": []}, "input"),
    ("/v1/embeddings", {"model": "auto", "input": ["a", ""]}, "input[1]"),
    (
        "/v1/embeddings",
        {"model": "auto", "input": "a", "encoding_format": "hex"},
        "encoding_format",
    ),
    ("/v1/embeddings", {"model": "gpt-4o-mini", "input": "a"}, "model"),
    (
        "/v1/messages",
        {"model": "auto", "messages": [{"role": "user", "content": "hi"}]},
        "max_tokens",
    ),
    (
        "/v1/messages",
        {"model": "auto", "max_tokens": 8, "messages": [{"role": "wizard", "content": "hi"}]},
        "messages.0.role",
    ),
    (
        "/v1/messages",
        {
            "model": "auto",
            "max_tokens": 8,
            "messages": [{"role": "user", "content": [{"type": "x"}]}],
        },
        "messages.0.content.0.type",
    ),
]


@pytest.mark.parametrize(
    ("path", "fields", "param"), DIALECT_CASES, ids=[c[2] for c in DIALECT_CASES]
)
def test_every_dialect_names_the_bad_field_in_its_own_shape(
    http: httpx2.Client, path: str, fields: dict[str, Any], param: str
) -> None:
    resp = http.post(path, content=orjson.dumps(fields), headers=AUTH)
    assert resp.status_code == 400, resp.text
    assert resp.headers.get("x-request-id")
    body = resp.json()
    assert not problems_for(path, body), body
    if path.startswith("/v1/messages"):
        assert body["error"]["type"] == "invalid_request_error"
        assert body["error"]["message"].startswith(f"{param}:"), body
    else:
        assert body["error"]["param"] == param, body


@pytest.mark.parametrize("path", ["/v1/responses", "/v1/embeddings", "/v1/messages"])
def test_every_dialect_refuses_a_wrong_key_in_its_own_shape(http: httpx2.Client, path: str) -> None:
    for headers in ({}, {"authorization": "Bearer sk-not-a-key"}, {"x-api-key": "sk-not-a-key"}):
        resp = http.post(path, content=b"{not json", headers=headers)
        assert resp.status_code == 401, (path, headers, resp.text)
        body = resp.json()
        if path == "/v1/messages":
            assert not anthropic_error_problems(body), body
            assert body["error"]["type"] == "authentication_error"
        else:
            assert body["error"]["code"] == "invalid_api_key", body
    if path == "/v1/messages":  # Anthropic's clients send the key as x-api-key
        ok = http.post(path, headers={"x-api-key": DEV_KEY}, json=DIALECT_CASES[-2][1])
        assert ok.status_code == 400  # past the key, to the bad field


def test_integral_floats_are_integers_as_json_schema_says(http: httpx2.Client) -> None:
    resp = http.post(CHAT, content=body(max_tokens=16.0, n=1.0, seed=7.0), headers=AUTH)
    assert resp.status_code == 200, resp.text
    assert resp.json()["usage"]["completion_tokens"] <= 16  # forwarded as the integer 16


def test_huge_chunked_body_without_length_is_refused_while_streaming_in(
    http: httpx2.Client,
) -> None:
    sent = [0]

    def chunks() -> Iterator[bytes]:
        yield b'{"model": "auto", "messages": [{"role": "user", "content": "'
        for _ in range(64):  # 4 MiB in all; the server stops reading after 1 MiB
            sent[0] += 65536
            yield b"a" * 65536
        yield b'"}]}'

    try:
        resp = http.post(CHAT, content=chunks(), headers=AUTH)
    except httpx2.WriteError:
        pytest.fail("the server closed the connection instead of answering 413")
    err = assert_openai_error(resp.status_code, resp.headers, resp.content, expect_status=413)
    assert err["code"] == "request_too_large"


@pytest.mark.parametrize(
    ("name", "headers"),
    [
        ("missing", {}),
        ("wrong key", {"authorization": "Bearer sk-not-a-key"}),
        ("bearer without a key", {"authorization": "Bearer"}),
        ("basic scheme", {"authorization": "Basic ZGV2OnNrLXRvbGxnYXRlLWRldg=="}),
        ("key as a query-less header", {"x-api-key": DEV_KEY}),
    ],
)
def test_missing_or_wrong_key_is_401(
    http: httpx2.Client, name: str, headers: dict[str, str]
) -> None:
    for raw in (body(), b"{not json"):  # auth is judged before the body
        resp = http.post(CHAT, content=raw, headers=headers)
        err = assert_openai_error(resp.status_code, resp.headers, resp.content, expect_status=401)
        assert err["code"] == "invalid_api_key", name
        assert resp.headers["x-should-retry"] == "false"
    models = http.get("/v1/models", headers=headers)
    assert_openai_error(models.status_code, models.headers, models.content, expect_status=401)


def test_the_sdk_sees_typed_errors_and_unknown_fields_are_ignored(stack: Stack) -> None:
    with OpenAI(base_url=stack.base_url + "/v1", api_key=DEV_KEY, max_retries=0) as c:
        with pytest.raises(openai.NotFoundError) as nf:
            c.chat.completions.create(model="gpt-17-ultra", messages=USER)  # type: ignore[arg-type]
        assert nf.value.code == "model_not_found" and nf.value.param == "model"
        assert nf.value.request_id
        with pytest.raises(openai.BadRequestError) as bad:
            c.chat.completions.create(model="auto", messages=USER, temperature=9)  # type: ignore[arg-type]
        assert bad.value.param == "temperature"
        ok = c.chat.completions.with_raw_response.create(
            model="auto",
            messages=USER,  # type: ignore[arg-type]
            extra_body={"frobnicate": {"level": 11}, "x_vendor_flag": True, "logit_bias": {}},
        )
        assert ok.status_code == 200
        assert ok.parse().choices[0].message.content
    with OpenAI(base_url=stack.base_url + "/v1", api_key="sk-wrong", max_retries=0) as c:
        with pytest.raises(openai.AuthenticationError) as auth:
            c.models.list()
        assert auth.value.code == "invalid_api_key"


def _raw_http(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def test_bytes_in_headers_and_broken_framing_never_reach_a_5xx(stack: Stack) -> None:
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
    port = stack.ports.http
    # Undecodable bytes in headers reach the app: a normal OpenAI error.
    for extra, status in (
        (b"Authorization: Bearer \xff\xfe\r\n", 401),
        (b"Authorization: Bearer " + DEV_KEY.encode() + b"\r\nx-request-id: \xff<b>\r\n", 400),
    ):
        raw = _raw_http(port, head + extra + b"Content-Length: 2\r\n\r\n{}")
        head_part, _, payload = raw.partition(b"\r\n\r\n")
        assert raw.startswith(f"HTTP/1.1 {status} ".encode()), raw[:200]
        headers = dict(
            line.decode("latin-1").lower().split(": ", 1) for line in head_part.split(b"\r\n")[1:]
        )
        assert_openai_error(status, headers, payload)
        assert "<b>" not in headers["x-request-id"]  # a caller's odd id is replaced, not echoed
    # Broken HTTP framing is refused by uvicorn's parser before the app sees it: a plain
    # 400 without our body or request id, and never a 5xx.
    for bad in (
        head + b"Content-Length: abc\r\n\r\n{}",
        head + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"NOT HTTP AT ALL\r\n\r\n",
    ):
        raw = _raw_http(port, bad)
        assert raw.startswith(b"HTTP/1.1 400 "), raw[:200]
        assert b"Traceback" not in raw


# --- schemathesis ---------------------------------------------------------------------
MAX_EXAMPLES = 50  # per operation and generation mode
SEED = 20240611
# Generated model names are almost never real: most cases get a real one instead, of the
# kind the operation serves.
MODELS = ("auto", "gpt-4o-mini", "gpt-4.1-nano", None)
EMBEDDING_MODELS = ("auto", "text-embedding-3-small", "text-embedding-3-large", None)
# Bounds of the upstream's own that a schema cannot state because they depend on the model
# (an embedding model's largest ``dimensions``): refusals naming them are the contract too.
MODEL_BOUNDS = {"dimensions"}
# And what the model's upstream cannot carry (the schema describes the API; every model of
# the default policy is reached through Chat Completions for Messages): hosted and server
# tools, server blocks, more stop sequences than chat takes. A 400 that says so is right.
CAPABILITY = re.compile(r"chat upstream|Chat Completions")


def _capability(err: Any) -> bool:
    if not isinstance(err, dict):
        return False
    code, message = err.get("code"), err.get("message")
    if code == "previous_response_not_found":
        return True  # a random id names no stored response: state no schema can know
    return (isinstance(code, str) and code.startswith("unsupported_")) or (
        isinstance(message, str) and CAPABILITY.search(message) is not None
    )


def _check_answer(resp: Any, where: str, positive: bool, path: str = CHAT) -> list[str]:
    status = resp.status_code
    if status >= 500:
        return [f"5xx {where}: {resp.text[:200]}"]
    if status < 400:
        return []
    try:
        body = orjson.loads(resp.content)
    except orjson.JSONDecodeError:
        return [f"not JSON {where}"]
    err = body.get("error") if isinstance(body, dict) else None
    param = err.get("param") if isinstance(err, dict) else None
    if (
        positive
        and status in (400, 413, 422)
        and param not in MODEL_BOUNDS
        and not _capability(err)
    ):
        # The schema is the contract: a request it calls valid must not be refused as bad.
        return [f"schema-valid request refused {where}: {resp.text[:200]}"]
    problems = [] if resp.headers.get("x-request-id") else ["no x-request-id"]
    problems += problems_for(path, body)
    return [f"{problems} {where}"] if problems else []


@pytest.mark.slow
def test_schemathesis_finds_no_5xx_and_only_openai_shaped_errors(stack: Stack) -> None:
    import schemathesis
    from hypothesis import HealthCheck, given, seed, settings
    from hypothesis import strategies as st
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(stack.base_url + "/openapi.json", timeout=10)
    failures: list[str] = []
    calls: dict[str, int] = {}

    def fuzz(op: Any, mode: GenerationMode) -> None:
        models = EMBEDDING_MODELS if op.path == "/v1/embeddings" else MODELS

        @seed(SEED)
        @settings(
            max_examples=MAX_EXAMPLES,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=op.as_strategy(generation_mode=mode), model=st.sampled_from(models))
        def run(case: Any, model: str | None) -> None:
            if model is not None and isinstance(case.body, dict) and "model" in case.body:
                case.body["model"] = model  # most valid cases should reach the upstream
            resp = case.call(base_url=stack.base_url, headers=dict(AUTH), timeout=30)
            calls[op.label] = calls.get(op.label, 0) + 1
            where = f"{op.label} -> {resp.status_code}: {case.as_curl_command()}"
            positive = mode == GenerationMode.POSITIVE
            failures.extend(_check_answer(resp, where, positive, op.path))

        try:
            run()
        except Unsatisfiable:
            # An operation without inputs (the probes, /metrics) has no negative cases.
            assert mode == GenerationMode.NEGATIVE and op.label.startswith("GET "), op.label

    operations = [r.ok() for r in schema.get_all_operations()]  # type: ignore[union-attr]
    assert {op.label for op in operations} >= {
        "POST /v1/chat/completions",
        "POST /v1/responses",
        "POST /v1/messages",
        "POST /v1/messages/count_tokens",
        "POST /v1/embeddings",
        "GET /v1/models",
        "GET /v1/models/{model_id}",
    }
    for op in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzz(op, mode)
    assert not failures, "\n".join(failures[:10])
    assert calls["POST /v1/chat/completions"] >= MAX_EXAMPLES  # the fuzzer really ran
