"""The new client APIs (Responses, Anthropic Messages, embeddings) against two mock
upstreams that are not tollgate's: llmock (PyPI) and aimock (npm).

The router, the cache and the orchestrators run as real processes (``tools.stack``, no
simulator); every orchestrator reaches its mock through a ``Recorder``
(``tests/clients/recorder.py``), which keeps the exact bytes of each request and answer.
The mocks' own journals are the second witness: llmock records each body as it parsed
it; aimock records headers, but turns a Responses body into its chat-like form, so only
the recorder shows what a Responses request carried to it.

Which mock serves what:

- **native Responses** (policy default: the provider speaks chat, responses and
  embeddings): both mocks serve ``POST /v1/responses``, whole and streamed. The body
  upstream is the client's with only ``model`` replaced (reasoning item with
  ``encrypted_content``, hosted ``web_search``, ``client_metadata`` as Codex sends it);
  a whole answer comes back byte for byte, a stream event for event (plus
  ``x_tollgate_cost_usd`` on ``response.completed``).
- **Responses over chat** (a policy whose provider has ``apis: [chat, embeddings]``):
  both mocks see ``POST /v1/chat/completions``; openai-python gets a valid Response,
  text and function calls, whole and streamed; a ``function_call_output`` turn (sent
  whole, or by ``previous_response_id`` from the gateway's store) becomes a ``tool``
  message. llmock calls an offered tool (``tool_mode=auto``) and answers text once a
  tool result comes back; aimock does the same by fixtures (``toolName`` +
  ``hasToolResult``). A hosted tool is refused with a 400 naming it, before any
  upstream call.
- **Anthropic Messages over chat** (no provider speaks Messages here): anthropic-python
  ``messages.create`` and ``messages.stream``, text and ``tool_use`` (the SDK assembles
  ``input_json_delta``), and a ``tool_result`` turn.
- **embeddings**: both serve ``POST /v1/embeddings`` (llmock: 1536 floats, usage 0;
  aimock: a fixture vector).

Prompts carry the test's and the mock's name: the cache service is shared by every
orchestrator, and embeddings are cacheable by default.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import anthropic
import httpx2
import openai
import pytest
import yaml
from openai import OpenAI

from tests.clients.recorder import Exchange, Recorder
from tests.clients.recorder import sse_events as sse
from tests.contract.openai_contract import assert_valid
from tests.upstream_mocks import AIMock, LLMock, start_aimock, start_llmock
from tollgate_common.policy import DEFAULT_POLICY_FILE, load_policy
from tools.stack import DEV_KEY, Stack, free_port

pytestmark = pytest.mark.integration

POLICY = load_policy()
PINNED = "gpt-4.1-nano"  # a catalog model; pinned, it is the first one tried
EMBEDDING = "text-embedding-3-small"
CHAT = "/v1/chat/completions"
RESPONSES = "/v1/responses"
EMBEDDINGS = "/v1/embeddings"
COST_FIELD = "x_tollgate_cost_usd"
# Opaque to the gateway; the characters a JSON re-encoder could touch are in it.
ENCRYPTED = "gAAAAABo+tg/Zm9v+YmFy==\u00e9/\\u2028-sealed-by-another-upstream"
TOOL_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
FUNCTION_TOOL: Any = {  # Any: the SDKs type their params as TypedDicts
    "type": "function",
    "name": "get_weather",
    "description": "The current weather in a city.",
    "parameters": TOOL_PARAMETERS,
    "strict": True,
}
WEB_SEARCH: dict[str, Any] = {"type": "web_search", "external_web_access": False}  # Codex's
# As Codex sends it: function tools grouped under a name (openai-python has no type for it).
NAMESPACE_TOOL: dict[str, Any] = {
    "type": "namespace",
    "name": "multi_agent_v1",
    "description": "Tools for spawning and managing sub-agents.",
    "tools": [
        {
            "type": "function",
            "name": "close_agent",
            "description": "Close an agent.",
            "strict": False,
            "parameters": {
                "type": "object",
                "properties": {"target": {"type": "string"}},
                "required": ["target"],
                "additionalProperties": False,
            },
        }
    ],
}
TOOL_PROMPT = "Call get_weather to find out how warm it is in Paris right now."
AIMOCK_TEXT = "plain answer from aimock, in a few chunks"
AIMOCK_TOOL_ANSWER = "It is 18 degrees in Paris."
AIMOCK_VECTOR = [0.5, 0.25, 0.125, 0.0625]
SHARED = {
    "TOLLGATE_ORCHESTRATOR_BREAKER_CONSECUTIVE_FAILURES": "1000",
    "TOLLGATE_ORCHESTRATOR_BREAKER_MIN_REQUESTS": "1000",
    "TOLLGATE_ORCHESTRATOR_RETRY_MAX_ATTEMPTS": "1",
}


def upstream_name(model: str) -> str:
    return POLICY.models[model].upstream_model or model


def aimock_fixtures() -> list[dict[str, Any]]:
    """First match wins. Usage is set: aimock's own is 0, and 0 tokens cost nothing."""
    return [
        {
            "match": {"toolName": "get_weather", "hasToolResult": False},
            "response": {
                "toolCalls": [
                    {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}
                ],
                "usage": {"prompt_tokens": 31, "completion_tokens": 9},
            },
        },
        {
            "match": {"toolName": "get_weather", "hasToolResult": True},
            "response": {
                "content": AIMOCK_TOOL_ANSWER,
                "usage": {"prompt_tokens": 40, "completion_tokens": 8},
            },
        },
        {"match": {"endpoint": "embedding"}, "response": {"embedding": AIMOCK_VECTOR}},
        {
            "match": {"userMessage": "tg-status-400"},
            "response": {
                "error": {"message": "no", "type": "invalid_request_error", "code": "tg_refused"},
                "status": 400,
            },
        },
        {
            "match": {},
            "response": {
                "content": AIMOCK_TEXT,
                "usage": {"prompt_tokens": 12, "completion_tokens": 9},
            },
        },
    ]


