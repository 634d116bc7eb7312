"""tollgate against OpenAI's own OpenAPI document, with real processes.

Every body the gateway returns to a client (answers, stream chunks, errors, the model
list) is validated against the provider's schemas, and every body tollgate sends
upstream against ``CreateChatCompletionRequest``. Bodies are read raw (httpx2, SSE parsed
here) so that no SDK parses anything away or fills anything in.

One stack serves the module. Its orchestrator's upstream is a small forwarding proxy in
this process that records what tollgate sends and passes everything (headers included:
the simulator checks its key) on to the simulator. Breakers are effectively off on the
main orchestrator, so fault tests cannot change what later tests see; a second
orchestrator with a hair-trigger breaker produces the 503, a third one whose router was
stopped the degraded route.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx2
import orjson
import pytest
from aiohttp import ClientSession, ClientTimeout, web

from tests.contract.openai_contract import assert_valid, require_openapi
from tools.stack import DEV_KEY, Proc, Stack, base_env, free_port, spawn, wait_grpc

pytestmark = pytest.mark.integration

RESPONSE = "CreateChatCompletionResponse"
CHUNK = "CreateChatCompletionStreamResponse"
REQUEST = "CreateChatCompletionRequest"
ERROR = "ErrorResponse"
BROKE_KEY = "sk-contract-broke-" + "0" * 25  # a tenant whose budget is 0: every request is a 429
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
ANSWER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "celsius": {"type": "number"}},
    "required": ["city", "celsius"],
    "additionalProperties": False,
}
# Request bodies without model/messages; each case runs with and without `stream`.
CASES: dict[str, dict[str, Any]] = {
    "plain": {"max_tokens": 40},
    "tools": {"tools": [WEATHER], "_prompt": "Call the get_weather tool for Oslo."},
    "tool_choice_required": {
        "tools": [WEATHER],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    },
    "json_object": {"response_format": {"type": "json_object"}},
    "json_schema": {
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "weather", "schema": ANSWER_SCHEMA, "strict": True},
        }
    },
    # The simulator answers one choice whatever n says: this checks shapes, not n.
    "n2": {"n": 2, "max_tokens": 20},
    "params": {
        "top_p": 0.9,
        "stop": ["\n\n"],
        "presence_penalty": 0.1,
        "user": "contract-test",
        "metadata": {"suite": "contract"},
    },
}


# --- the capturing upstream proxy --------------------------------------------------
_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host"}
)


@dataclass(frozen=True)
class Sent:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes


class CaptureProxy:
    """Forwards every request to ``target`` byte for byte (streams as they come) and keeps
    what was sent to chat completions. Runs its own event loop in a thread."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._sent: list[Sent] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: ClientSession | None = None

    def sent(self) -> list[Sent]:
        with self._lock:
            return list(self._sent)

    def clear(self) -> None:
        with self._lock:
            self._sent.clear()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        if request.method == "POST" and request.path.endswith("/chat/completions"):
            with self._lock:
                lower = {k.lower(): v for k, v in headers.items()}
                self._sent.append(Sent(request.method, request.path, lower, body))
        assert self._session is not None
        async with self._session.request(
            request.method, self.target + request.path_qs, headers=headers, data=body
        ) as up:
            resp = web.StreamResponse(
                status=up.status,
                headers={
                    k: v
                    for k, v in up.headers.items()
                    if k.lower() not in _HOP and k.lower() != "content-length"
                },
            )
            await resp.prepare(request)
            # A broken upstream stream raises here, and the client's connection drops too.
            async for piece in up.content.iter_any():
                await resp.write(piece)
            await resp.write_eof()
            return resp

    async def _start(self) -> None:
        self._session = ClientSession(
            auto_decompress=False, timeout=ClientTimeout(total=120), trust_env=False
        )
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def start(self) -> CaptureProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


