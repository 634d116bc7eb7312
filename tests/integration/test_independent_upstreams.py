"""What the orchestrator sends upstream, seen by two mock providers that are not tollgate's.

The router, the cache and the orchestrators run as real processes (``tools.stack``); the
orchestrators point at llmock (PyPI) or aimock (npm) instead of the built-in simulator, and
the official openai SDK is the client. Each test reads the mock's request journal and checks:

- every upstream request carries ``TOLLGATE_ORCHESTRATOR_UPSTREAM_API_KEY``. aimock runs
  with ``AIMOCK_API_KEYS`` set to that key only, so it refuses (401, not journaled) a
  request without it, or with the provider's own ``OPENAI_API_KEY`` that the orchestrator
  also has in its environment; its journal shows the ``authorization`` header (redacted);
- the path is ``/v1/chat/completions``, the body names the policy's upstream model, ``stream``
  is what the client asked, and the body is a valid ``CreateChatCompletionRequest`` of
  OpenAI's OpenAPI document;
- a retry resends the same body; a fallback sends the same body with the next model's name;
- an upstream 401/403/404 falls back along the chain and, when every model answers so,
  becomes a 502 (``upstream_auth_error`` / ``upstream_model_not_found``) whose message does
  not repeat the upstream's; only 400/413/422 pass through.

One stack (router, cache) and one process per mock serve the module; each orchestrator
is started once, on first use. Breakers of the shared orchestrators are set out of reach
so that tests that make a model fail do not open its circuit for the next test.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import openai
import pytest
from openai import AsyncOpenAI

from tests.contract.openai_contract import assert_valid
from tests.upstream_mocks import (
    CHAT_PATH,
    CREDENTIAL_HEADERS,
    AIMock,
    LLMock,
    start_aimock,
    start_llmock,
)
from tollgate_common.policy import load_policy
from tools.stack import DEV_KEY, Stack, base_env, free_port, spawn, wait_http

pytestmark = pytest.mark.integration

POLICY = load_policy()
MOCK_KEY = "sk-mock-upstream-6d1f2a9c"  # what the orchestrator must send the mock
PROVIDER_KEY = "sk-provider-openai-must-not-leak"  # OPENAI_API_KEY: only for api.openai.com
PINNED = "gpt-4.1-nano"  # in chat/small; a pinned model keeps the chain behind it
# An upstream error text that must never reach the client.
UPSTREAM_TEXT = "upstream-detail-9c41: key sk-upstream-echo was revoked by org-77"
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The current weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
                "additionalProperties": False,
            },
        },
    }
]
JSON_SCHEMA_FORMAT: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {
        "name": "city",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
SHARED = {
    # Out of reach: failures injected by one test must not open a circuit for the next.
    "TOLLGATE_ORCHESTRATOR_BREAKER_CONSECUTIVE_FAILURES": "1000",
    "TOLLGATE_ORCHESTRATOR_BREAKER_MIN_REQUESTS": "1000",
    "TOLLGATE_ORCHESTRATOR_RETRY_BASE_BACKOFF_SECONDS": "0.01",
    "TOLLGATE_ORCHESTRATOR_RETRY_MAX_BACKOFF_SECONDS": "0.05",
    "TOLLGATE_ORCHESTRATOR_RETRY_BUDGET_MIN": "100",
    "OPENAI_API_KEY": PROVIDER_KEY,
}


def upstream_name(model: str) -> str:
    return POLICY.models[model].upstream_model or model


# The mixed-vendor default policy's chains cross to Anthropic, which speaks Messages.
MESSAGES_PATH = "/v1/messages"
MESSAGES_MODELS = frozenset(
    upstream_name(n)
    for n, m in POLICY.models.items()
    if POLICY.providers[m.provider].type == "anthropic"
)


def _error(status: int, code: str, type_: str = "invalid_request_error") -> dict[str, Any]:
    return {"error": {"message": UPSTREAM_TEXT, "type": type_, "code": code}, "status": status}


def aimock_fixtures() -> list[dict[str, Any]]:
    """First match wins: the error markers first, the catch-all last."""
    primary = upstream_name(PINNED)
    fx: list[dict[str, Any]] = [
        {
            "match": {"userMessage": "tg-auth-fallback", "model": primary},
            "response": _error(401, "invalid_api_key"),
        },
        {"match": {"userMessage": "tg-auth-all"}, "response": _error(401, "invalid_api_key")},
        {"match": {"userMessage": "tg-forbidden-all"}, "response": _error(403, "forbidden")},
        {
            "match": {"userMessage": "tg-notfound-fallback", "model": primary},
            "response": _error(404, "model_not_found"),
        },
        {"match": {"userMessage": "tg-notfound-all"}, "response": _error(404, "model_not_found")},
    ]
    fx += [
        {"match": {"userMessage": f"tg-status-{s}"}, "response": _error(s, f"status_{s}")}
        for s in (400, 413, 422)
    ]
    fx += [
        {
            "match": {"toolName": "get_weather"},
            "response": {"toolCalls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]},
        },
        {"match": {"responseFormat": "json_object"}, "response": {"content": '{"city": "Paris"}'}},
        {"match": {"responseFormat": "json_schema"}, "response": {"content": '{"city": "Oslo"}'}},
        {"match": {}, "response": {"content": "plain answer from aimock, in a few chunks"}},
    ]
    return fx


# --- the journal, the same shape for both mocks ---------------------------------------------
@dataclass(frozen=True)
class Sent:
    """One request the mock received."""

    path: str
    status: int
    body: dict[str, Any]
    headers: dict[str, str] | None  # None: llmock records no headers
    raw: dict[str, Any]

    @property
    def model(self) -> str:
        return str(self.body.get("model"))

    @property
    def stream(self) -> bool:
        return self.body.get("stream") is True


def _from_aimock(e: dict[str, Any]) -> Sent:
    body = {k: v for k, v in (e.get("body") or {}).items() if k != "_endpointType"}  # its own
    return Sent(e["path"], int(e["response"]["status"]), body, dict(e["headers"]), e)


def _from_llmock(r: dict[str, Any]) -> Sent:
    return Sent(r["path"], int(r["status"]), dict(r.get("body") or {}), None, r)


M = TypeVar("M", AIMock, LLMock)


@dataclass
class Upstream(Generic[M]):
    """A mock and an orchestrator in front of it."""

    name: str
    mock: M
    gateway: str  # the orchestrator's base URL

    def sent(self) -> list[Sent]:
        """What reached the mock, each body checked against OpenAI's schema and, on aimock
        (which refuses any other key), for the credential header."""
        if isinstance(self.mock, AIMock):
            records = [_from_aimock(e) for e in self.mock.journal()]
        else:
            records = [_from_llmock(r) for r in self.mock.requests()]
        why = (
            "aimock refused every one (401) for want of the upstream key"
            if isinstance(self.mock, AIMock)
            else "the orchestrator sent nothing"
        )
        assert records, f"{self.name} recorded no request: {why}"
        for r in records:
            if r.model in MESSAGES_MODELS:  # a chain crossing to Claude goes as Messages
                assert r.path == MESSAGES_PATH, r
                continue
            assert r.path == CHAT_PATH, r
            assert_valid("CreateChatCompletionRequest", r.body)
            if r.headers is not None:
                assert_credential(r.headers)
        return records

    def client(self) -> AsyncOpenAI:
        return AsyncOpenAI(
            base_url=self.gateway + "/v1", api_key=DEV_KEY, max_retries=0, timeout=30
        )


def assert_credential(headers: dict[str, str]) -> None:
    """The key came as ``Authorization`` (aimock accepted it, so it was the mock key with
    the Bearer or Key scheme; the journal keeps only "[REDACTED]"), and in nothing else."""
    assert headers.get("authorization") == "[REDACTED]", headers
    others = [h for h in CREDENTIAL_HEADERS if h != "authorization" and h in headers]
    assert not others, f"extra credential headers upstream: {others}"


# --- processes ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("independent-upstreams")


@pytest.fixture(scope="module")
def stack(logs: Path) -> Iterator[Stack]:
    s = Stack(log_dir=logs / "stack")
    try:
        s.start_router()
        s.start_cache()
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def aimock_server(logs: Path) -> Iterator[AIMock]:
    fixtures = logs / "aimock-fixtures"
    fixtures.mkdir()
    (fixtures / "tollgate.json").write_text(json.dumps({"fixtures": aimock_fixtures()}, indent=1))
    mock = start_aimock(logs / "mocks", fixtures, api_keys=(MOCK_KEY,))
    yield mock
    mock.stop()


@pytest.fixture(scope="module")
def open_aimock_server(logs: Path) -> Iterator[AIMock]:
    """An aimock that takes any request or none, to see what arrives without a key."""
    fixtures = logs / "aimock-open-fixtures"
    fixtures.mkdir()
    (fixtures / "any.json").write_text(
        json.dumps({"fixtures": [{"match": {}, "response": {"content": "open answer"}}]})
    )
    mock = start_aimock(logs / "mocks", fixtures)
    yield mock
    mock.stop()


@pytest.fixture(scope="module")
def llmock_server(logs: Path) -> Iterator[LLMock]:
    mock = start_llmock(logs / "mocks")
    yield mock
    mock.stop()


def start_gateway(stack: Stack, name: str, mock_url: str, **extra: str) -> str:
    port = free_port()
    stack.start_orchestrator(
        name=name,
        http_port=port,
        grpc_port=free_port(),
        TOLLGATE_ORCHESTRATOR_UPSTREAM_BASE_URL=f"{mock_url}/v1",
        TOLLGATE_ORCHESTRATOR_UPSTREAM_API_KEY=MOCK_KEY,
        **{**SHARED, **extra},
    )
    return f"http://127.0.0.1:{port}"


def start_gateway_without_upstream_key(stack: Stack, name: str, mock_url: str) -> str:
    """``Stack.start_orchestrator`` always sets an upstream key; this one has none."""
    port = free_port()
    env = base_env(
        {
            **stack.env,
            **SHARED,
            "TOLLGATE_ORCHESTRATOR_HTTP_PORT": str(port),
            "TOLLGATE_ORCHESTRATOR_GRPC_PORT": str(free_port()),
            "TOLLGATE_ORCHESTRATOR_ROUTER_ADDR": f"127.0.0.1:{stack.ports.router}",
            "TOLLGATE_ORCHESTRATOR_CACHE_ADDR": f"127.0.0.1:{stack.ports.cache}",
            "TOLLGATE_ORCHESTRATOR_UPSTREAM_BASE_URL": f"{mock_url}/v1",
            "TOLLGATE_ORCHESTRATOR_GRPC_CALLERS_FILE": str(stack.callers_file),
            "TOLLGATE_ORCHESTRATOR_GRPC_TOKEN_FILE": str(stack.token_file("orchestrator")),
        }
    )
    env.pop("TOLLGATE_ORCHESTRATOR_UPSTREAM_API_KEY", None)
    p = stack.procs[name] = spawn(
        name, [sys.executable, "-m", "tollgate_orchestrator"], env, stack.log_dir
    )
    wait_http(f"http://127.0.0.1:{port}/readyz", p)
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def gw_aimock(stack: Stack, aimock_server: AIMock) -> str:
    return start_gateway(stack, "orch-aimock", aimock_server.url)


@pytest.fixture(scope="module")
def gw_llmock(stack: Stack, llmock_server: LLMock) -> str:
    return start_gateway(stack, "orch-llmock", llmock_server.url)


@pytest.fixture
def aimock(gw_aimock: str, aimock_server: AIMock) -> Upstream[AIMock]:
    aimock_server.reset_journal()
    return Upstream("aimock", aimock_server, gw_aimock)


@pytest.fixture
def llmock(gw_llmock: str, llmock_server: LLMock) -> Upstream[LLMock]:
    llmock_server.reset()
    return Upstream("llmock", llmock_server, gw_llmock)


@pytest.fixture(params=["aimock", "llmock"])
def upstream(request: pytest.FixtureRequest) -> Upstream[Any]:
    u: Upstream[Any] = request.getfixturevalue(request.param)
    return u


@pytest.fixture
async def client_for() -> AsyncIterator[Callable[[Upstream[Any]], AsyncOpenAI]]:
    made: list[AsyncOpenAI] = []

    def make(u: Upstream[Any]) -> AsyncOpenAI:
        made.append(u.client())
        return made[-1]

    yield make
    for c in made:
        await c.close()


# --- helpers --------------------------------------------------------------------------------
def msgs(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


async def chat(c: AsyncOpenAI, **kw: Any) -> tuple[dict[str, str], Any]:
    """(response headers, parsed completion); a gateway error fails with its body."""
    kw.setdefault("model", "auto")
    try:
        raw = await c.chat.completions.with_raw_response.create(**kw)
    except openai.APIStatusError as exc:
        raise AssertionError(f"gateway answered {exc.status_code}: {exc.response.text}") from None
    return dict(raw.headers), raw.parse()


async def chat_stream(c: AsyncOpenAI, **kw: Any) -> tuple[dict[str, str], list[Any]]:
    kw.setdefault("model", "auto")
    try:
        raw = await c.chat.completions.with_raw_response.create(stream=True, **kw)
    except openai.APIStatusError as exc:
        raise AssertionError(f"gateway answered {exc.status_code}: {exc.response.text}") from None
    return dict(raw.headers), [chunk async for chunk in raw.parse()]


async def chat_error(c: AsyncOpenAI, stream: bool = False, **kw: Any) -> openai.APIStatusError:
    kw.setdefault("model", PINNED)
    with pytest.raises(openai.APIStatusError) as info:
        if stream:
            s = await c.chat.completions.create(stream=True, **kw)
            async for _ in s:
                pass
        else:
            await c.chat.completions.create(**kw)
    return info.value


def routed_first(headers: dict[str, str]) -> str:
    """The policy's first choice for the intent and tier the gateway reported."""
    return POLICY.chain(headers["x-tollgate-intent"], headers["x-tollgate-tier"])[0]