# --- processes ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("responses-independent")


@pytest.fixture(scope="module")
def stack(logs: Path) -> Iterator[Stack]:
    s = Stack(log_dir=logs / "stack", simulator=False)
    try:
        s.start_router()
        s.start_cache()
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def llmock_server(logs: Path) -> Iterator[LLMock]:
    mock = start_llmock(logs / "mocks", "--tool-mode", "auto")
    yield mock
    mock.stop()


@pytest.fixture(scope="module")
def aimock_server(logs: Path) -> Iterator[AIMock]:
    fixtures = logs / "aimock-fixtures"
    fixtures.mkdir()
    (fixtures / "tollgate.json").write_text(json.dumps({"fixtures": aimock_fixtures()}))
    mock = start_aimock(logs / "mocks", fixtures)
    yield mock
    mock.stop()


@pytest.fixture(scope="module")
def chat_only_policy(logs: Path) -> Path:
    """The default policy, its one provider speaking only chat and embeddings."""
    raw = yaml.safe_load(DEFAULT_POLICY_FILE.read_text())
    for provider in raw["providers"].values():
        provider["apis"] = ["chat", "embeddings"]
    path = logs / "chat-only-policy.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@dataclass
class Upstream:
    """A mock, the recorder in front of it, and an orchestrator in front of that."""

    name: str  # "llmock" | "aimock"
    mock: LLMock | AIMock
    recorder: Recorder
    gateway: str

    def reset(self) -> None:
        self.recorder.clear()
        if isinstance(self.mock, AIMock):
            self.mock.reset_journal()
        else:
            self.mock.reset()

    def sent(self) -> list[Exchange]:
        return self.recorder.exchanges()

    def journal(self) -> list[tuple[str, dict[str, Any]]]:
        """(path, body) of each request, as the mock itself recorded it."""
        if isinstance(self.mock, AIMock):
            return [
                (
                    e["path"],
                    {k: v for k, v in (e.get("body") or {}).items() if k != "_endpointType"},
                )
                for e in self.mock.journal()
            ]
        return [(r["path"], dict(r.get("body") or {})) for r in self.mock.requests()]

    def openai(self, transport: httpx2.BaseTransport | None = None) -> OpenAI:
        http = httpx2.Client(transport=transport, timeout=30) if transport else None
        return OpenAI(
            base_url=self.gateway + "/v1",
            api_key=DEV_KEY,
            max_retries=0,
            timeout=30,
            http_client=http,
        )

    def anthropic(self) -> anthropic.Anthropic:
        return anthropic.Anthropic(
            base_url=self.gateway, api_key=DEV_KEY, max_retries=0, timeout=30
        )


def _start(stack: Stack, name: str, mock: LLMock | AIMock, policy: Path | None) -> Upstream:
    recorder = Recorder(mock.url).start()
    port = free_port()
    extra = {"TOLLGATE_ORCHESTRATOR_POLICY_FILE": str(policy)} if policy else {}
    stack.start_orchestrator(
        name=name,
        http_port=port,
        grpc_port=free_port(),
        TOLLGATE_ORCHESTRATOR_UPSTREAM_BASE_URL=f"{recorder.url}/v1",
        TOLLGATE_ORCHESTRATOR_UPSTREAM_API_KEY="sk-mock-upstream",
        **SHARED,
        **extra,
    )
    return Upstream(mock.name, mock, recorder, f"http://127.0.0.1:{port}")


@pytest.fixture(scope="module")
def gateways(
    stack: Stack, llmock_server: LLMock, aimock_server: AIMock, chat_only_policy: Path
) -> Iterator[dict[str, Upstream]]:
    made = {
        "llmock": _start(stack, "orch-llmock-native", llmock_server, None),
        "aimock": _start(stack, "orch-aimock-native", aimock_server, None),
        "llmock-chat": _start(stack, "orch-llmock-chat", llmock_server, chat_only_policy),
        "aimock-chat": _start(stack, "orch-aimock-chat", aimock_server, chat_only_policy),
    }
    yield made
    for u in made.values():
        u.recorder.stop()


@pytest.fixture(params=["llmock", "aimock"])
def native(request: pytest.FixtureRequest, gateways: dict[str, Upstream]) -> Upstream:
    u = gateways[request.param]
    u.reset()
    return u


@pytest.fixture(params=["llmock", "aimock"])
def chat_only(request: pytest.FixtureRequest, gateways: dict[str, Upstream]) -> Upstream:
    u = gateways[f"{request.param}-chat"]
    u.reset()
    return u


# --- the wire -------------------------------------------------------------------------------
class _Tee(httpx2.SyncByteStream):
    def __init__(self, inner: httpx2.SyncByteStream, sink: bytearray) -> None:
        self._inner, self._sink = inner, sink

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._inner:
            self._sink += chunk
            yield chunk

    def close(self) -> None:
        self._inner.close()


class TeeTransport(httpx2.BaseTransport):
    """The client's transport, keeping the exact bytes of every answer it reads."""

    def __init__(self) -> None:
        self._inner = httpx2.HTTPTransport()
        self.answers: list[bytearray] = []

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        resp = self._inner.handle_request(request)
        sink = bytearray()
        self.answers.append(sink)
        assert isinstance(resp.stream, httpx2.SyncByteStream)
        return httpx2.Response(
            resp.status_code,
            headers=resp.headers,
            stream=_Tee(resp.stream, sink),
            extensions=resp.extensions,
            request=request,
        )


def only(sent: list[Exchange], path: str) -> Exchange:
    """The one request upstream, on ``path``, answered 200."""
    assert [(e.path, e.status) for e in sent] == [(path, 200)], [
        (e.path, e.status, bytes(e.answer[:300])) for e in sent
    ]
    return sent[0]


