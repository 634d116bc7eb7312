"""Codex CLI (``@openai/codex`` 0.171.0, the npm package's own binary) against tollgate.

``codex exec --skip-git-repo-check "say ok"`` runs one non-interactive turn with HOME and
CODEX_HOME in a temp folder whose ``config.toml`` names tollgate as the model provider
(``wire_api = "responses"``, ``env_key = "TOLLGATE_API_KEY"``). Two recording proxies
(``tests/clients/recorder.py``) see the wire on both sides of an orchestrator of the
session stack: Codex -> recorder -> orchestrator -> recorder -> simulator.

What Codex 0.171.0 sends, found by running it against a capture server on loopback
(and kept true by the assertions below):

- only ``POST /v1/responses`` (plus, on some runs, ``GET /v1/models`` for model
  discovery); never ``/v1/chat/completions``: ``wire_api="chat"`` is gone. Headers:
  ``authorization: Bearer <$TOLLGATE_API_KEY>``, ``accept: text/event-stream``,
  ``originator: codex_exec``, ``user-agent: codex_exec/0.171.0 (...)``, ``session-id``,
  ``thread-id``, ``x-client-request-id``, ``x-codex-window-id``,
  ``x-codex-turn-metadata`` (JSON: installation/session/turn ids, sandbox mode),
  ``x-codex-beta-features``, ``accept-encoding: zstd,gzip``. The body (about 40 kB) is
  plain JSON, not compressed, with an API key.
- body (these keys only): ``model``, ``stream: true``, ``store: false``,
  ``include: ["reasoning.encrypted_content"]``, ``input`` (two ``developer`` and two
  ``user`` messages: its instructions, permissions and environment context, then the
  prompt; no top-level ``instructions``), ``tool_choice: "auto"``,
  ``parallel_tool_calls: true``, ``reasoning: {"summary": "auto"}``,
  ``prompt_cache_key`` (the session id), ``client_metadata`` (session, thread, turn and
  window ids). ``tools``: functions ``exec_command``, ``write_stdin``,
  ``request_user_input``, ``view_image``, ``get_goal``, ``create_goal``, ``update_goal``;
  a ``namespace`` tool (``multi_agent_v1``: function tools ``spawn_agent``,
  ``send_input``, ``close_agent``, ...) and the hosted
  ``{"type": "web_search", "external_web_access": false}``. A gateway that passes
  Responses through must keep both.
- it reads the answer as Responses SSE events and prints the ``agent_message`` of the
  turn; ``--json`` prints ``turn.completed`` with the usage of ``response.completed``.
- with a reasoning model the answer's ``reasoning`` item (``encrypted_content``) is
  kept in Codex's own history; ``codex exec resume --last`` sends it back in ``input``
  on the next turn, still with ``store: false``. The simulator seals that blob and
  refuses a changed one (400 ``invalid_encrypted_content``), as OpenAI does.

What it tries to reach besides the provider, by default (seen with strace and with the
proxy trap below): ``git ls-remote https://github.com/openai/plugins.git`` and HTTPS to
``github.com``, ``api.github.com`` and ``chatgpt.com`` (the plugin marketplace and remote
plugins). ``[features] plugins = false, remote_plugin = false`` stops all of it. The
config also turns off what else could phone home (update check, analytics, feedback,
OTel exporters) and connection retries forever (``unbounded_connection_retries``: a
dead gateway would otherwise hang the turn). As a second line, every proxy variable
points at ``Trap``, which refuses and records any attempt; the test asserts it saw none.
``--strict-config`` makes an unknown key an error, so a renamed option fails loudly.

The simulator speaks Responses natively, so the gateway forwards the body with only
``model`` replaced: the upstream recorder must see Codex's body otherwise unchanged.
Behind a provider that speaks only chat (``apis: [chat, embeddings]``) every default
turn is refused: 400 ``unsupported_tool``, ``param: tools[4].type``, naming
``namespace, web_search``; ``codex exec`` prints it and exits 1. With
``web_search = "disabled"`` and ``[features] multi_agent = false`` Codex offers only
function tools and the turn goes through the translation to ``/v1/chat/completions``.
Skips locally without node or the package (fails under CI=true), like run_node_script.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.clients.conftest import NODE_DIR, _node_missing, node_versions
from tests.clients.recorder import Exchange, Recorder, Trap, sse_events
from tests.reliability.common import Samples, delta, scrape
from tollgate_common.policy import DEFAULT_POLICY_FILE, load_policy
from tools.stack import DEV_KEY, Stack, free_port

pytestmark = pytest.mark.integration

PACKAGE = "@openai/codex"
CODEX_JS = NODE_DIR / "node_modules" / "@openai" / "codex" / "bin" / "codex.js"
MODEL = "gpt-4o-mini"  # a catalog model: Codex pins it, the router keeps it
REASONING_MODEL = "gpt-5-mini"  # the simulator answers it with an encrypted reasoning item
TIMEOUT_S = 120.0
RESPONSES = "/v1/responses"
ENCRYPTED = "reasoning.encrypted_content"
ORCH = "orch-codex"
ORCH_CHAT = "orch-codex-chat-only"


def config_toml(base_url: str, hosted_tools: bool = True) -> str:
    """Codex's config; without ``hosted_tools`` it offers only function tools (no
    ``web_search``, no ``multi_agent_v1`` namespace), which a chat-only provider can take."""
    top = "" if hosted_tools else 'web_search = "disabled"\n'
    features = "" if hosted_tools else "multi_agent = false\n"
    return f"""\
{top}model = "{MODEL}"
model_provider = "tollgate"
approval_policy = "never"
sandbox_mode = "read-only"
check_for_update_on_startup = false