def pinned_chain(headers: dict[str, str], pinned: str = PINNED) -> list[str]:
    """A pinned model first, then its route's chain (the router's order)."""
    base = POLICY.chain(headers["x-tollgate-intent"], headers["x-tollgate-tier"])
    return [pinned, *(m for m in base if m != pinned)]


def without_model(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != "model"}


def distinct_models(sent: list[Sent]) -> list[str]:
    out: list[str] = []
    for s in sent:
        if not out or out[-1] != s.model:
            out.append(s.model)
    return out


def assert_one_answered(sent: list[Sent], headers: dict[str, str], stream: bool) -> Sent:
    """Exactly one upstream request, for the routed model, as the client asked."""
    assert [s.status for s in sent] == [200], [(s.model, s.status) for s in sent]
    (s,) = sent
    model = headers["x-tollgate-model"]
    assert model == routed_first(headers)
    assert s.model == upstream_name(model)
    assert s.stream is stream
    if stream:
        assert s.body["stream_options"]["include_usage"] is True
    else:
        assert "stream_options" not in s.body
    return s


# --- what every kind of request looks like upstream ----------------------------------------
async def test_plain_request_carries_the_key_and_the_routed_model(
    upstream: Upstream[Any], client_for: Callable[[Upstream[Any]], AsyncOpenAI]
) -> None:
    headers, completion = await chat(
        client_for(upstream), messages=msgs("tg-plain: say hello"), max_tokens=50
    )
    assert completion.choices[0].message.content
    s = assert_one_answered(upstream.sent(), headers, stream=False)
    assert s.body["messages"] == msgs("tg-plain: say hello")
    assert s.body["max_tokens"] == 50