def without(d: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in keys}


def chat_text(ex: Exchange) -> str:
    """The text of a chat answer the recorder relayed, whole or streamed."""
    if ex.json().get("stream"):
        chunks = [d for _, d in sse(bytes(ex.answer)) if isinstance(d, dict)]
        return "".join(
            (c["choices"][0]["delta"].get("content") or "") for c in chunks if c.get("choices")
        )
    return str(json.loads(ex.answer)["choices"][0]["message"]["content"])


def chat_usage(ex: Exchange) -> dict[str, Any]:
    if ex.json().get("stream"):
        chunks = [d for _, d in sse(bytes(ex.answer)) if isinstance(d, dict)]
        (usage,) = [c["usage"] for c in chunks if c.get("usage")]
        return dict(usage)
    return dict(json.loads(ex.answer)["usage"])


def chat_tool_calls(ex: Exchange) -> list[dict[str, Any]]:
    """(id, name, arguments) of the tool calls in a chat answer, streamed ones assembled."""
    if not ex.json().get("stream"):
        return [
            {"id": c["id"], "name": c["function"]["name"], "arguments": c["function"]["arguments"]}
            for c in json.loads(ex.answer)["choices"][0]["message"].get("tool_calls") or []
        ]
    calls: dict[int, dict[str, Any]] = {}
    for _, c in sse(bytes(ex.answer)):
        if not isinstance(c, dict) or not c.get("choices"):
            continue
        for d in c["choices"][0]["delta"].get("tool_calls") or []:
            at = calls.setdefault(d["index"], {"id": None, "name": "", "arguments": ""})
            at["id"] = d.get("id") or at["id"]
            fn = d.get("function") or {}
            at["name"] += fn.get("name") or ""
            at["arguments"] += fn.get("arguments") or ""
    return [calls[i] for i in sorted(calls)]


def gateway_error(call: Any) -> openai.APIStatusError:
    with pytest.raises(openai.APIStatusError) as info:
        call()
    return info.value


# --- (a) Responses, native: pass-through -----------------------------------------------------
def passthrough_body(tag: str) -> dict[str, Any]:
    """What a stateless client (Codex) sends: store off, encrypted reasoning replayed,
    hosted and namespace tools, and a field OpenAI accepts that is not in its OpenAPI
    document."""
    return {
        "model": PINNED,
        "input": [
            {"role": "user", "content": f"{tag}: earlier question"},
            {"type": "reasoning", "id": "rs_tg_1", "summary": [], "encrypted_content": ENCRYPTED},
            {
                "type": "message",
                "role": "assistant",
                "id": "msg_tg_1",
                "status": "completed",
                "content": [{"type": "output_text", "text": "earlier answer", "annotations": []}],
            },
            {"role": "user", "content": [{"type": "input_text", "text": f"{tag}: say hello"}]},
        ],
        "store": False,
        "include": ["reasoning.encrypted_content"],
        "tools": [
            {"type": "web_search", "external_web_access": False},
            FUNCTION_TOOL,
            NAMESPACE_TOOL,
        ],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "prompt_cache_key": "session-7f3e",
        "client_metadata": {"session_id": "7f3e", "turn_id": "1"},
    }


def sdk_kwargs(body: dict[str, Any]) -> dict[str, Any]:
    """openai-python's keyword arguments for ``body``: what it has no parameter for goes
    in ``extra_body``, which it merges into the JSON as it is."""
    return {
        **without(body, "client_metadata"),
        "extra_body": {"client_metadata": body["client_metadata"]},
    }


def assert_forwarded(u: Upstream, body: dict[str, Any], stream: bool) -> Exchange:
    """The one request upstream is ``body`` with the upstream's model name (and
    ``stream: true`` for a stream). ``client_metadata`` has its own test."""
    ex = only(u.sent(), RESPONSES)
    got = ex.json()
    assert got["model"] == upstream_name(PINNED)
    want = {**without(body, "model", "client_metadata"), **({"stream": True} if stream else {})}
    assert without(got, "model", "client_metadata") == want
    # The opaque blob travels as the same JSON string (escapes decoded, nothing changed).
    assert got["input"][1]["encrypted_content"] == ENCRYPTED
    assert got["tools"][0] == WEB_SEARCH
    if isinstance(u.mock, LLMock):  # the mock's own record agrees
        ((path, seen),) = u.journal()
        assert path == RESPONSES and without(seen, "model", "client_metadata") == want
    return ex


def assert_same_output(resp: Any, upstream: dict[str, Any]) -> None:
    """What openai-python parsed is what the upstream answered: the same items, the
    same text and calls (the mocks call the offered function; a text answer is text)."""
    assert [o.type for o in resp.output] == [i["type"] for i in upstream["output"]]
    for got, want in zip(resp.output, upstream["output"], strict=True):
        if want["type"] == "function_call":
            assert (got.name, got.call_id, got.arguments) == (
                want["name"],
                want["call_id"],
                want["arguments"],
            )
        elif want["type"] == "message":
            assert [p.text for p in got.content] == [p.get("text") for p in want["content"]]
    assert resp.usage is not None
    assert resp.usage.input_tokens == upstream["usage"]["input_tokens"]
    assert resp.usage.output_tokens == upstream["usage"]["output_tokens"]