[model_providers.tollgate]
name = "tollgate"
base_url = "{base_url}"
env_key = "TOLLGATE_API_KEY"
wire_api = "responses"
request_max_retries = 0
stream_max_retries = 0
stream_idle_timeout_ms = 60000

[features]
plugins = false
remote_plugin = false
unbounded_connection_retries = false
{features}
[analytics]
enabled = false

[feedback]
enabled = false

[otel]
exporter = "none"
trace_exporter = "none"
metrics_exporter = "none"
"""


@dataclass
class Wire:
    """The gateway between two recorders, and the trap for everything else."""

    gateway: str  # what Codex talks to: the client-side recorder
    client_side: Recorder
    upstream_side: Recorder
    trap: Trap
    metrics_url: str

    def clear(self) -> None:
        self.client_side.clear()
        self.upstream_side.clear()


def _wire(stack: Stack, name: str, policy: Path | None = None) -> Wire:
    """Codex -> recorder -> orchestrator ``name`` -> recorder -> the stack's simulator."""
    if shutil.which("node") is None:
        _node_missing("node (>= 20.15) is not on PATH")
    if not CODEX_JS.is_file():
        _node_missing(f"tests/node/node_modules lacks {PACKAGE}")
    upstream_side = Recorder(stack.sim_url).start()
    port = free_port()
    extra = {"TOLLGATE_ORCHESTRATOR_POLICY_FILE": str(policy)} if policy else {}
    stack.start_orchestrator(
        name=name,
        http_port=port,
        grpc_port=free_port(),
        TOLLGATE_ORCHESTRATOR_UPSTREAM_BASE_URL=f"{upstream_side.url}/v1",
        **extra,
    )
    client_side = Recorder(f"http://127.0.0.1:{port}").start()
    trap = Trap().start()
    return Wire(client_side.url, client_side, upstream_side, trap, stack.metrics_url(name))


def _unwire(stack: Stack, name: str, w: Wire) -> None:
    proc = stack.procs.pop(name, None)
    if proc is not None:
        proc.stop()
    for r in (w.client_side, w.upstream_side):
        r.stop()
    w.trap.stop()


@pytest.fixture(scope="module")
def wire(stack: Stack) -> Iterator[Wire]:
    """The default policy: the provider speaks Responses, the body passes through."""
    w = _wire(stack, ORCH)
    yield w
    _unwire(stack, ORCH, w)