# --- fixtures ----------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def openapi_present() -> None:
    # Before any process starts: without the document there is nothing to check.
    require_openapi("tollgate's responses and upstream requests against OpenAI's schemas")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, CaptureProxy]]:
    s = Stack(log_dir=tmp_path_factory.mktemp("contract-stack"))
    proxy = CaptureProxy(s.sim_url).start()
    s.orch_env = {
        "TOLLGATE_ORCHESTRATOR_UPSTREAM_BASE_URL": f"{proxy.url}/v1",
        "TOLLGATE_ORCHESTRATOR_API_KEYS": f"dev:{DEV_KEY},broke:{BROKE_KEY}",
        "TOLLGATE_ORCHESTRATOR_BUDGETS": orjson.dumps(
            [{"tenant": "broke", "period": "day", "limit_usd": 0}]
        ).decode(),
        # Fault tests must not open breakers that later tests would then meet.
        "TOLLGATE_ORCHESTRATOR_BREAKER_CONSECUTIVE_FAILURES": "100000",
        "TOLLGATE_ORCHESTRATOR_BREAKER_MIN_REQUESTS": "100000",
        "TOLLGATE_ORCHESTRATOR_RETRY_BASE_BACKOFF_SECONDS": "0",
        "TOLLGATE_ORCHESTRATOR_RETRY_MAX_BACKOFF_SECONDS": "0",
    }
    try:
        s.start()
        yield s, proxy
    finally:
        s.stop()
        proxy.stop()


@pytest.fixture(scope="module")
def http() -> Iterator[httpx2.Client]:
    with httpx2.Client(timeout=30, trust_env=False) as c:
        yield c


@pytest.fixture
def gw(stack: tuple[Stack, CaptureProxy], http: httpx2.Client) -> Gateway:
    s, proxy = stack
    g = Gateway(s, proxy, http, s.base_url)
    g.sim("/_sim/reset", {})
    proxy.clear()
    return g


@pytest.fixture(scope="module")
def breaker_base(stack: tuple[Stack, CaptureProxy]) -> str:
    """An orchestrator whose breaker opens on one failure: the way to a 503."""
    s, _ = stack
    port = free_port()
    s.start_orchestrator(
        name="orchestrator-breaker",
        http_port=port,
        grpc_port=free_port(),
        TOLLGATE_ORCHESTRATOR_BREAKER_CONSECUTIVE_FAILURES="1",
        TOLLGATE_ORCHESTRATOR_BREAKER_COOLDOWN_SECONDS="300",
        TOLLGATE_ORCHESTRATOR_RETRY_MAX_ATTEMPTS="1",
    )
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def degraded_base(stack: tuple[Stack, CaptureProxy]) -> Iterator[str]:
    """An orchestrator whose own router has been stopped: the degraded route. Its own
    router, so the module's other tests keep theirs."""
    s, _ = stack
    grpc_port = free_port()
    env = base_env(
        {
            "TOLLGATE_ROUTER_GRPC_PORT": str(grpc_port),
            "TOLLGATE_ROUTER_METRICS_PORT": str(free_port()),
            "TOLLGATE_ROUTER_GRPC_CALLERS_FILE": str(s.callers_file),
        }
    )
    router: Proc = spawn(
        "router-degraded", [sys.executable, "-m", "tollgate_router"], env, s.log_dir
    )
    try:
        wait_grpc(grpc_port, router)
        port = free_port()
        s.start_orchestrator(
            name="orchestrator-degraded",
            http_port=port,
            grpc_port=free_port(),
            TOLLGATE_ORCHESTRATOR_ROUTER_ADDR=f"127.0.0.1:{grpc_port}",
        )
    finally:
        router.stop()
    yield f"http://127.0.0.1:{port}"


# --- talking to the gateway ----------------------------------------------------------
@dataclass(frozen=True)
class Reply:
    status: int
    headers: httpx2.Headers
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Gateway:
    stack: Stack
    proxy: CaptureProxy
    http: httpx2.Client
    base: str

    def at(self, base: str) -> Gateway:
        return Gateway(self.stack, self.proxy, self.http, base)

    def sim(self, path: str, body: Any) -> None:
        # The simulator's key too, in case its control endpoints come to check it.
        auth = {"authorization": f"Bearer {self.stack.sim_key}"}
        r = self.http.post(self.stack.sim_url + path, content=orjson.dumps(body), headers=auth)
        assert r.status_code < 300, r.text

    def fault(self, **fault: Any) -> None:
        self.sim("/_sim/faults", fault)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        key: str | None = DEV_KEY,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        h = {"content-type": "application/json", **(headers or {})}
        if key is not None:
            h["authorization"] = f"Bearer {key}"
        content = raw if raw is not None else None if body is None else orjson.dumps(body)
        r = self.http.request(method, self.base + path, content=content, headers=h)
        return Reply(r.status_code, r.headers, r.content)

    def chat(self, body: Any = None, **kw: Any) -> Reply:
        return self.request("POST", "/v1/chat/completions", body, **kw)