def test_fields_beyond_openais_document_are_kept(native: Upstream) -> None:
    """Codex sends ``client_metadata`` on every turn; OpenAI takes it, though neither its
    OpenAPI document nor openai-python names it. A pass-through must not drop it."""
    body = passthrough_body(f"tg-pass-extra-{native.name}")
    with native.openai() as c:
        c.responses.create(**sdk_kwargs(body))
    got = only(native.sent(), RESPONSES).json()
    assert got.get("client_metadata") == body["client_metadata"], (
        f"the gateway dropped client_metadata: upstream keys {sorted(got)}"
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [("access_programs", {"cyber": "standard"}), ("image", {"context_compression": "auto"})],
)
def test_openai_python_create_params_are_forwarded(
    native: Upstream, field: str, value: Any
) -> None:
    """Create parameters of openai-python 3.57.0 (``ResponseCreateParamsBase``) that
    are newer than the gateway's list; Codex sends ``access_programs`` with
    ``--cyber-access-program``."""
    kw: Any = {field: value}
    with native.openai() as c:
        c.responses.create(model=PINNED, input=f"tg-param-{field}-{native.name}: hi", **kw)
    got = only(native.sent(), RESPONSES).json()
    assert got.get(field) == value, f"the gateway dropped {field}: upstream keys {sorted(got)}"


def test_responses_create_passes_through(native: Upstream) -> None:
    body = passthrough_body(f"tg-pass-create-{native.name}")
    tee = TeeTransport()
    with native.openai(tee) as c:
        resp = c.responses.create(**sdk_kwargs(body))
    ex = assert_forwarded(native, body, stream=False)
    # The answer is the upstream's, byte for byte, and openai-python reads it.
    (client_bytes,) = tee.answers
    assert bytes(client_bytes) == bytes(ex.answer)
    upstream = json.loads(ex.answer)
    assert resp.id == upstream["id"] and resp.status == "completed"
    assert_same_output(resp, upstream)


def test_responses_stream_passes_through(native: Upstream) -> None:
    body = passthrough_body(f"tg-pass-stream-{native.name}")
    tee = TeeTransport()
    with native.openai(tee) as c, c.responses.stream(**sdk_kwargs(body)) as s:
        types = [ev.type for ev in s]
        final = s.get_final_response()
    ex = assert_forwarded(native, body, stream=True)
    (client_bytes,) = tee.answers
    upstream, client = sse(bytes(ex.answer)), sse(bytes(client_bytes))
    assert [n for n, _ in client] == [n for n, _ in upstream]
    assert types == [d["type"] for _, d in upstream]
    for (name, want), (_, got) in zip(upstream, client, strict=True):
        if name in ("response.completed", "response.incomplete"):
            assert isinstance(got.pop(COST_FIELD), float | int)  # the gateway's one addition
        assert got == want, name
    assert types[-1] == "response.completed"
    assert final.status == "completed"
    assert_same_output(final, upstream[-1][1]["response"])


# --- (b) Responses over chat ----------------------------------------------------------------
def assert_chat_upstream(u: Upstream, stream: bool) -> Exchange:
    ex = only(u.sent(), CHAT)
    body = ex.json()
    assert_valid("CreateChatCompletionRequest", body)
    assert body["model"] == upstream_name(PINNED)
    assert body.get("stream", False) is stream
    if stream:
        assert body["stream_options"]["include_usage"] is True
    ((path, _),) = u.journal()  # the mock saw the one request, on the chat path
    assert path == CHAT
    return ex


def test_responses_create_over_chat(chat_only: Upstream) -> None:
    tag = f"tg-xlate-create-{chat_only.name}"
    with chat_only.openai() as c:
        raw = c.responses.with_raw_response.create(
            model=PINNED, instructions="Be brief.", input=f"{tag}: say hello", max_output_tokens=64
        )
    resp = raw.parse()
    assert_valid("Response", raw.http_response.json())
    ex = assert_chat_upstream(chat_only, stream=False)
    body = ex.json()
    assert body["messages"][0]["role"] in ("system", "developer")
    assert body["messages"][0]["content"] == "Be brief."
    assert body["messages"][-1]["role"] == "user"
    assert f"{tag}: say hello" in json.dumps(body["messages"][-1]["content"])
    assert body.get("max_tokens", body.get("max_completion_tokens")) == 64
    assert resp.status == "completed" and resp.object == "response"
    assert resp.id.startswith("resp_")
    assert resp.output_text == chat_text(ex)
    if chat_only.name == "aimock":
        assert resp.output_text == AIMOCK_TEXT
    usage = chat_usage(ex)
    assert resp.usage is not None
    assert resp.usage.input_tokens == usage["prompt_tokens"]
    assert resp.usage.output_tokens == usage["completion_tokens"]