@pytest.fixture(scope="module")
def chat_wire(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Wire]:
    """A policy whose provider speaks only chat: Responses goes through the translation."""
    raw = yaml.safe_load(DEFAULT_POLICY_FILE.read_text())
    for provider in raw["providers"].values():
        provider["apis"] = ["chat", "embeddings"]
    policy = tmp_path_factory.mktemp("codex-chat-policy") / "policy.yaml"
    policy.write_text(yaml.safe_dump(raw, sort_keys=False))
    w = _wire(stack, ORCH_CHAT, policy)
    yield w
    _unwire(stack, ORCH_CHAT, w)


@dataclass(frozen=True)
class Run:
    """One ``codex exec``: its outcome, what crossed each side of the gateway, and the
    orchestrator's metrics before and after."""

    returncode: int
    events: list[dict[str, Any]]
    last_message: str
    stderr: str
    client: list[Exchange]  # POSTs Codex sent the gateway
    upstream: list[Exchange]  # POSTs the gateway sent the simulator
    before: Samples
    after: Samples


def run_codex(
    wire: Wire,
    tmp: Path,
    prompt: str,
    *,
    hosted_tools: bool = True,
    model: str = MODEL,
    keep: bool = False,
    resume: bool = False,
) -> Run:
    """``codex exec`` with HOME in ``tmp``. A run is ``--ephemeral`` unless it must
    ``keep`` its session for a later run to ``resume`` (``exec resume --last``)."""
    node = shutil.which("node")
    assert node is not None
    home, work = tmp / "home", tmp / "work"
    codex_home = home / ".codex"
    codex_home.mkdir(parents=True, exist_ok=True)
    work.mkdir(exist_ok=True)
    config = config_toml(wire.gateway + "/v1", hosted_tools).replace(MODEL, model, 1)
    (codex_home / "config.toml").write_text(config)
    last = tmp / "last-message.txt"
    last.unlink(missing_ok=True)
    # Nothing of the caller's environment but PATH: no OPENAI_API_KEY, no real HOME.
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "CODEX_HOME": str(codex_home),
        "TOLLGATE_API_KEY": DEV_KEY,
        "NO_COLOR": "1",
        **wire.trap.env(),
    }
    args = [node, str(CODEX_JS), "exec", "--skip-git-repo-check", "--strict-config"]
    args += ["--json", "--color", "never", "-C", str(work), "-o", str(last)]
    if not (keep or resume):
        args.append("--ephemeral")
    if resume:
        args += ["resume", "--last"]
    wire.clear()
    before = scrape(wire.metrics_url)
    try:
        proc = subprocess.run(
            [*args, prompt],
            cwd=work,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout
        pytest.fail(f"codex exec did not finish in {TIMEOUT_S:.0f} s; stdout:\n{out}")
    after = scrape(wire.metrics_url)
    events = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    text = last.read_text().strip() if last.is_file() else ""
    client = posts(wire.client_side.exchanges())
    upstream = posts(wire.upstream_side.exchanges())
    return Run(proc.returncode, events, text, proc.stderr[-4000:], client, upstream, before, after)


@pytest.fixture(scope="module")
def codex_turn(wire: Wire, tmp_path_factory: pytest.TempPathFactory) -> Run:
    return run_codex(wire, tmp_path_factory.mktemp("codex"), "say ok")


def who() -> str:
    return f"codex {node_versions(PACKAGE)[PACKAGE]}"


def posts(exchanges: list[Exchange]) -> list[Exchange]:
    return [e for e in exchanges if e.method == "POST"]


def assert_completed(run: Run) -> None:
    detail = f"events {run.events}\nstderr:\n{run.stderr}"
    assert run.returncode == 0, f"{who()} exited {run.returncode}; {detail}"
    failed = [e for e in run.events if e.get("type") in ("turn.failed", "error")]
    assert not failed, f"{who()}: {failed}"
    assert run.last_message, f"{who()} printed no answer; {detail}"
    messages = [
        e["item"]["text"]
        for e in run.events
        if e.get("type") == "item.completed" and e["item"].get("type") == "agent_message"
    ]
    assert messages and messages[-1].strip() == run.last_message, detail
    (done,) = [e for e in run.events if e.get("type") == "turn.completed"]
    assert done["usage"]["input_tokens"] > 0 and done["usage"]["output_tokens"] > 0, done


def test_turn_completes_with_an_answer(codex_turn: Run) -> None:
    assert_completed(codex_turn)


def test_only_the_responses_api_is_used(codex_turn: Run) -> None:
    sent = codex_turn.client
    assert sent, f"{who()} sent nothing to the gateway"
    assert {e.path for e in sent} == {RESPONSES}, [(e.method, e.path) for e in sent]
    assert all(e.status == 200 for e in sent), [(e.path, e.status, e.body[:200]) for e in sent]
    for e in sent:
        assert e.headers.get("authorization") == f"Bearer {DEV_KEY}"
        assert e.headers.get("originator") == "codex_exec", e.headers
        assert "text/event-stream" in e.headers.get("accept", "")


def test_codex_sends_a_stateless_streamed_request(codex_turn: Run) -> None:
    body = codex_turn.client[0].json()
    assert body["model"] == MODEL
    assert body["stream"] is True
    assert body["store"] is False, body.get("store")
    assert body["include"] == [ENCRYPTED], body.get("include")
    types = {t.get("type") for t in body["tools"]}
    assert {"function", "namespace", "web_search"} <= types, types


def _pairs(run: Run) -> list[tuple[dict[str, Any], Exchange]]:
    """(Codex's body, the upstream's exchange), request by request."""
    ups = run.upstream
    assert [e.path for e in ups] == [RESPONSES] * len(run.client), [e.path for e in ups]
    return [(c.json(), u) for c, u in zip(run.client, ups, strict=True)]


def test_the_upstream_got_what_a_stateless_client_needs_unchanged(codex_turn: Run) -> None:
    """The simulator speaks Responses: ``store``, ``include``, the input items and every
    tool (hosted ``web_search`` and ``namespace`` too) pass through; the model is mapped."""
    policy = load_policy()
    for cb, u in _pairs(codex_turn):
        ub = u.json()
        assert ub["model"] == (policy.models[MODEL].upstream_model or MODEL)
        for key in ("store", "include", "input", "tools", "tool_choice"):
            assert ub.get(key) == cb.get(key), f"{key}: upstream {ub.get(key)!r:.300}"
        for key in ("reasoning", "parallel_tool_calls", "prompt_cache_key", "stream"):
            assert ub.get(key) == cb.get(key), f"{key}: upstream {ub.get(key)!r:.300}"
        # The gateway's key stays at the gateway; the upstream gets its own.
        assert DEV_KEY not in json.dumps(u.headers), u.headers
        assert u.headers.get("authorization", "").startswith("Bearer ")


def test_the_upstream_got_codex_body_with_only_the_model_replaced(codex_turn: Run) -> None:
    """Pass-through means every field: Codex's ``client_metadata`` (not in OpenAI's
    OpenAPI document, accepted by OpenAI) included."""
    for cb, u in _pairs(codex_turn):
        ub = u.json()
        missing = sorted(set(cb) - set(ub))
        assert not missing, f"the gateway dropped {missing} from Codex's request"
        assert {k: v for k, v in ub.items() if k != "model"} == {
            k: v for k, v in cb.items() if k != "model"
        }


def test_the_gateway_accounts_the_turn_as_responses(codex_turn: Run) -> None:
    before, after = codex_turn.before, codex_turn.after
    requests = delta(before, after, "tollgate_llm_requests_total", api="responses")
    assert requests >= 1, "no tollgate_llm_requests_total{api=responses} increase"
    cost = delta(before, after, "tollgate_llm_cost_usd_total", api="responses")
    assert cost > 0, f"tollgate_llm_cost_usd_total{{api=responses}} rose by {cost}"
    chat = delta(before, after, "tollgate_llm_requests_total", api="chat")
    assert chat == 0, f"{chat} chat requests during a Codex turn"


def test_nothing_left_loopback(codex_turn: Run, wire: Wire) -> None:
    assert wire.trap.attempts() == [], f"{who()} tried to reach {wire.trap.attempts()}"


def _reasoning(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [i for i in items if i.get("type") == "reasoning"]


def test_a_resumed_turn_replays_encrypted_reasoning_the_upstream_accepts(
    wire: Wire, tmp_path: Path
) -> None:
    """With a reasoning model the simulator answers a ``reasoning`` item whose
    ``encrypted_content`` only it can verify (it refuses a changed one, as OpenAI does).
    ``codex exec resume --last`` sends it back (``store: false``: Codex keeps the
    history itself); through the gateway it must arrive unchanged."""
    first = run_codex(wire, tmp_path, "say ok", model=REASONING_MODEL, keep=True)
    assert_completed(first)
    (answer,) = first.upstream
    sealed = [
        ev["item"]
        for _, ev in sse_events(bytes(answer.answer))
        if ev.get("type") == "response.output_item.done" and ev["item"]["type"] == "reasoning"
    ]
    assert sealed and sealed[0].get("encrypted_content"), "no encrypted reasoning upstream"
    second = run_codex(wire, tmp_path, "say ok again", model=REASONING_MODEL, resume=True)
    assert_completed(second)
    replayed = _reasoning(second.client[0].json()["input"])
    assert [r["encrypted_content"] for r in replayed] == [s["encrypted_content"] for s in sealed]
    (up,) = second.upstream
    assert up.status == 200, bytes(up.answer[:300])
    assert _reasoning(up.json()["input"]) == replayed


# --- a provider that speaks only chat ---------------------------------------------------------
def test_over_chat_only_codex_hosted_tools_are_refused_by_name(
    chat_wire: Wire, tmp_path: Path
) -> None:
    """Codex offers ``web_search`` (hosted) and a ``namespace`` on every turn; chat has
    neither, so the gateway answers 400 naming the tool before any upstream call, and
    Codex shows that message."""
    run = run_codex(chat_wire, tmp_path, "say ok")
    sent = run.client
    assert sent and all(e.status == 400 for e in sent), [(e.path, e.status) for e in sent]
    error = json.loads(bytes(sent[0].answer))["error"]
    assert "web_search" in error["message"] or "namespace" in error["message"], error
    assert str(error.get("param", "")).startswith("tools"), error
    assert run.upstream == []
    failed = [e for e in run.events if e.get("type") == "turn.failed"]
    assert failed, f"{who()}: the turn did not fail: {run.events}"
    assert chat_wire.trap.attempts() == []


def test_over_chat_only_codex_without_hosted_tools_completes(
    chat_wire: Wire, tmp_path: Path
) -> None:
    """``web_search = "disabled"`` and ``features.multi_agent = false``: function tools
    only, which the translation carries to ``/v1/chat/completions``."""
    run = run_codex(chat_wire, tmp_path, "say ok", hosted_tools=False)
    assert_completed(run)
    (sent,) = run.client
    body = sent.json()
    assert {t["type"] for t in body["tools"]} == {"function"}, body["tools"]
    (up,) = run.upstream
    assert up.path == "/v1/chat/completions" and up.status == 200
    chat = up.json()
    assert chat["stream"] is True and chat["stream_options"]["include_usage"] is True
    names = sorted(t["function"]["name"] for t in chat["tools"])
    assert names == sorted(t["name"] for t in body["tools"])
    assert chat["messages"][-1]["role"] == "user"
    assert delta(run.before, run.after, "tollgate_llm_requests_total", api="responses") == 1
    assert delta(run.before, run.after, "tollgate_llm_cost_usd_total", api="responses") > 0
    assert chat_wire.trap.attempts() == []