def body_for(case: str, stream: bool, temperature: float = 0.7, **extra: Any) -> dict[str, Any]:
    spec = dict(CASES[case])
    prompt = spec.pop("_prompt", "Tell me about the weather in Oslo.")
    body: dict[str, Any] = {
        "model": "auto",
        # A nonce: cacheable requests of different tests never meet in the cache.
        "messages": [
            {"role": "system", "content": f"You are terse. ({uuid.uuid4().hex[:8]})"},
            {"role": "user", "content": prompt},
        ],
        "temperature": temperature,
        **spec,
        **extra,
    }
    if stream:
        body["stream"] = True
    return body


def sse_data(body: bytes) -> tuple[list[Any], bool]:
    """The JSON payloads of the events' `data:` fields, up to `[DONE]`; and whether it came."""
    out: list[Any] = []
    for block in body.decode().replace("\r\n", "\n").split("\n\n"):
        lines = [ln[5:].removeprefix(" ") for ln in block.split("\n") if ln.startswith("data:")]
        if not lines:
            continue  # a comment or keep-alive
        data = "\n".join(lines)  # SSE: one event's data lines join with newlines
        if data == "[DONE]":
            return out, True
        out.append(orjson.loads(data))
    return out, False


def check_completion(r: Reply) -> dict[str, Any]:
    assert r.status == 200, r.body[:500]
    assert r.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = r.json()
    assert_valid(RESPONSE, body)
    return body


def check_stream(r: Reply) -> list[dict[str, Any]]:
    assert r.status == 200, r.body[:500]
    assert r.headers["content-type"].startswith("text/event-stream")
    chunks, done = sse_data(r.body)
    assert done, f"the stream did not end with data: [DONE]: {r.body[-300:]!r}"
    assert chunks
    for i, chunk in enumerate(chunks):
        try:
            assert_valid(CHUNK, chunk)
        except AssertionError as exc:
            raise AssertionError(f"chunk {i} of {len(chunks)}: {exc}") from None
    return chunks


def check_answer(r: Reply, stream: bool) -> list[dict[str, Any]]:
    """The answer, validated; as a list of chunks (one completion when not streaming)."""
    return check_stream(r) if stream else [check_completion(r)]


def check_error(r: Reply, status: int) -> dict[str, Any]:
    assert r.status == status, (r.status, r.body[:500])
    assert r.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = r.json()
    assert_valid(ERROR, body)
    if status == 429 and "retry-after" in r.headers:
        # The document's TooManyRequests: Retry-After is an integer >= 1 when present.
        assert r.headers["retry-after"].isdigit() and int(r.headers["retry-after"]) >= 1
    return body


def check_sent(gw: Gateway, at_least: int = 1) -> list[dict[str, Any]]:
    """What tollgate sent upstream, each validated as a CreateChatCompletionRequest."""
    sent = gw.proxy.sent()
    assert len(sent) >= at_least, f"{len(sent)} upstream requests, expected >= {at_least}"
    bodies = []
    for i, s in enumerate(sent):
        assert s.headers.get("content-type", "").startswith("application/json")
        body = orjson.loads(s.body)
        try:
            assert_valid(REQUEST, body)
        except AssertionError as exc:
            raise AssertionError(f"upstream request {i} of {len(sent)}: {exc}") from None
        bodies.append(body)
    return bodies


def texts(chunks: list[dict[str, Any]]) -> list[Any]:
    """What a client reads out of an answer, to compare a hit with its miss."""
    if chunks and chunks[0].get("object") == "chat.completion":
        return [
            (c["message"].get("content"), c["message"].get("tool_calls"))
            for c in chunks[0]["choices"]
        ]
    content = "".join(
        c["delta"].get("content") or "" for ch in chunks for c in ch.get("choices", [])
    )
    return [content or None]


