"""The Responses session: a follow-up turn is expanded from the store of its own tenant,
item references resolve, what is not there is a 400, ``auto`` follows the previous
model, answers are kept without delaying them; and the retrieval routes."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import httpx2
import orjson
import pytest
from fastapi import FastAPI

from tests.contract.openai_contract import assert_valid
from tollgate_common.policy import load_policy
from tollgate_orchestrator.auth import KeyRing
from tollgate_orchestrator.catalog import Catalog
from tollgate_orchestrator.errors import ApiError
from tollgate_orchestrator.responses_session import (
    STATE_INPUT,
    STATE_NEW,
    ResponsesSession,
    as_items,
    features,
    page,
    terminal_response,
)
from tollgate_orchestrator.responses_store import MemoryStore, Record, StoreUnavailable
from tollgate_orchestrator.types import RESPONSES_API, STATE_MODEL, LlmRequest

POLICY = load_policy()
KEY_A, KEY_B = "sk-tenant-a-" + "a" * 32, "sk-tenant-b-" + "b" * 32


def request(body: dict[str, Any]) -> LlmRequest:
    """What the Responses dialect makes of ``body`` (its features, over the input alone)."""
    f = features(as_items(body.get("input")))
    return LlmRequest(
        body=body,
        model=body.get("model", "auto"),
        stream=bool(body.get("stream")),
        include_usage=True,
        max_tokens=None,
        n=1,
        has_tools=False,
        json_mode=False,
        last_user_text=f.last_user_text,
        system_text="",
        turns=f.turns,
        prompt_chars=f.chars,
        api=RESPONSES_API,
        est_extra_tokens=f.extra_tokens,
    )


def answer(rid: str, text: str, model: str = "gpt-4.1-mini") -> bytes:
    return orjson.dumps(
        {
            "id": rid,
            "object": "response",
            "created_at": 1,
            "status": "completed",
            "model": model,
            "output": [
                {
                    "id": f"msg_{rid}",
                    "type": "message",
                    "role": "assistant",
                    "status": "completed",
                    "content": [
                        {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
                    ],
                }
            ],
        }
    )


class FailingStore(MemoryStore):
    async def put(self, tenant: str, record: Record) -> bool:
        raise StoreUnavailable("down")


@pytest.fixture
def session() -> ResponsesSession:
    return ResponsesSession(MemoryStore(3600, 100, 1 << 20), Catalog(POLICY))


async def turn(
    s: ResponsesSession, tenant: str, body: dict[str, Any], rid: str, text: str = "ok"
) -> LlmRequest:
    """One non-streamed turn: before, the answer, after, and the save finished."""
    req = await s.before(request(body), tenant)
    s.after(req, tenant, answer(rid, text))
    await s.drain(5)
    return req


async def test_a_follow_up_is_the_previous_turn_then_this_one(session: ResponsesSession) -> None:
    await turn(session, "a", {"model": "auto", "input": "My name is Ada."}, "resp_1", "Hi Ada")
    body = {
        "model": "auto",
        "input": "What is my name?",
        "previous_response_id": "resp_1",
        "instructions": "Be brief.",
    }
    first = request(body)
    req = await session.before(first, "a")
    assert "previous_response_id" not in req.body
    assert req.body["instructions"] == "Be brief."  # as given: never carried over
    texts = [
        (i["role"], i["content"] if isinstance(i["content"], str) else i["content"][0]["text"])
        for i in req.body["input"]
    ]
    assert texts == [
        ("user", "My name is Ada."),
        ("assistant", "Hi Ada"),
        ("user", "What is my name?"),
    ]
    assert req.state[STATE_INPUT] == req.body["input"]
    assert req.state[STATE_NEW] == as_items("What is my name?")
    assert req.turns == 3 and req.prompt_chars == first.prompt_chars + len("My name is Ada.Hi Ada")
    assert req.last_user_text == "What is my name?"
    assert req.est_prompt_tokens > first.est_prompt_tokens


async def test_three_turns_carry_everything(session: ResponsesSession) -> None:
    await turn(session, "a", {"input": "one"}, "resp_1", "1")
    await turn(session, "a", {"input": "two", "previous_response_id": "resp_1"}, "resp_2", "2")
    req = await session.before(request({"input": "three", "previous_response_id": "resp_2"}), "a")
    assert len(req.body["input"]) == 5
    rec = await session.store.get("a", "resp_2")
    assert rec is not None and len(rec.input_items) == 3  # what turn 2 sent, expanded
    assert rec.input_ids[1] == "msg_resp_1"  # the output item keeps its own id


async def test_a_plain_request_goes_through_unchanged(session: ResponsesSession) -> None:
    body = {"model": "auto", "input": [{"role": "user", "content": "hi"}]}
    req = await session.before(request(body), "a")
    assert req.body is body and req.body["input"] == [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("case", ["unknown", "other_tenant", "deleted", "expired"])
async def test_what_is_not_there_is_previous_response_not_found(case: str) -> None:
    now = [0.0]
    store = MemoryStore(60, 100, 1 << 20, clock=lambda: now[0])
    s = ResponsesSession(store, Catalog(POLICY))
    await turn(s, "a", {"input": "secret"}, "resp_1")
    tenant, rid = "a", "resp_1"
    if case == "unknown":
        rid = "resp_never"
    elif case == "other_tenant":
        tenant = "b"
    elif case == "deleted":
        assert await store.delete("a", "resp_1")
    else:
        now[0] += 61
    with pytest.raises(ApiError) as e:
        await s.before(request({"input": "more", "previous_response_id": rid}), tenant)
    err = e.value
    assert (err.status, err.code, err.param) == (
        400,
        "previous_response_not_found",
        "previous_response_id",
    )
    assert err.message == f"Previous response with id '{rid}' not found."


async def test_item_references_resolve_from_this_tenant_only(session: ResponsesSession) -> None:
    await turn(session, "a", {"input": "remember this"}, "resp_1", "noted")
    body = {
        "input": [
            {"type": "item_reference", "id": "msg_resp_1"},
            {"role": "user", "content": "and?"},
        ]
    }
    req = await session.before(request(body), "a")
    assert req.body["input"][0]["content"][0]["text"] == "noted"
    assert req.body["input"][1] == {"role": "user", "content": "and?"}
    assert req.turns == 2 and req.prompt_chars == len("notedand?")
    for tenant, ref, index in (("b", "msg_resp_1", 0), ("a", "msg_nope", 1)):
        bad = {"input": [{"role": "user", "content": "x"}, {"type": "item_reference", "id": ref}]}
        bad["input"] = bad["input"][1 - index :] if index == 0 else bad["input"]
        with pytest.raises(ApiError) as e:
            await session.before(request(bad), tenant)
        assert (e.value.status, e.value.param) == (400, f"input[{index}].id")
        assert e.value.message == f"Item with id '{ref}' not found."


async def test_an_input_id_listed_by_the_store_can_be_referenced(session: ResponsesSession) -> None:
    await turn(session, "a", {"input": "first words"}, "resp_1")
    rec = await session.store.get("a", "resp_1")
    assert rec is not None
    req = await session.before(request({"input": [{"id": rec.input_ids[0]}]}), "a")
    # The id is ours: the item goes upstream as the client first sent it, without it.
    assert req.body["input"] == as_items("first words")


async def test_auto_follows_the_model_that_answered(session: ResponsesSession) -> None:
    first = await session.before(request({"model": "auto", "input": "hi"}), "a")
    first.state[STATE_MODEL] = "gpt-4.1-mini"  # the face's Meta.model
    session.after(first, "a", answer("resp_1", "hello", model="gpt-4.1-mini-2025-04-14"))
    await session.drain(5)
    follow = await session.before(
        request({"model": "auto", "input": "more", "previous_response_id": "resp_1"}), "a"
    )
    assert follow.model == "gpt-4.1-mini"
    explicit = await session.before(
        request({"model": "gpt-4o", "input": "more", "previous_response_id": "resp_1"}), "a"
    )
    assert explicit.model == "gpt-4o"


async def test_the_model_is_read_back_from_the_answer_without_the_face() -> None:
    s = ResponsesSession(MemoryStore(3600, 100, 1 << 20), Catalog(POLICY))
    await turn(s, "a", {"input": "hi"}, "resp_1")  # the answer says gpt-4.1-mini
    rec = await s.store.get("a", "resp_1")
    assert rec is not None and (rec.model, rec.provider) == ("gpt-4.1-mini", "openai")


async def test_affinity_stays_within_the_tenants_models() -> None:
    text = "tenants:\n  a: {allowed_models: [gpt-4o-mini]}\n"
    policy = POLICY.model_copy(update={"tenants": load_policy_text(text)})
    s = ResponsesSession(MemoryStore(3600, 100, 1 << 20), Catalog(policy))
    await turn(s, "a", {"input": "hi"}, "resp_1")  # answered by gpt-4.1-mini
    follow = await s.before(
        request({"model": "auto", "input": "x", "previous_response_id": "resp_1"}), "a"
    )
    assert follow.model == "auto"


def load_policy_text(yaml_text: str) -> Any:
    import yaml

    from tollgate_common.policy import TenantPolicy

    raw = yaml.safe_load(yaml_text)["tenants"]
    return {name: TenantPolicy(**rules) for name, rules in raw.items()}


async def test_store_false_keeps_nothing(session: ResponsesSession) -> None:
    await turn(session, "a", {"input": "hi", "store": False}, "resp_1")
    assert await session.store.get("a", "resp_1") is None


async def test_a_failing_store_is_counted_never_raised() -> None:
    drops: list[str] = []
    s = ResponsesSession(FailingStore(3600, 100, 1 << 20), Catalog(POLICY), on_drop=drops.append)
    await turn(s, "a", {"input": "hi"}, "resp_1")
    assert drops == ["error"] and s.dropped["error"] == 1
    s.after(request({"input": "hi"}), "a", b"not a response")
    await s.drain(5)
    assert drops == ["error", "invalid"]


async def test_an_oversize_answer_is_counted() -> None:
    s = ResponsesSession(MemoryStore(3600, 100, 1024), Catalog(POLICY))
    await turn(s, "a", {"input": "hi"}, "resp_1", text="x" * 2000)
    assert s.dropped["oversize"] == 1
    assert await s.store.get("a", "resp_1") is None


def sse(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **data}) + b"\n\n"


async def test_watch_passes_events_and_keeps_the_completed_response(
    session: ResponsesSession,
) -> None:
    response = orjson.loads(answer("resp_s", "streamed"))
    events = [
        sse("response.created", {"response": {**response, "status": "in_progress"}}),
        sse("response.output_text.delta", {"delta": "streamed"}),
        sse("response.completed", {"response": response, "x_tollgate_cost_usd": 0.1}),
    ]
    closed: list[bool] = []

    async def upstream() -> AsyncIterator[bytes]:
        try:
            for e in events:
                yield e
        finally:
            closed.append(True)

    req = await session.before(request({"input": "hi", "stream": True}), "a")
    seen = [e async for e in session.watch(req, "a", upstream())]
    assert seen == events
    assert closed == [True]
    await session.drain(5)
    rec = await session.store.get("a", "resp_s")
    assert rec is not None and orjson.loads(rec.response) == response
    assert rec.input_items == as_items("hi")


async def test_a_continuation_names_what_it_continued_whole_and_streamed(
    session: ResponsesSession,
) -> None:
    """The upstream got the whole conversation, not the id: the session puts it back."""
    await turn(session, "a", {"model": "auto", "input": "My name is Ada."}, "resp_1")
    follow = {"model": "auto", "input": "And mine?", "previous_response_id": "resp_1"}
    req = await session.before(request(follow), "a")
    sent = orjson.loads(session.after(req, "a", answer("resp_2", "Ada")))
    assert sent["previous_response_id"] == "resp_1"
    await session.drain(5)
    rec = await session.store.get("a", "resp_2")
    assert rec is not None and orjson.loads(rec.response)["previous_response_id"] == "resp_1"

    streamed = await session.before(request({**follow, "stream": True}), "a")
    response = orjson.loads(answer("resp_3", "Ada"))
    delta = sse("response.output_text.delta", {"delta": "Ada"})

    async def upstream() -> AsyncIterator[bytes]:
        yield sse("response.created", {"response": {**response, "status": "in_progress"}})
        yield delta
        yield sse("response.completed", {"response": response})

    seen = [e async for e in session.watch(streamed, "a", upstream())]
    assert seen[1] == delta  # events without a response snapshot pass as they came
    for ev in (seen[0], seen[2]):
        data = orjson.loads(ev.split(b"data: ", 1)[1])
        assert data["response"]["previous_response_id"] == "resp_1"
    plain = await session.before(request({"model": "auto", "input": "hi"}), "a")
    assert orjson.loads(session.after(plain, "a", answer("resp_4", "x")))["id"] == "resp_4"


async def test_a_stream_left_early_closes_what_it_wraps(session: ResponsesSession) -> None:
    closed: list[bool] = []

    async def upstream() -> AsyncIterator[bytes]:
        try:
            while True:
                yield sse("response.output_text.delta", {"delta": "x"})
        finally:
            closed.append(True)

    req = await session.before(request({"input": "hi", "stream": True}), "a")
    watched = session.watch(req, "a", upstream())
    await anext(watched)
    await watched.aclose()  # type: ignore[attr-defined]
    assert closed == [True]


def test_terminal_response_reads_only_terminal_events() -> None:
    done = sse("response.incomplete", {"response": {"id": "resp_1", "object": "response"}})
    assert orjson.loads(terminal_response(done) or b"") == {"id": "resp_1", "object": "response"}
    delta = sse("response.output_text.delta", {"delta": "response.completed"})
    assert terminal_response(delta) is None
    assert terminal_response(b"event: x\ndata: {oops response.completed\n\n") is None


def test_input_items_pages_are_openai_lists() -> None:
    items: list[dict[str, Any]] = [
        {"role": "user", "content": "one"},
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "two", "annotations": []}],
            "status": "completed",
        },
        {"role": "assistant", "content": "three"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "four"}]},
    ]
    ids = ["msg_1", "msg_2", "msg_3", "msg_4"]
    first = page(items, ids, 2, "desc", None)
    assert_valid("ResponseItemList", first)
    assert [d["id"] for d in first["data"]] == ["msg_4", "msg_3"]
    assert (first["first_id"], first["last_id"], first["has_more"]) == ("msg_4", "msg_3", True)
    rest = page(items, ids, 2, "desc", "msg_3")
    assert [d["id"] for d in rest["data"]] == ["msg_2", "msg_1"] and not rest["has_more"]
    asc = page(items, ids, 20, "asc", None)
    assert_valid("ResponseItemList", asc)
    assert [d["id"] for d in asc["data"]] == ids and not asc["has_more"]
    with pytest.raises(ApiError) as e:
        page(items, ids, 2, "asc", "msg_nope")
    assert e.value.param == "after"


# --- the routes, in process -------------------------------------------------------------


class Rejections:
    def __init__(self) -> None:
        self.reasons: list[str] = []

    def rejected(self, reason: str) -> None:
        self.reasons.append(reason)


@pytest.fixture
async def routes(
    session: ResponsesSession,
) -> AsyncIterator[tuple[httpx2.AsyncClient, ResponsesSession, Rejections]]:
    app = FastAPI()
    metrics = Rejections()
    keys = KeyRing(
        {hashlib.sha256(k.encode()).digest(): t for t, k in (("a", KEY_A), ("b", KEY_B))}
    )
    session.mount(app, SimpleNamespace(keys=keys, metrics=metrics))  # type: ignore[arg-type]
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://gw") as client:
        yield client, session, metrics


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def test_get_list_and_delete_a_stored_response(routes: Any) -> None:
    client, s, metrics = routes
    await turn(s, "a", {"input": "one"}, "resp_1", "1")
    await turn(s, "a", {"input": "two", "previous_response_id": "resp_1"}, "resp_2", "2")
    got = await client.get("/v1/responses/resp_2", headers=auth(KEY_A))
    stored = {**orjson.loads(answer("resp_2", "2")), "previous_response_id": "resp_1"}
    assert got.status_code == 200 and got.json() == stored
    listing = await client.get("/v1/responses/resp_2/input_items", headers=auth(KEY_A))
    assert listing.status_code == 200
    data = listing.json()
    assert_valid("ResponseItemList", data)
    assert [d["role"] for d in data["data"]] == ["user", "assistant", "user"]  # newest first
    assert data["data"][1]["id"] == "msg_resp_1"
    asc = await client.get(
        "/v1/responses/resp_2/input_items", params={"order": "asc", "limit": 1}, headers=auth(KEY_A)
    )
    assert asc.json()["data"][0]["content"][0]["text"] == "one" and asc.json()["has_more"]
    gone = await client.delete("/v1/responses/resp_2", headers=auth(KEY_A))
    assert gone.status_code == 200
    assert gone.json() == {"id": "resp_2", "object": "response", "deleted": True}
    for method, path in (("GET", "/v1/responses/resp_2"), ("DELETE", "/v1/responses/resp_2")):
        again = await client.request(method, path, headers=auth(KEY_A))
        assert again.status_code == 404
        assert again.json()["error"]["message"] == "Response with id 'resp_2' not found."
    assert metrics.reasons == ["not_found", "not_found"]


async def test_another_tenants_response_is_not_found(routes: Any) -> None:
    client, s, _ = routes
    await turn(s, "a", {"input": "mine"}, "resp_1")
    theirs = [
        await client.get("/v1/responses/resp_1", headers=auth(KEY_B)),
        await client.get("/v1/responses/resp_1/input_items", headers=auth(KEY_B)),
        await client.delete("/v1/responses/resp_1", headers=auth(KEY_B)),
    ]
    unknown = await client.get("/v1/responses/resp_never", headers=auth(KEY_B))
    for r in theirs:
        assert r.status_code == 404
        # Word for word what an id never stored gets, but for the id.
        assert r.json() == orjson.loads(unknown.text.replace("resp_never", "resp_1"))
    assert (await client.get("/v1/responses/resp_1", headers=auth(KEY_A))).status_code == 200


async def test_routes_need_a_key_and_check_their_query(routes: Any) -> None:
    client, s, metrics = routes
    await turn(s, "a", {"input": "mine"}, "resp_1")
    for headers in ({}, auth("sk-wrong")):
        r = await client.get("/v1/responses/resp_1", headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert (await client.delete("/v1/responses/resp_1")).status_code == 401
    path = "/v1/responses/resp_1/input_items"
    for params, param in (
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "x"}, "limit"),
        ({"order": "up"}, "order"),
        ({"after": "msg_nope"}, "after"),
    ):
        r = await client.get(path, params=params, headers=auth(KEY_A))
        assert r.status_code == 400 and r.json()["error"]["param"] == param, params
    r = await client.get("/v1/responses/resp_1", params={"stream": "true"}, headers=auth(KEY_A))
    assert r.status_code == 400 and r.json()["error"]["param"] == "stream"
    assert metrics.reasons.count("auth") == 3


async def test_a_store_that_is_down_is_a_503_not_a_not_found() -> None:
    class Down(MemoryStore):
        async def get(self, tenant: str, response_id: str) -> Record | None:
            raise StoreUnavailable("down")

    s = ResponsesSession(Down(3600, 100, 1 << 20), Catalog(POLICY))
    with pytest.raises(ApiError) as e:
        await s.before(request({"input": "x", "previous_response_id": "resp_1"}), "a")
    assert e.value.status == 503 and e.value.code == "responses_store_unavailable"


async def test_saves_never_hold_up_the_answer(session: ResponsesSession) -> None:
    gate = asyncio.Event()

    class Slow(MemoryStore):
        async def put(self, tenant: str, record: Record) -> bool:
            await gate.wait()
            return await super().put(tenant, record)

    s = ResponsesSession(Slow(3600, 100, 1 << 20), Catalog(POLICY))
    req = await s.before(request({"input": "hi"}), "a")
    s.after(req, "a", answer("resp_1", "ok"))  # returns while the store waits
    assert await s.store.get("a", "resp_1") is None
    gate.set()
    await s.drain(5)
    assert await s.store.get("a", "resp_1") is not None


async def test_a_follow_up_finds_a_save_still_under_way() -> None:
    class Slow(MemoryStore):
        async def put(self, tenant: str, record: Record) -> bool:
            await asyncio.sleep(0.05)
            return await super().put(tenant, record)

    s = ResponsesSession(Slow(3600, 100, 1 << 20), Catalog(POLICY))
    first = await s.before(request({"input": "hi"}), "a")
    s.after(first, "a", answer("resp_1", "ok"))
    follow = await s.before(request({"input": "more", "previous_response_id": "resp_1"}), "a")
    assert len(follow.body["input"]) == 3


def test_features_count_what_the_router_and_budget_read() -> None:
    f = features(
        [
            {"role": "system", "content": "sys"},
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "look"},
                    {"type": "input_image", "image_url": "u"},
                ],
            },
            {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c", "output": "42"},
        ]
    )
    assert (f.turns, f.chars, f.last_user_text) == (4, len("syslook42"), "look")
    assert f.extra_tokens > 765  # the image, and the call's JSON


async def test_an_image_earlier_in_the_conversation_keeps_the_follow_up_on_vision_models() -> None:
    s = ResponsesSession(MemoryStore(3600, 100, 1 << 20), Catalog(POLICY))
    image = [{"type": "input_image", "image_url": "data:image/png;base64,AAAA"}]
    first = await s.before(request({"input": [{"role": "user", "content": image}]}), "a")
    assert features(first.body["input"]).images
    s.after(first, "a", answer("resp_1", "a cat"))
    follow = await s.before(
        request({"input": "what colour?", "previous_response_id": "resp_1"}), "a"
    )
    assert follow.has_images