def test_responses_stream_over_chat(chat_only: Upstream) -> None:
    tag = f"tg-xlate-stream-{chat_only.name}"
    tee = TeeTransport()
    with chat_only.openai(tee) as c, c.responses.stream(model=PINNED, input=f"{tag}: hi") as s:
        deltas = [ev.delta for ev in s if ev.type == "response.output_text.delta"]
        final = s.get_final_response()
    ex = assert_chat_upstream(chat_only, stream=True)
    (client_bytes,) = tee.answers
    events = sse(bytes(client_bytes))
    for name, data in events:
        assert name == data["type"], (name, data)
        assert_valid("ResponseStreamEvent", without(data, COST_FIELD))
    kinds = [d["type"] for _, d in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed", kinds
    seqs = [d["sequence_number"] for _, d in events]
    assert seqs == sorted(set(seqs)), seqs
    assert "".join(deltas) == final.output_text == chat_text(ex)
    assert final.usage is not None
    assert final.usage.output_tokens == chat_usage(ex)["completion_tokens"]
    assert events[-1][1][COST_FIELD] > 0


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_function_call_round_trip_over_chat(chat_only: Upstream, stream: bool) -> None:
    tag = f"tg-xlate-tools-{chat_only.name}-{stream}"
    ask: Any = {"role": "user", "content": f"{TOOL_PROMPT} ({tag})"}
    with chat_only.openai() as c:
        first: Any
        if stream:
            with c.responses.stream(
                model=PINNED, input=[ask], tools=[FUNCTION_TOOL], store=False
            ) as s:
                arg_deltas = [
                    ev.delta for ev in s if ev.type == "response.function_call_arguments.delta"
                ]
                first = s.get_final_response()
        else:
            first = c.responses.create(
                model=PINNED, input=[ask], tools=[FUNCTION_TOOL], store=False
            )
        up1 = assert_chat_upstream(chat_only, stream=stream)
        assert up1.json()["tools"] == [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": FUNCTION_TOOL["description"],
                    "parameters": TOOL_PARAMETERS,
                    "strict": True,
                },
            }
        ]
        (want,) = chat_tool_calls(up1)
        calls = [o for o in first.output if o.type == "function_call"]
        assert len(calls) == 1, first.output
        call = calls[0]
        assert call.name == "get_weather" and call.call_id == want["id"]
        assert json.loads(call.arguments) == json.loads(want["arguments"])
        if stream:
            assert "".join(arg_deltas) == call.arguments
        chat_only.reset()
        second = c.responses.create(
            model=PINNED,
            store=False,
            tools=[FUNCTION_TOOL],
            input=[
                ask,
                cast(Any, call.model_dump(exclude_none=True)),
                {"type": "function_call_output", "call_id": call.call_id, "output": '{"c": 18}'},
            ],
        )
    up2 = assert_chat_upstream(chat_only, stream=False)
    msgs = up2.json()["messages"]
    assert msgs[-1] == {"role": "tool", "tool_call_id": call.call_id, "content": '{"c": 18}'}
    assistant = msgs[-2]
    assert assistant["role"] == "assistant"
    (tc,) = assistant["tool_calls"]
    assert tc["id"] == call.call_id and tc["function"]["name"] == "get_weather"
    assert json.loads(tc["function"]["arguments"]) == json.loads(call.arguments)
    assert second.status == "completed" and second.output_text == chat_text(up2)
    if chat_only.name == "aimock":
        assert second.output_text == AIMOCK_TOOL_ANSWER