# --- answers -----------------------------------------------------------------------
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_answer_matches_the_contract(gw: Gateway, case: str, stream: bool) -> None:
    r = gw.chat(body_for(case, stream))
    chunks = check_answer(r, stream)
    assert r.headers["x-tollgate-cache"] == "bypass"
    sent = check_sent(gw)
    if case.startswith("tool"):
        finish = [c.get("finish_reason") for ch in chunks for c in ch["choices"]]
        assert "tool_calls" in finish, "the simulator was meant to call the tool"
    if stream:
        # No include_usage asked: no usage chunk, even though tollgate asks upstream for one.
        assert all(ch.get("usage") is None for ch in chunks)
        assert all(b["stream"] is True for b in sent)


@pytest.mark.parametrize("case", ["plain", "tools", "json_object"])
def test_stream_with_include_usage(gw: Gateway, case: str) -> None:
    r = gw.chat(body_for(case, True, stream_options={"include_usage": True}))
    chunks = check_stream(r)
    usage = [ch for ch in chunks if ch.get("usage") is not None]
    assert len(usage) == 1 and usage[0] is chunks[-1] and usage[0]["choices"] == []
    check_sent(gw)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("case", ["plain", "tools", "json_schema", "n2"])
def test_cache_miss_then_hit(gw: Gateway, case: str, stream: bool) -> None:
    body = body_for(case, stream, temperature=0)
    if stream:
        body["stream_options"] = {"include_usage": True}
    first = gw.chat(body)
    miss = check_answer(first, stream)
    assert first.headers["x-tollgate-cache"] == "miss"
    check_sent(gw)
    gw.proxy.clear()
    second = gw.chat(body)
    hit = check_answer(second, stream)
    assert second.headers["x-tollgate-cache"] == "hit"
    assert gw.proxy.sent() == []  # answered from the cache
    assert texts(hit) == texts(miss)


# The stream Assembler once left `refusal` out of the message it stored.
@pytest.mark.parametrize(
    ("first_stream", "second_stream"),
    [(True, False), (False, True)],
    ids=["stream-miss-json-hit", "json-miss-stream-hit"],
)
@pytest.mark.parametrize("case", ["plain", "tools"])
def test_cache_hit_across_stream_modes(
    gw: Gateway, case: str, first_stream: bool, second_stream: bool
) -> None:
    # `stream` is not part of the cache key: one mode's answer serves the other.
    body = body_for(case, first_stream, temperature=0)
    first = gw.chat(body)
    check_answer(first, first_stream)
    assert first.headers["x-tollgate-cache"] == "miss"
    body["stream"] = second_stream
    second = gw.chat(body)
    assert second.headers["x-tollgate-cache"] == "hit"
    check_answer(second, second_stream)


# The key never reached the upstream before 3.57's SDK was handled (issue #11).
def test_upstream_requests_carry_the_bearer_key(gw: Gateway) -> None:
    check_completion(gw.chat(body_for("plain", False)))
    for s in gw.proxy.sent():
        assert s.headers.get("authorization") == f"Bearer {gw.stack.sim_key}", sorted(s.headers)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("case", ["plain", "tools"])
def test_fallback_answer(gw: Gateway, case: str, stream: bool) -> None:
    body = body_for(case, stream)
    probe = gw.chat({**body, "stream": False})  # the same request picks the same chain
    primary = probe.headers["x-tollgate-model"]
    gw.fault(model=primary, status=500, count=50)
    gw.proxy.clear()
    r = gw.chat(body)
    check_answer(r, stream)
    assert r.headers["x-tollgate-model"] != primary
    sent = check_sent(gw, at_least=2)
    assert sent[0]["model"] == primary and sent[-1]["model"] == r.headers["x-tollgate-model"]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("case", ["plain", "tools", "json_object"])
def test_degraded_route_answer(gw: Gateway, degraded_base: str, case: str, stream: bool) -> None:
    extra: dict[str, Any] = {"stream_options": {"include_usage": True}} if stream else {}
    r = gw.at(degraded_base).chat(body_for(case, stream, **extra))
    check_answer(r, stream)
    assert r.headers["x-tollgate-route"] == "degraded"
    check_sent(gw)


