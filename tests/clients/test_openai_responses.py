"""The Responses API through tollgate with the official clients: openai-python
(``responses.create``, ``responses.stream``) and openai-node
(``tests/node/openai_responses.mjs``), streamed and not, with a function tool round
trip both stateless and by ``previous_response_id``.

Two stacks: the session one, whose simulator speaks Responses natively (pass-through),
and one whose provider speaks only Chat Completions (``apis: [chat]`` in its policy),
so every request is translated; there a hosted tool is a 400 that names it. The
simulator's request journal says which upstream API each request reached. Whole
answers and every stream event of the translated path are also validated raw against
OpenAI's OpenAPI document.
"""

from __future__ import annotations

import importlib.metadata
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx2
import pytest
from openai import BadRequestError, OpenAI
from openai.types.responses import Response, ResponseInputParam, ToolParam

from tests.clients import (
    TOOL_DESCRIPTION,
    TOOL_NAME,
    TOOL_PARAMETERS,
    TOOL_PROMPT,
    check_headers,
    check_stream_cost,
    check_tool_args,
    check_usage,
    settle,
)
from tests.clients.conftest import node_case, node_versions, run_node_script
from tests.contract.openai_contract import assert_valid
from tollgate_common.policy import DEFAULT_POLICY_FILE
from tools.stack import DEV_KEY, Stack

pytestmark = pytest.mark.integration

VERSION = importlib.metadata.version("openai")
TOOL: ToolParam = {
    "type": "function",
    "name": TOOL_NAME,
    "description": TOOL_DESCRIPTION,
    "parameters": TOOL_PARAMETERS,
    "strict": True,
}
# The provider of every model speaks only Chat Completions: Responses is translated.
CHAT_ONLY_POLICY = DEFAULT_POLICY_FILE.read_text().replace(
    "    api_key_env: OPENAI_API_KEY\n", "    api_key_env: OPENAI_API_KEY\n    apis: [chat]\n", 1
)


def who(case: str) -> str:
    return f"openai-python {VERSION} responses {case}"


def client_for(base_url: str) -> OpenAI:
    return OpenAI(base_url=base_url + "/v1", api_key=DEV_KEY, max_retries=0, timeout=20)


@pytest.fixture(scope="module")
def client(stack: Stack) -> Iterator[OpenAI]:
    with client_for(stack.base_url) as c:
        yield c


@pytest.fixture(scope="module")
def chat_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    logs: Path = tmp_path_factory.mktemp("responses-chat-only")
    policy = logs / "policy.yaml"
    policy.write_text(CHAT_ONLY_POLICY)
    assert "apis: [chat]" in policy.read_text()
    s = Stack(
        log_dir=logs,
        router_env={"TOLLGATE_ROUTER_POLICY_FILE": str(policy)},
        orch_env={"TOLLGATE_ORCHESTRATOR_POLICY_FILE": str(policy)},
    )
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def translated(chat_only: Stack) -> Iterator[OpenAI]:
    with client_for(chat_only.base_url) as c:
        yield c


def upstream_apis(stack: Stack, marker: str) -> list[str]:
    """The upstream APIs (``chat`` | ``responses``) of the requests that carried ``marker``."""
    journal = httpx2.get(f"{stack.sim_url}/_sim/requests", timeout=5).json()["requests"]
    return [r["api"] for r in journal if marker in json.dumps(r["body"])]


def prompt(text: str) -> tuple[str, str]:
    """(a prompt that can be found in the simulator's journal, its marker)."""
    marker = f"m{uuid.uuid4().hex[:10]}"
    return f"{text} ({marker})", marker


def completed_cost(events: list[Any]) -> Any:
    last = events[-1]
    assert last.type == "response.completed", [e.type for e in events]
    return getattr(last, "x_tollgate_cost_usd", None)