def test_previous_response_id_over_chat(chat_only: Upstream) -> None:
    """Stored by the gateway (store on by default): the follow-up sends only the tool
    output; the upstream, which keeps nothing, gets the whole conversation."""
    tag = f"tg-xlate-previous-{chat_only.name}"
    ask = f"{TOOL_PROMPT} ({tag})"
    with chat_only.openai() as c:
        first = c.responses.create(model=PINNED, input=ask, tools=[FUNCTION_TOOL])
        (call,) = [o for o in first.output if o.type == "function_call"]
        chat_only.reset()
        second = c.responses.create(
            model=PINNED,
            previous_response_id=first.id,
            tools=[FUNCTION_TOOL],
            input=[{"type": "function_call_output", "call_id": call.call_id, "output": "18C"}],
        )
    msgs = assert_chat_upstream(chat_only, stream=False).json()["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "tool"], msgs
    assert ask in json.dumps(msgs[0]["content"])
    assert msgs[1]["tool_calls"][0]["id"] == call.call_id
    assert msgs[2] == {"role": "tool", "tool_call_id": call.call_id, "content": "18C"}
    assert second.status == "completed" and second.output_text == chat_text(
        only(chat_only.sent(), CHAT)
    )


@pytest.mark.parametrize("gateway", ["llmock", "aimock", "llmock-chat", "aimock-chat"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_a_continuation_names_the_response_it_continued(
    gateways: dict[str, Upstream], gateway: str, stream: bool
) -> None:
    """OpenAI echoes ``previous_response_id`` in the Response (whole, streamed, and
    retrieved); the gateway resolved it, so the upstream's answer cannot carry it."""
    u = gateways[gateway]
    tag = f"tg-echo-{gateway}-{stream}"
    with u.openai() as c:
        first = c.responses.create(model=PINNED, input=f"{tag}: name a river")
        kw: dict[str, Any] = {
            "model": PINNED,
            "input": "and another",
            "previous_response_id": first.id,
        }
        if stream:
            with c.responses.stream(**kw) as s:
                for _ in s:
                    pass
                second = s.get_final_response()
        else:
            second = c.responses.create(**kw)
        kept = c.responses.retrieve(second.id)
    assert second.previous_response_id == first.id, second.previous_response_id
    assert kept.previous_response_id == first.id, kept.previous_response_id


def test_stored_responses_are_served_by_the_gateway(chat_only: Upstream) -> None:
    """GET and DELETE never reach an upstream that keeps nothing; after DELETE the id
    is gone for GET and for ``previous_response_id`` (a 400 before any upstream call)."""
    tag = f"tg-store-{chat_only.name}"
    with chat_only.openai() as c:
        made = c.responses.create(model=PINNED, input=f"{tag}: say hello")
        chat_only.reset()
        got = c.responses.retrieve(made.id)
        assert got.id == made.id and got.output_text == made.output_text
        c.responses.delete(made.id)
        gone = gateway_error(lambda: c.responses.retrieve(made.id))
        refused = gateway_error(
            lambda: c.responses.create(model=PINNED, input="more", previous_response_id=made.id)
        )
    assert gone.status_code == 404, gone.response.text
    assert refused.status_code == 400, refused.response.text
    assert refused.response.json()["error"]["param"] == "previous_response_id"
    assert chat_only.sent() == [] and chat_only.journal() == []


@pytest.mark.parametrize(
    "tool",
    [{"type": "web_search"}, {"type": "file_search", "vector_store_ids": ["vs_1"]}],
    ids=["web_search", "file_search"],
)
def test_hosted_tool_over_chat_is_refused_before_any_upstream_call(
    chat_only: Upstream, tool: Any
) -> None:
    with chat_only.openai() as c:
        err = gateway_error(
            lambda: c.responses.create(
                model=PINNED, input="tg-hosted: look it up", tools=[FUNCTION_TOOL, tool]
            )
        )
    assert err.status_code == 400, err.response.text
    e = err.response.json()["error"]
    assert tool["type"] in e["message"], e
    assert e.get("param") in ("tools[1]", "tools[1].type", "tools"), e
    assert chat_only.sent() == [] and chat_only.journal() == []


# --- (c) Anthropic Messages over chat -------------------------------------------------------
ANTHROPIC_TOOL: Any = {
    "name": "get_weather",
    "description": "The current weather in a city.",
    "input_schema": TOOL_PARAMETERS,
}


def test_messages_create_with_a_tool_over_chat(chat_only: Upstream) -> None:
    tag = f"tg-msg-create-{chat_only.name}"
    ask: Any = {"role": "user", "content": f"{TOOL_PROMPT} ({tag})"}
    c = chat_only.anthropic()
    msg = c.messages.create(model=PINNED, max_tokens=200, messages=[ask], tools=[ANTHROPIC_TOOL])
    up = assert_chat_upstream(chat_only, stream=False)
    body = up.json()
    (tool,) = body["tools"]
    assert tool["type"] == "function" and tool["function"]["name"] == "get_weather"
    assert tool["function"]["parameters"] == TOOL_PARAMETERS
    assert body.get("max_tokens", body.get("max_completion_tokens")) == 200
    (want,) = chat_tool_calls(up)
    assert msg.stop_reason == "tool_use"
    (use,) = [b for b in msg.content if b.type == "tool_use"]
    assert use.name == "get_weather" and use.id
    assert use.input == json.loads(want["arguments"])
    usage = chat_usage(up)
    assert (
        msg.usage.input_tokens + (msg.usage.cache_read_input_tokens or 0) == usage["prompt_tokens"]
    )
    assert msg.usage.output_tokens == usage["completion_tokens"]

    # The tool result goes back in a user turn; upstream it is a ``tool`` message.
    chat_only.reset()
    result = {"type": "tool_result", "tool_use_id": use.id, "content": "18C and sunny"}
    replayed = [b.model_dump(exclude_none=True) for b in msg.content]
    turns: Any = [
        ask,
        {"role": "assistant", "content": replayed},
        {"role": "user", "content": [result]},
    ]
    again = c.messages.create(model=PINNED, max_tokens=200, tools=[ANTHROPIC_TOOL], messages=turns)
    msgs = assert_chat_upstream(chat_only, stream=False).json()["messages"]
    assert msgs[-1]["role"] == "tool" and msgs[-1]["tool_call_id"] == use.id
    assert "18C and sunny" in json.dumps(msgs[-1]["content"])
    assert msgs[-2]["role"] == "assistant" and msgs[-2]["tool_calls"][0]["id"] == use.id
    assert again.stop_reason == "end_turn"
    (text,) = again.content
    assert text.type == "text" and text.text


def test_messages_stream_with_a_tool_over_chat(chat_only: Upstream) -> None:
    tag = f"tg-msg-stream-tools-{chat_only.name}"
    c = chat_only.anthropic()
    with c.messages.stream(
        model=PINNED,
        max_tokens=200,
        messages=[{"role": "user", "content": f"{TOOL_PROMPT} ({tag})"}],
        tools=[ANTHROPIC_TOOL],
    ) as s:
        events = list(s)
        final = s.get_final_message()
    up = assert_chat_upstream(chat_only, stream=True)
    (want,) = chat_tool_calls(up)
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop", kinds
    json_deltas = [
        e.delta.partial_json
        for e in events
        if e.type == "content_block_delta" and e.delta.type == "input_json_delta"
    ]
    assert json_deltas, kinds
    assert final.stop_reason == "tool_use"
    (use,) = [b for b in final.content if b.type == "tool_use"]
    assert use.name == "get_weather" and use.id
    assert use.input == json.loads("".join(json_deltas)) == json.loads(want["arguments"])
    assert final.usage.output_tokens == chat_usage(up)["completion_tokens"]


def test_messages_stream_text_over_chat(chat_only: Upstream) -> None:
    tag = f"tg-msg-stream-{chat_only.name}"
    c = chat_only.anthropic()
    with c.messages.stream(
        model=PINNED,
        max_tokens=200,
        system="Be brief.",
        messages=[{"role": "user", "content": f"{tag}: say hello"}],
    ) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    up = assert_chat_upstream(chat_only, stream=True)
    msgs = up.json()["messages"]
    assert msgs[0]["role"] in ("system", "developer") and "Be brief." in json.dumps(msgs[0])
    assert text == chat_text(up) and text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == chat_usage(up)["completion_tokens"] > 0


# --- (d) embeddings -------------------------------------------------------------------------
def _floats(embedding: Any) -> list[float]:
    if isinstance(embedding, str):  # base64, as openai-python asks by default
        raw = base64.b64decode(embedding)
        return list(struct.unpack(f"<{len(raw) // 4}f", raw))
    return [float(x) for x in embedding]


def test_embeddings_pass_through(native: Upstream) -> None:
    texts = [f"tg-emb-{native.name}: alpha", f"tg-emb-{native.name}: beta"]
    with native.openai() as c:
        raw = c.embeddings.with_raw_response.create(model=EMBEDDING, input=texts)
    resp = raw.parse()
    assert_valid("CreateEmbeddingResponse", raw.http_response.json())
    ex = only(native.sent(), EMBEDDINGS)
    sent = ex.json()
    assert sent["model"] == upstream_name(EMBEDDING) and sent["input"] == texts
    ((path, seen),) = native.journal()
    assert path == EMBEDDINGS
    # aimock records the input joined into one string (``embeddingInput``).
    assert seen.get("input", seen.get("embeddingInput")) in (texts, " ".join(texts)), seen
    upstream = json.loads(ex.answer)["data"]
    assert [d.index for d in resp.data] == [0, 1]
    for got, want in zip(resp.data, upstream, strict=True):
        assert got.embedding == pytest.approx(_floats(want["embedding"]))
    if native.name == "aimock":
        assert resp.data[0].embedding == pytest.approx(AIMOCK_VECTOR)
    else:
        assert len(resp.data[0].embedding) == 1536


# --- (e) accounting and failures over chat --------------------------------------------------
def test_translated_requests_are_accounted_under_their_own_api(
    stack: Stack, chat_only: Upstream
) -> None:
    from tests.reliability.common import delta, scrape

    url = stack.metrics_url(chat_only.gateway)
    before = scrape(url)
    tag = f"tg-metrics-{chat_only.name}"
    with chat_only.openai() as c:
        c.responses.create(model=PINNED, input=f"{tag}: say hello", store=False)
    chat_only.anthropic().messages.create(
        model=PINNED, max_tokens=64, messages=[{"role": "user", "content": f"{tag}: hi"}]
    )
    after = scrape(url)
    name = "tollgate_llm_requests_total"
    assert delta(before, after, name, api="responses") == 1
    assert delta(before, after, name, api="messages") == 1
    assert delta(before, after, name, api="chat") == 0
    for api in ("responses", "messages"):
        assert delta(before, after, "tollgate_llm_cost_usd_total", api=api) > 0, api
        assert delta(before, after, "tollgate_llm_tokens_total", api=api, type="completion") > 0


def _refuse_next(u: Upstream) -> str:
    """Make the next chat request fail with a 400; the marker the prompt must carry."""
    if isinstance(u.mock, LLMock):
        u.mock.script(
            {"type": "fail", "status": 400, "code": "tg_refused", "message": "no", "times": 1}
        )
    return "tg-status-400"


def test_an_upstream_400_reaches_a_responses_client_in_its_shape(chat_only: Upstream) -> None:
    marker = _refuse_next(chat_only)
    with chat_only.openai() as c:
        err = gateway_error(lambda: c.responses.create(model=PINNED, input=f"{marker}: hi"))
    assert err.status_code == 400, err.response.text
    e = err.response.json()["error"]
    assert e["code"] == "tg_refused" and isinstance(e["message"], str), e
    assert set(e) <= {"message", "type", "param", "code"}, e


def test_an_upstream_400_reaches_a_messages_client_in_its_shape(chat_only: Upstream) -> None:
    marker = _refuse_next(chat_only)
    c = chat_only.anthropic()
    with pytest.raises(anthropic.BadRequestError) as info:
        c.messages.create(
            model=PINNED, max_tokens=64, messages=[{"role": "user", "content": f"{marker}: hi"}]
        )
    body = info.value.response.json()
    assert body["type"] == "error", body
    assert body["error"]["type"] == "invalid_request_error", body
    assert isinstance(body["error"]["message"], str), body


def test_a_stream_cut_after_content_ends_in_each_dialects_error_event(
    gateways: dict[str, Upstream],
) -> None:
    """llmock drops the connection mid-stream, after text went out: no fallback is
    possible, so the client gets its API's error event (and its SDK raises)."""
    u = gateways["llmock-chat"]
    u.reset()
    fault = {"type": "stream_fault", "kind": "disconnect", "after_chunks": 3, "times": 1}
    u.mock.script(fault)  # type: ignore[union-attr]
    tee = TeeTransport()
    cut = "tg-cut-responses: tell me a story"
    with u.openai(tee) as c, c.responses.stream(model=PINNED, input=cut) as s:
        types = [ev.type for ev in s]
        # openai-python yields a ResponseErrorEvent (it raises only for a nested
        # ``error`` object); with no response.completed there is no final response.
        with pytest.raises(RuntimeError):
            s.get_final_response()
    assert u.sent()[0].cut, "llmock did not cut the stream"
    assert "response.output_text.delta" in types and types[-1] == "error", types
    events = sse(bytes(tee.answers[0]))
    name, last = events[-1]
    assert name == "error" and last["code"] and last["message"], last
    assert_valid("ResponseStreamEvent", without(last, COST_FIELD))
    seqs = [d["sequence_number"] for _, d in events]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs

    u.reset()
    u.mock.script(fault)  # type: ignore[union-attr]
    c2 = u.anthropic()
    with (
        pytest.raises(anthropic.APIStatusError),
        c2.messages.stream(
            model=PINNED,
            max_tokens=200,
            messages=[{"role": "user", "content": "tg-cut-messages: tell me a story"}],
        ) as ms,
    ):
        for _ in ms:
            pass


def test_malformed_tool_arguments_upstream_are_not_a_500(gateways: dict[str, Upstream]) -> None:
    """llmock sends a tool call whose arguments are not JSON. Responses carries
    ``arguments`` as a string, so it can pass it on; Messages needs an object in
    ``tool_use.input``: either way the client gets an answer or a 502, never a 500."""
    u = gateways["llmock-chat"]
    for call in ("responses", "messages"):
        u.reset()
        u.mock.script({"type": "tool_fault", "kind": "malformed_arguments", "times": 1})  # type: ignore[union-attr]
        ask = f"{TOOL_PROMPT} (tg-malformed-{call})"
        try:
            if call == "responses":
                with u.openai() as c:
                    r = c.responses.create(model=PINNED, input=ask, tools=[FUNCTION_TOOL])
                (fc,) = [o for o in r.output if o.type == "function_call"]
                assert isinstance(fc.arguments, str)
            else:
                m = u.anthropic().messages.create(
                    model=PINNED,
                    max_tokens=64,
                    messages=[{"role": "user", "content": ask}],
                    tools=[ANTHROPIC_TOOL],
                )
                (use,) = [b for b in m.content if b.type == "tool_use"]
                assert isinstance(use.input, dict)
        except (openai.APIStatusError, anthropic.APIStatusError) as exc:
            assert exc.status_code == 502, (call, exc.status_code, exc.response.text)


# --- (f) what the translations map ----------------------------------------------------------
CITY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
    "additionalProperties": False,
}


def test_responses_options_reach_chat_in_chat_terms(chat_only: Upstream) -> None:
    tag = f"tg-map-responses-{chat_only.name}"
    with chat_only.openai() as c:
        c.responses.create(
            model=PINNED,
            input=f"{tag}: which city?",
            tools=[FUNCTION_TOOL],
            tool_choice={"type": "function", "name": "get_weather"},
            text={
                "format": {
                    "type": "json_schema",
                    "name": "city",
                    "schema": CITY_SCHEMA,
                    "strict": True,
                }
            },
            temperature=0.3,
            top_p=0.9,
            parallel_tool_calls=False,
            store=False,
        )
    body = assert_chat_upstream(chat_only, stream=False).json()
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "city", "schema": CITY_SCHEMA, "strict": True},
    }
    assert (body["temperature"], body["top_p"]) == (0.3, 0.9)
    assert body["parallel_tool_calls"] is False