def test_mid_stream_failure_events(gw: Gateway) -> None:
    gw.fault(model="*", mid_stream_error=True, after_chunks=2, count=50)
    r = gw.chat(body_for("plain", True, model="gpt-4o-mini"))
    assert r.status == 200  # committed before the upstream broke
    events, done = sse_data(r.body)
    assert not done and len(events) >= 2
    *chunks, last = events
    for chunk in chunks:
        assert_valid(CHUNK, chunk)
    # The document has no in-stream error event; OpenAI's own is an ErrorResponse body.
    assert_valid(ERROR, last)
    check_sent(gw)


# --- errors --------------------------------------------------------------------------
def _msgs() -> list[dict[str, str]]:
    return [{"role": "user", "content": "hi"}]


ERRORS: dict[str, tuple[int, dict[str, Any]]] = {
    "bad_temperature": (400, {"body": {"model": "auto", "messages": _msgs(), "temperature": 5}}),
    "bad_role": (400, {"body": {"model": "auto", "messages": [{"role": "x", "content": "hi"}]}}),
    "no_messages": (400, {"body": {"model": "auto"}}),
    "bad_json": (400, {"raw": b'{"model": "auto", '}),
    "not_an_object": (400, {"body": [1, 2]}),
    "bad_key": (401, {"body": {"model": "auto", "messages": _msgs()}, "key": "sk-wrong"}),
    "no_key": (401, {"body": {"model": "auto", "messages": _msgs()}, "key": None}),
    "unknown_model": (404, {"body": {"model": "gpt-17-ultra", "messages": _msgs()}}),
    "unknown_model_stream": (
        404,
        {"body": {"model": "gpt-17-ultra", "messages": _msgs(), "stream": True}},
    ),
    "too_large": (413, {"body": {"model": "auto", "messages": _msgs(), "user": "x" * 1_100_000}}),
    "over_budget": (429, {"body": {"model": "auto", "messages": _msgs()}, "key": BROKE_KEY}),
}


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_gateway_error_bodies(gw: Gateway, name: str) -> None:
    status, kw = ERRORS[name]
    check_error(gw.chat(**kw), status)
    assert gw.proxy.sent() == []  # refused before any upstream call


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("POST", "/v1/nothing-here", 404), ("GET", "/v1/chat/completions", 405)],
)
def test_routing_error_bodies(gw: Gateway, method: str, path: str, status: int) -> None:
    check_error(gw.request(method, path), status)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize(
    ("fault", "status"),
    [
        ({"status": 500}, 502),
        ({"status": 503}, 502),
        ({"status": 429}, 429),
        ({"status": 429, "retry_after": 1}, 429),
        ({"status": 400}, 400),  # passed through
        ({"status": 404, "code": "model_not_found"}, 502),  # the gateway's catalog, not the client
    ],
    ids=["500", "503", "429", "429-retry-after", "400", "404"],
)
def test_upstream_failure_error_bodies(
    gw: Gateway, fault: dict[str, Any], status: int, stream: bool
) -> None:
    gw.fault(model="*", count=50, **fault)
    check_error(gw.chat(body_for("plain", stream)), status)
    check_sent(gw)


def test_every_model_unavailable_is_503(gw: Gateway, breaker_base: str) -> None:
    gw.fault(model="*", status=500, count=50)
    b = gw.at(breaker_base)
    check_error(b.chat(body_for("plain", False)), 502)  # this opens every breaker it tried
    for stream in (False, True):
        err = check_error(b.chat(body_for("plain", stream)), 503)
        assert err["error"]["code"] == "upstream_unavailable"


# --- models ----------------------------------------------------------------------------
def test_models_list(gw: Gateway) -> None:
    r = gw.request("GET", "/v1/models")
    assert r.status == 200 and r.headers["content-type"].startswith("application/json")
    assert_valid("ListModelsResponse", r.json())
    assert {"auto", "gpt-4o-mini"} <= {m["id"] for m in r.json()["data"]}
    check_error(gw.request("GET", "/v1/models", key="sk-wrong"), 401)