def round_trip(client: OpenAI, case: str, stream: bool) -> None:
    """A function tool called, then answered: the second turn carries the first's items
    (stateless, ``store: false``) and gets text."""
    text, _ = prompt(TOOL_PROMPT)
    first_input: ResponseInputParam = [{"role": "user", "content": text}]
    first: Response
    if stream:
        with client.responses.stream(
            model="auto", input=first_input, tools=[TOOL], store=False
        ) as s:
            first = s.get_final_response()
    else:
        first = client.responses.create(model="auto", input=first_input, tools=[TOOL], store=False)
    calls = [o for o in first.output if o.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == TOOL_NAME, who(f"{case}: {first.output}")
    assert calls[0].call_id and calls[0].status == "completed", who(case)
    check_tool_args(calls[0].arguments, who(case))
    assert first.usage is not None
    check_usage(first.usage.input_tokens, first.usage.output_tokens, first.usage.total_tokens)
    items = [o.model_dump(exclude_none=True) for o in first.output]
    answer = {"type": "function_call_output", "call_id": calls[0].call_id, "output": '{"c": 21}'}
    second = client.responses.create(
        model="auto",
        input=cast(ResponseInputParam, [*first_input, *items, answer]),
        tools=[TOOL],
        store=False,
    )
    assert second.output_text and second.status == "completed", who(f"{case} answer")
    assert not [o for o in second.output if o.type == "function_call"], who(case)


def follow_up(client: OpenAI, case: str) -> None:
    """The same round trip with the gateway's store: the second turn names the first by
    ``previous_response_id`` and sends only the call's output."""
    text, _ = prompt(TOOL_PROMPT)
    first = client.responses.create(model="auto", input=text, tools=[TOOL])
    calls = [o for o in first.output if o.type == "function_call"]
    assert len(calls) == 1, who(f"{case}: {first.output}")
    answer = {"type": "function_call_output", "call_id": calls[0].call_id, "output": '{"c": 21}'}
    second = client.responses.create(
        model="auto",
        previous_response_id=first.id,
        input=cast(ResponseInputParam, [answer]),
        tools=[TOOL],
    )
    assert second.output_text and second.id != first.id, who(f"{case} answer")


# --- pass-through: the upstream speaks Responses -------------------------------------
# An OpenAI model by name: ``auto`` may route to a vendor that speaks chat only (Gemini),
# where Responses is translated.
RESPONSES_MODEL = "gpt-4o-mini"


def test_create_then_cache_hit(client: OpenAI, stack: Stack) -> None:
    text, marker = prompt("openai-python responses: name three rivers in Asia.")
    req: dict[str, Any] = {"model": RESPONSES_MODEL, "temperature": 0, "input": text}
    first = client.responses.with_raw_response.create(**req)
    check_headers(first.headers, "miss", who=who("create"))
    done = first.parse()
    assert done.object == "response" and done.status == "completed" and done.id
    assert done.output_text, f"empty answer: {done}"
    assert done.usage is not None
    check_usage(done.usage.input_tokens, done.usage.output_tokens, done.usage.total_tokens)
    settle()
    second = client.responses.with_raw_response.create(**req)
    check_headers(second.headers, "hit", who=who("create repeat"))
    assert second.parse().output_text == done.output_text
    assert upstream_apis(stack, marker) == ["responses"]  # passed through, once


def test_raw_stream_carries_its_cost_then_replays(client: OpenAI, stack: Stack) -> None:
    text, marker = prompt("openai-python responses stream: describe a lighthouse.")
    req: dict[str, Any] = {
        "model": RESPONSES_MODEL,
        "temperature": 0,
        "input": text,
        "stream": True,
    }
    texts = []
    for cache in ("miss", "hit"):
        with client.responses.with_streaming_response.create(**req) as r:
            check_headers(r.headers, cache, streamed=True, who=who(f"stream {cache}"))
            events = list(r.parse())
        assert [e.sequence_number for e in events] == list(range(len(events)))
        assert events[0].type == "response.created"
        check_stream_cost(completed_cost(events), cache, who(f"stream {cache}"))
        texts.append("".join(e.delta for e in events if e.type == "response.output_text.delta"))
        settle()
    assert texts[0] and texts[0] == texts[1]
    assert upstream_apis(stack, marker) == ["responses"]


def test_stream_helper(client: OpenAI) -> None:
    text, _ = prompt("openai-python responses helper: describe a quiet harbour.")
    with client.responses.stream(model="auto", input=text, instructions="Be vivid.") as s:
        deltas = [e.delta for e in s if e.type == "response.output_text.delta"]
        final = s.get_final_response()
    assert deltas and final.output_text == "".join(deltas)
    assert final.status == "completed" and final.instructions == "Be vivid."
    assert final.usage is not None
    check_usage(final.usage.input_tokens, final.usage.output_tokens, final.usage.total_tokens)


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_function_tool_round_trip(client: OpenAI, stream: bool) -> None:
    round_trip(client, "tools", stream)


def test_follow_up_by_previous_response_id(client: OpenAI) -> None:
    follow_up(client, "previous_response_id")


def test_bad_input_is_a_400_naming_the_field(client: OpenAI) -> None:
    bad = [{"role": "user", "content": [{"type": "input_text", "text": "a"}, {"type": "text"}]}]
    with pytest.raises(BadRequestError) as info:
        client.responses.create(model="auto", input=cast(ResponseInputParam, bad))
    body = cast(dict[str, Any], info.value.body)
    assert body["param"] == "input[0].content[1].type" and body["type"] == "invalid_request_error"


@pytest.mark.parametrize("which", ["stack", "chat_only"], ids=["native", "translated"])
def test_openai_node(request: pytest.FixtureRequest, which: str) -> None:
    stack: Stack = request.getfixturevalue(which)
    results = run_node_script("openai_responses.mjs", stack, ("openai",))
    node = f"openai-node {node_versions('openai')['openai']} responses ({which})"
    for name, cache in (("create", "miss"), ("create_repeat", "hit")):
        r = node_case(results, name)
        check_headers(r["headers"], cache, who=f"{node} {name}")
        assert r["text"] and r["status"] == "completed", f"{node} {name}: {r}"
        u = r["usage"]
        check_usage(u["input_tokens"], u["output_tokens"], u["total_tokens"], f"{node} {name}")
    assert node_case(results, "create_repeat")["text"] == node_case(results, "create")["text"]
    for name, cache in (("stream", "miss"), ("stream_repeat", "hit")):
        r = node_case(results, name)
        check_headers(r["headers"], cache, streamed=True, who=f"{node} {name}")
        assert r["types"][0] == "response.created" and r["types"][-1] == "response.completed"
        assert r["text"] and r["status"] == "completed", f"{node} {name}: {r}"
        check_stream_cost(r["cost"], cache, f"{node} {name}")
    assert node_case(results, "stream_repeat")["text"] == node_case(results, "stream")["text"]
    helper = node_case(results, "stream_helper")
    assert helper["text"] and helper["deltas"] > 0 and helper["status"] == "completed"
    tools = node_case(results, "tools")
    assert len(tools["tool_calls"]) == 1 and tools["tool_calls"][0]["name"] == TOOL_NAME
    check_tool_args(tools["tool_calls"][0]["arguments"], f"{node} tools")
    assert tools["answer"] and tools["answer_tool_calls"] == [], f"{node} tools: {tools}"
    streamed_tools = node_case(results, "stream_tools")
    assert [c["name"] for c in streamed_tools["tool_calls"]] == [TOOL_NAME], streamed_tools
    check_tool_args(streamed_tools["tool_calls"][0]["arguments"], f"{node} stream_tools")


# --- translated: the upstream speaks only Chat Completions ---------------------------


def test_translated_create_and_stream(translated: OpenAI, chat_only: Stack) -> None:
    text, marker = prompt("openai-python translated: name three lakes in Africa.")
    req: dict[str, Any] = {"model": "auto", "temperature": 0, "input": text}
    first = translated.responses.with_raw_response.create(**req)
    check_headers(first.headers, "miss", who=who("translated create"))
    done = first.parse()
    assert done.output_text and done.status == "completed" and done.id.startswith("resp_")
    assert done.usage is not None and done.usage.input_tokens > 0
    with translated.responses.stream(**req) as s:  # the same request: a replayed hit
        final = s.get_final_response()
    assert final.output_text == done.output_text
    assert upstream_apis(chat_only, marker) == ["chat"]
    text, marker = prompt("openai-python translated stream: describe a canyon.")
    with translated.responses.stream(model="auto", input=text) as s:
        deltas = [e.delta for e in s if e.type == "response.output_text.delta"]
        final = s.get_final_response()
    assert deltas and final.output_text == "".join(deltas) and final.usage is not None
    text, marker2 = prompt("openai-python translated raw stream: describe a dune.")
    raw = translated.responses.with_streaming_response.create(model="auto", input=text, stream=True)
    with raw as r:
        check_headers(r.headers, "bypass", streamed=True, who=who("translated raw stream"))
        events = list(r.parse())
    check_stream_cost(completed_cost(events), "bypass", who("translated raw stream"))
    assert upstream_apis(chat_only, marker) == upstream_apis(chat_only, marker2) == ["chat"]


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_translated_function_tool_round_trip(translated: OpenAI, stream: bool) -> None:
    round_trip(translated, "translated tools", stream)


def test_translated_follow_up_by_previous_response_id(translated: OpenAI) -> None:
    follow_up(translated, "translated previous_response_id")


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_translated_hosted_tools_are_refused_by_name(
    translated: OpenAI, chat_only: Stack, stream: bool
) -> None:
    text, marker = prompt("openai-python translated: search the web.")
    hosted = cast(list[ToolParam], [TOOL, {"type": "web_search"}])
    with pytest.raises(BadRequestError) as info:
        translated.responses.create(model="auto", input=text, tools=hosted, stream=stream)
    body = cast(dict[str, Any], info.value.body)
    assert body["code"] == "unsupported_tool" and body["param"] == "tools[1].type", body
    assert "web_search" in body["message"], body
    assert upstream_apis(chat_only, marker) == []  # never sent


def test_translated_bodies_match_the_contract(chat_only: Stack) -> None:
    url = f"{chat_only.base_url}/v1/responses"
    auth = {"authorization": f"Bearer {DEV_KEY}"}
    text, _ = prompt(TOOL_PROMPT)
    body = {"model": "auto", "input": text, "tools": [TOOL]}
    r = httpx2.post(url, json=body, headers=auth, timeout=20)
    assert r.status_code == 200, r.text
    assert_valid("Response", r.json())
    events = []
    with httpx2.stream("POST", url, json={**body, "stream": True}, headers=auth, timeout=20) as s:
        assert s.status_code == 200 and s.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in s.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                ev = json.loads(line[6:])
                assert ev["type"] == name, (name, ev["type"])
                assert_valid("ResponseStreamEvent", ev)
                events.append(ev)
    assert events[-1]["type"] == "response.completed"
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert any(e["type"] == "response.function_call_arguments.delta" for e in events)