def test_messages_options_reach_chat_in_chat_terms(chat_only: Upstream) -> None:
    tag = f"tg-map-messages-{chat_only.name}"
    kw: Any = {
        "model": PINNED,
        "max_tokens": 99,
        "system": [
            {"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Answer in English."},
        ],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": f"{tag}: first"}]},
            {"role": "assistant", "content": "noted"},
            {"role": "user", "content": f"{tag}: the weather?"},
        ],
        "tools": [ANTHROPIC_TOOL],
        "tool_choice": {"type": "tool", "name": "get_weather"},
        "stop_sequences": ["END", "STOP"],
        # anthropic 2.15 has no parameters for these any more; older clients send them.
        "extra_body": {"temperature": 0.2, "top_p": 0.8},
    }
    chat_only.anthropic().messages.create(**kw)
    body = assert_chat_upstream(chat_only, stream=False).json()
    system, *rest = body["messages"]
    assert system["role"] in ("system", "developer")
    assert "You are terse." in json.dumps(system) and "Answer in English." in json.dumps(system)
    assert [m["role"] for m in rest] == ["user", "assistant", "user"], rest
    assert f"{tag}: first" in json.dumps(rest[0]["content"])
    assert "noted" in json.dumps(rest[1]["content"])
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert body["stop"] == ["END", "STOP"]
    assert (body["temperature"], body["top_p"]) == (0.2, 0.8)
    assert body.get("max_tokens", body.get("max_completion_tokens")) == 99