async def test_streamed_request_asks_for_usage_upstream(
    upstream: Upstream[Any], client_for: Callable[[Upstream[Any]], AsyncOpenAI]
) -> None:
    headers, chunks = await chat_stream(
        client_for(upstream),
        messages=msgs("tg-stream: tell me something"),
        stream_options={"include_usage": True},
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    usage = [c.usage for c in chunks if c.usage is not None]
    assert len(usage) == 1 and usage[0].completion_tokens > 0
    assert_one_answered(upstream.sent(), headers, stream=True)


async def test_tool_call_request_forwards_the_tools(
    upstream: Upstream[Any], client_for: Callable[[Upstream[Any]], AsyncOpenAI]
) -> None:
    headers, completion = await chat(
        client_for(upstream),
        messages=msgs("tg-tools: what is the weather in Paris?"),
        tools=TOOLS,
        tool_choice="auto",
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather"
    assert isinstance(json.loads(call.function.arguments)["city"], str)
    s = assert_one_answered(upstream.sent(), headers, stream=False)
    assert s.body["tools"] == TOOLS
    assert s.body["tool_choice"] == "auto"


@pytest.mark.parametrize(
    "response_format", [{"type": "json_object"}, JSON_SCHEMA_FORMAT], ids=["json_object", "schema"]
)
async def test_json_mode_request_forwards_the_response_format(
    upstream: Upstream[Any],
    client_for: Callable[[Upstream[Any]], AsyncOpenAI],
    response_format: dict[str, Any],
) -> None:
    headers, completion = await chat(
        client_for(upstream),
        messages=msgs("tg-json: answer in JSON with a city"),
        response_format=response_format,
    )
    content = completion.choices[0].message.content
    assert isinstance(json.loads(content), dict), content
    s = assert_one_answered(upstream.sent(), headers, stream=False)
    assert s.body["response_format"] == response_format


# --- retries and fallbacks (llmock's scripted faults) --------------------------------------
async def test_rate_limited_attempt_is_retried_with_the_same_body_after_retry_after(
    llmock: Upstream[LLMock], client_for: Callable[[Upstream[Any]], AsyncOpenAI]
) -> None:
    model = upstream_name(PINNED)
    llmock.mock.script(
        {"type": "fail", "status": 429, "retry_after": 0.3, "match": {"model": model}}
    )
    headers, completion = await chat(
        client_for(llmock), model=PINNED, messages=msgs("tg-429: hello")
    )
    assert completion.choices[0].message.content
    assert headers["x-tollgate-model"] == PINNED
    first, second = sent = llmock.sent()
    assert [(s.model, s.status) for s in sent] == [(model, 429), (model, 200)]
    assert second.body == first.body
    assert second.raw["fingerprint"] == first.raw["fingerprint"]
    # retry-after-ms: 300 (llmock also sends retry-after: 1, rounded up)
    assert second.raw["started_at"] - first.raw["ended_at"] >= 0.25


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_server_errors_retry_then_fall_back_to_the_next_model(
    llmock: Upstream[LLMock], client_for: Callable[[Upstream[Any]], AsyncOpenAI], stream: bool
) -> None:
    model = upstream_name(PINNED)
    llmock.mock.script({"type": "fail", "status": 503, "times": None, "match": {"model": model}})
    c = client_for(llmock)
    kw: dict[str, Any] = {"model": PINNED, "messages": msgs("tg-503: hello")}
    if stream:
        headers, chunks = await chat_stream(c, stream_options={"include_usage": True}, **kw)
        assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    else:
        headers, completion = await chat(c, **kw)
        assert completion.choices[0].message.content
    fallback = pinned_chain(headers)[1]
    assert headers["x-tollgate-model"] == fallback
    sent = llmock.sent()
    assert [(s.model, s.status) for s in sent] == [
        (model, 503),
        (model, 503),  # TOLLGATE_ORCHESTRATOR_RETRY_MAX_ATTEMPTS defaults to 2 per model
        (upstream_name(fallback), 200),
    ]
    assert sent[0].body == sent[1].body
    assert without_model(sent[2].body) == without_model(sent[0].body)
    assert all(s.stream is stream for s in sent)


async def test_stream_cut_before_its_first_chunk_is_retried(
    llmock: Upstream[LLMock], client_for: Callable[[Upstream[Any]], AsyncOpenAI]
) -> None:
    model = upstream_name(PINNED)
    llmock.mock.script(
        {"type": "stream_fault", "kind": "disconnect", "after_chunks": 0, "match": {"model": model}}
    )
    headers, chunks = await chat_stream(
        client_for(llmock), model=PINNED, messages=msgs("tg-cut: hello")
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert headers["x-tollgate-model"] == PINNED
    first, second = llmock.sent()
    assert first.raw["completed"] is False and second.raw["completed"] is True
    assert first.body == second.body and first.stream and second.stream


async def test_llmock_auth_error_falls_back_and_is_not_passed_through(
    llmock: Upstream[LLMock], client_for: Callable[[Upstream[Any]], AsyncOpenAI]
) -> None:
    model = upstream_name(PINNED)
    llmock.mock.script(
        {
            "type": "fail",
            "status": 401,
            "message": UPSTREAM_TEXT,
            "code": "invalid_api_key",
            "times": None,
            "match": {"model": model},
        }
    )
    headers, completion = await chat(
        client_for(llmock), model=PINNED, messages=msgs("tg-401: hello")
    )
    assert completion.choices[0].message.content
    fallback = pinned_chain(headers)[1]
    assert headers["x-tollgate-model"] == fallback
    sent = llmock.sent()
    assert sent[0].model == model and sent[0].status == 401
    assert sent[-1].model == upstream_name(fallback) and sent[-1].status == 200
    assert {s.model for s in sent[:-1]} == {model}


# --- upstream auth and model errors (aimock's error fixtures) ------------------------------
def assert_generic_502(err: openai.APIStatusError, code: str) -> None:
    assert err.status_code == 502, err.response.text
    body = err.response.json()["error"]
    assert body["code"] == code, body
    assert UPSTREAM_TEXT not in body["message"] and "9c41" not in err.response.text
    assert MOCK_KEY not in err.response.text and PROVIDER_KEY not in err.response.text


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_auth_error_on_the_first_model_falls_back(
    aimock: Upstream[AIMock], client_for: Callable[[Upstream[Any]], AsyncOpenAI], stream: bool
) -> None:
    c = client_for(aimock)
    kw: dict[str, Any] = {"model": PINNED, "messages": msgs("tg-auth-fallback: hello")}
    if stream:
        headers, chunks = await chat_stream(c, **kw)
        assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    else:
        headers, completion = await chat(c, **kw)
        assert completion.choices[0].message.content
    fallback = pinned_chain(headers)[1]
    assert headers["x-tollgate-model"] == fallback
    sent = aimock.sent()
    assert sent[0].model == upstream_name(PINNED) and sent[0].status == 401
    assert sent[-1].model == upstream_name(fallback) and sent[-1].status == 200
    assert distinct_models(sent) == [upstream_name(PINNED), upstream_name(fallback)]
    assert without_model(sent[-1].body) == without_model(sent[0].body)
    assert all(s.stream is stream for s in sent)


@pytest.mark.parametrize("marker", ["tg-auth-all", "tg-forbidden-all"], ids=["401", "403"])
async def test_every_model_refusing_the_key_is_a_generic_502(
    aimock: Upstream[AIMock], client_for: Callable[[Upstream[Any]], AsyncOpenAI], marker: str
) -> None:
    err = await chat_error(client_for(aimock), messages=msgs(f"{marker}: hello"))
    assert_generic_502(err, "upstream_auth_error")
    sent = aimock.sent()
    assert sent[0].model == upstream_name(PINNED)
    assert len(distinct_models(sent)) >= 2, "no fallback was tried"
    assert all(s.status in (401, 403) for s in sent)


async def test_streamed_request_refused_everywhere_is_a_generic_502(
    aimock: Upstream[AIMock], client_for: Callable[[Upstream[Any]], AsyncOpenAI]
) -> None:
    err = await chat_error(client_for(aimock), stream=True, messages=msgs("tg-auth-all: hi"))
    assert_generic_502(err, "upstream_auth_error")
    assert len(distinct_models(aimock.sent())) >= 2


async def test_model_not_found_on_the_first_model_falls_back(
    aimock: Upstream[AIMock], client_for: Callable[[Upstream[Any]], AsyncOpenAI]
) -> None:
    headers, completion = await chat(
        client_for(aimock), model=PINNED, messages=msgs("tg-notfound-fallback: hello")
    )
    assert completion.choices[0].message.content
    fallback = pinned_chain(headers)[1]
    assert headers["x-tollgate-model"] == fallback
    sent = aimock.sent()
    assert sent[0].status == 404 and sent[-1].status == 200
    assert distinct_models(sent) == [upstream_name(PINNED), upstream_name(fallback)]


async def test_every_model_not_found_is_a_generic_502(
    aimock: Upstream[AIMock], client_for: Callable[[Upstream[Any]], AsyncOpenAI]
) -> None:
    err = await chat_error(client_for(aimock), messages=msgs("tg-notfound-all: hello"))
    assert_generic_502(err, "upstream_model_not_found")
    assert len(distinct_models(aimock.sent())) >= 2


@pytest.mark.parametrize("status", [400, 413, 422])
async def test_client_errors_pass_through_without_fallback(
    aimock: Upstream[AIMock], client_for: Callable[[Upstream[Any]], AsyncOpenAI], status: int
) -> None:
    err = await chat_error(client_for(aimock), messages=msgs(f"tg-status-{status}: hello"))
    assert err.status_code == status, err.response.text
    assert err.response.json()["error"]["code"] == f"status_{status}"
    sent = aimock.sent()
    assert [(s.model, s.status) for s in sent] == [(upstream_name(PINNED), status)]


async def test_auth_errors_count_against_the_models_breaker(
    stack: Stack, aimock: Upstream[AIMock], client_for: Callable[[Upstream[Any]], AsyncOpenAI]
) -> None:
    """With a breaker that opens on one failure, the second request skips the model."""
    gw = start_gateway(
        stack,
        "orch-aimock-breaker",
        aimock.mock.url,
        TOLLGATE_ORCHESTRATOR_BREAKER_CONSECUTIVE_FAILURES="1",
        TOLLGATE_ORCHESTRATOR_BREAKER_COOLDOWN_SECONDS="120",
        TOLLGATE_ORCHESTRATOR_RETRY_MAX_ATTEMPTS="1",
    )
    u = Upstream("aimock", aimock.mock, gw)
    c = client_for(u)
    kw: dict[str, Any] = {"model": PINNED, "messages": msgs("tg-auth-fallback: hello")}
    headers, _ = await chat(c, **kw)
    fallback = pinned_chain(headers)[1]
    assert [(s.model, s.status) for s in u.sent()] == [
        (upstream_name(PINNED), 401),
        (upstream_name(fallback), 200),
    ]
    aimock.mock.reset_journal()
    headers, _ = await chat(c, **kw)
    assert headers["x-tollgate-model"] == fallback
    assert [(s.model, s.status) for s in u.sent()] == [(upstream_name(fallback), 200)]


async def test_without_an_upstream_key_no_credential_is_sent(
    stack: Stack, open_aimock_server: AIMock, client_for: Callable[[Upstream[Any]], AsyncOpenAI]
) -> None:
    """No TOLLGATE_ORCHESTRATOR_UPSTREAM_API_KEY: nothing, and never OPENAI_API_KEY, goes to
    the one base URL (aimock redacts the value, so its mere presence is the leak)."""
    gw = start_gateway_without_upstream_key(stack, "orch-no-key", open_aimock_server.url)
    open_aimock_server.reset_journal()
    headers, completion = await chat(
        client_for(Upstream("aimock-open", open_aimock_server, gw)), messages=msgs("hi")
    )
    assert completion.choices[0].message.content == "open answer"
    (entry,) = open_aimock_server.journal()
    s = _from_aimock(entry)
    assert s.path == CHAT_PATH and s.model == upstream_name(headers["x-tollgate-model"])
    assert_valid("CreateChatCompletionRequest", s.body)
    assert s.headers is not None
    sent_credentials = [h for h in CREDENTIAL_HEADERS if h in s.headers]
    assert not sent_credentials, f"credential headers upstream without a key: {sent_credentials}"