# --- (g) what Anthropic clients also rely on ------------------------------------------------
def test_messages_stream_reports_input_tokens(chat_only: Upstream) -> None:
    """The chat stream's usage comes last; Anthropic's ``message_start`` comes first.
    Whatever the translation puts there, the SDK's final message must carry the input
    tokens (``message_delta`` may repeat them), not 0."""
    c = chat_only.anthropic()
    with c.messages.stream(
        model=PINNED,
        max_tokens=100,
        messages=[{"role": "user", "content": f"tg-msg-usage-{chat_only.name}: hi"}],
    ) as s:
        for _ in s:
            pass
        final = s.get_final_message()
    usage = chat_usage(assert_chat_upstream(chat_only, stream=True))
    got = final.usage.input_tokens + (final.usage.cache_read_input_tokens or 0)
    assert got == usage["prompt_tokens"] > 0, (final.usage, usage)


def test_messages_accept_x_api_key(chat_only: Upstream) -> None:
    """Claude Code and older SDKs send the key as ``x-api-key``, not ``Authorization``."""
    body = {
        "model": PINNED,
        "max_tokens": 32,
        "messages": [{"role": "user", "content": f"tg-msg-xkey-{chat_only.name}: hi"}],
    }
    headers = {"x-api-key": DEV_KEY, "anthropic-version": "2023-06-01"}
    resp = httpx2.post(chat_only.gateway + "/v1/messages", json=body, headers=headers, timeout=30)
    assert resp.status_code == 200, resp.text
    assert resp.json()["type"] == "message" and resp.json()["content"][0]["type"] == "text"
    bad = httpx2.post(
        chat_only.gateway + "/v1/messages",
        json=body,
        headers={**headers, "x-api-key": "sk-wrong"},
        timeout=30,
    )
    assert bad.status_code == 401, bad.text
    assert bad.json()["type"] == "error" and bad.json()["error"]["type"] == "authentication_error"


def test_messages_count_tokens_is_answered_without_an_upstream(chat_only: Upstream) -> None:
    c = chat_only.anthropic()
    counted = c.messages.count_tokens(
        model=PINNED,
        messages=[{"role": "user", "content": "tg-count: how many tokens is this?"}],
        tools=[ANTHROPIC_TOOL],
    )
    assert counted.input_tokens > 0
    assert chat_only.sent() == []


def test_a_replayed_reasoning_item_over_chat_is_not_sent_as_text(chat_only: Upstream) -> None:
    """A stateless client replays ``reasoning`` items (``encrypted_content``) it got from
    a Responses upstream; chat has no place for them. The turn still answers, and the
    opaque blob never reaches the chat upstream as if it were conversation."""
    body = passthrough_body(f"tg-xlate-reasoning-{chat_only.name}")
    body["tools"] = [FUNCTION_TOOL]
    with chat_only.openai() as c:
        resp = c.responses.create(**sdk_kwargs(body))
    up = assert_chat_upstream(chat_only, stream=False)
    assert ENCRYPTED not in up.body.decode() and "encrypted_content" not in up.body.decode()
    roles = [m["role"] for m in up.json()["messages"]]
    assert roles == ["user", "assistant", "user"], roles
    assert resp.status == "completed"
