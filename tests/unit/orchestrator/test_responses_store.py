"""The stored Responses: per tenant, capped, expiring, refusing what is too large; in
memory and in a real redis-server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from tests.conftest import RedisServer, start_redis
from tollgate_common.config import load_settings
from tollgate_orchestrator.config import OrchestratorSettings
from tollgate_orchestrator.responses_store import (
    PREFIX,
    MemoryStore,
    Record,
    RedisStore,
    ResponseStore,
    StoreUnavailable,
    open_store,
    tenant_prefix,
)
from tools.stack import free_port

TTL = 3600


def record(rid: str, text: str = "hello", pad: int = 0) -> Record:
    response = {
        "id": rid,
        "object": "response",
        "model": "gpt-4o-mini",
        "output": [
            {
                "id": f"msg_out_{rid}",
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": "x" * pad, "annotations": []}],
            }
        ],
    }
    items: list[dict[str, Any]] = [{"role": "user", "content": text}]
    rec = Record.build(
        orjson.dumps(response), items, [f"msg_in_{rid}"], "gpt-4o-mini", "openai", 1.0
    )
    assert rec is not None
    return rec


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Any:
    server: RedisServer = start_redis(tmp_path_factory.mktemp("responses-redis"))
    yield server.url
    server.proc.kill()
    server.proc.wait(5)


Factory = Callable[..., ResponseStore]


@pytest.fixture(params=["memory", "redis"])
async def make(request: pytest.FixtureRequest) -> AsyncIterator[Factory]:
    made: list[ResponseStore] = []

    def factory(cap: int = 100, max_bytes: int = 1 << 20) -> ResponseStore:
        store: ResponseStore
        if request.param == "memory":
            store = MemoryStore(TTL, cap, max_bytes)
        else:
            url = request.getfixturevalue("redis_url")
            redis.Redis.from_url(url).flushdb()
            store = RedisStore(url, TTL, cap, max_bytes)
        made.append(store)
        return store

    yield factory
    for s in made:
        await s.close()


async def test_a_record_comes_back_as_stored(make: Factory) -> None:
    store = make()
    rec = record("resp_1")
    assert await store.put("dev", rec)
    got = await store.get("dev", "resp_1")
    assert got is not None
    assert orjson.loads(got.response) == orjson.loads(rec.response)
    assert got.input_items == rec.input_items and got.input_ids == ["msg_in_resp_1"]
    assert got.output_ids == ["msg_out_resp_1"]
    assert (got.model, got.provider) == ("gpt-4o-mini", "openai")
    assert await store.get("dev", "resp_unknown") is None


async def test_tenants_are_apart(make: Factory) -> None:
    store = make()
    await store.put("dev", record("resp_1"))
    assert await store.get("other", "resp_1") is None
    assert await store.item("other", "msg_in_resp_1") is None
    assert not await store.delete("other", "resp_1")
    assert await store.get("dev", "resp_1") is not None  # the failed delete changed nothing
    await store.put("other", record("resp_1", text="theirs"))
    mine, theirs = await store.get("dev", "resp_1"), await store.get("other", "resp_1")
    assert mine is not None and theirs is not None
    assert mine.input_items[0]["content"] == "hello"
    assert theirs.input_items[0]["content"] == "theirs"


async def test_items_resolve_by_id_until_their_record_is_deleted(make: Factory) -> None:
    store = make()
    await store.put("dev", record("resp_1"))
    assert await store.item("dev", "msg_in_resp_1") == {"role": "user", "content": "hello"}
    out = await store.item("dev", "msg_out_resp_1")
    assert out is not None and out["role"] == "assistant"
    assert await store.item("dev", "msg_nope") is None
    assert await store.delete("dev", "resp_1")
    assert await store.get("dev", "resp_1") is None
    assert await store.item("dev", "msg_in_resp_1") is None
    assert not await store.delete("dev", "resp_1")  # once


async def test_a_record_over_max_bytes_is_not_kept_and_is_counted(make: Factory) -> None:
    store = make(max_bytes=2048)
    assert await store.put("dev", record("resp_small"))
    assert not await store.put("dev", record("resp_big", pad=4000))
    assert await store.get("dev", "resp_big") is None
    assert store.dropped["oversize"] == 1
    assert await store.get("dev", "resp_small") is not None


async def test_the_cap_per_tenant_drops_the_oldest(make: Factory) -> None:
    store = make(cap=2)
    for n in range(3):
        await store.put("dev", record(f"resp_{n}"))
        await asyncio.sleep(0.002)  # distinct stored times for Redis' index
    await store.put("other", record("resp_x"))
    assert await store.get("dev", "resp_0") is None
    assert await store.get("dev", "resp_1") is not None
    assert await store.get("dev", "resp_2") is not None
    assert await store.get("other", "resp_x") is not None  # another tenant's cap


async def test_what_a_caller_changes_is_not_what_the_next_one_reads(make: Factory) -> None:
    store = make()
    await store.put("dev", record("resp_1"))
    first = await store.get("dev", "resp_1")
    assert first is not None
    first.input_items[0]["content"] = "changed"
    again = await store.get("dev", "resp_1")
    assert again is not None and again.input_items[0]["content"] == "hello"


# --- memory ----------------------------------------------------------------------------


async def test_memory_records_expire_after_the_ttl() -> None:
    clock = Clock()
    store = MemoryStore(60, 100, 1 << 20, clock=clock)
    await store.put("dev", record("resp_1"))
    clock.now += 59
    assert await store.get("dev", "resp_1") is not None
    assert await store.item("dev", "msg_in_resp_1") is not None
    clock.now += 2
    assert await store.get("dev", "resp_1") is None
    assert await store.item("dev", "msg_in_resp_1") is None
    assert not await store.delete("dev", "resp_1")


async def test_memory_cap_is_least_recently_used() -> None:
    store = MemoryStore(TTL, 2, 1 << 20)
    await store.put("dev", record("resp_a"))
    await store.put("dev", record("resp_b"))
    assert await store.get("dev", "resp_a") is not None  # a is now the most recent
    await store.put("dev", record("resp_c"))
    assert await store.get("dev", "resp_b") is None
    assert await store.get("dev", "resp_a") is not None
    assert await store.item("dev", "msg_in_resp_b") is None  # its items went with it


async def test_memory_total_bytes_take_from_the_biggest_tenant() -> None:
    one = len(record("resp_0", pad=1000).encode())
    store = MemoryStore(TTL, 100, 1 << 20, max_total_bytes=one * 4)
    for n in range(3):
        await store.put("heavy", record(f"resp_{n}", pad=1000))
    await store.put("light", record("resp_l", pad=1000))
    await store.put("light", record("resp_m", pad=1000))  # over the total: heavy gives way
    assert await store.get("heavy", "resp_0") is None
    assert await store.get("heavy", "resp_1") is not None
    assert await store.get("light", "resp_l") is not None
    assert await store.get("light", "resp_m") is not None


def test_a_response_that_is_not_one_makes_no_record() -> None:
    for body in (b"nope", b"[]", b'{"object": "list", "id": "x"}', b'{"object": "response"}'):
        assert Record.build(body, [], [], "", "", 0.0) is None
    assert Record.decode(b'{"v": 99}') is None
    assert Record.decode(b"garbage") is None


def test_output_items_without_an_id_get_one() -> None:
    body = orjson.dumps(
        {"id": "resp_1", "object": "response", "output": [{"type": "function_call"}]}
    )
    rec = Record.build(body, [], [], "", "", 0.0)
    assert rec is not None and rec.output_ids[0].startswith("fc_")
    assert rec.item(rec.output_ids[0]) == {"type": "function_call"}


# --- redis -----------------------------------------------------------------------------


async def test_redis_keys_hash_the_tenant_and_carry_the_ttl(redis_url: str) -> None:
    raw = redis.Redis.from_url(redis_url, decode_responses=True)
    raw.flushdb()
    store = RedisStore(redis_url, TTL, 100, 1 << 20)
    try:
        await store.put("team-secret", record("resp_1"))
    finally:
        await store.close()
    keys = sorted(str(k) for k in raw.keys("*"))
    assert keys and all(k.startswith(PREFIX) for k in keys)
    assert not any("team-secret" in k for k in keys)
    p = tenant_prefix("team-secret")
    assert set(keys) == {
        p + "r:resp_1",
        p + "index",
        p + "i:msg_in_resp_1",
        p + "i:msg_out_resp_1",
    }
    for k in keys:
        assert 0 < raw.ttl(k) <= TTL


async def test_redis_records_expire(redis_url: str) -> None:
    store = RedisStore(redis_url, 1, 100, 1 << 20)
    try:
        await store.put("dev", record("resp_short"))
        assert await store.get("dev", "resp_short") is not None
        deadline = time.monotonic() + 10
        # Redis expires the key on its own clock: nothing to wait on but the key.
        while await store.get("dev", "resp_short") is not None and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        assert await store.get("dev", "resp_short") is None
        assert await store.item("dev", "msg_in_resp_short") is None
    finally:
        await store.close()


async def test_a_redis_that_does_not_answer_is_store_unavailable() -> None:
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", TTL, 100, 1 << 20, timeout=0.2)
    try:
        for call in (
            store.get("dev", "resp_1"),
            store.put("dev", record("resp_1")),
            store.delete("dev", "resp_1"),
            store.item("dev", "msg_1"),
        ):
            with pytest.raises(StoreUnavailable):
                await call
    finally:
        await store.close()


def test_open_store_picks_redis_when_configured(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import os

    for k in list(os.environ):
        if k.startswith("TOLLGATE_"):
            monkeypatch.delenv(k)
    plain = load_settings(OrchestratorSettings, "orchestrator")
    assert isinstance(open_store(plain), MemoryStore)
    shared = load_settings(
        OrchestratorSettings, "orchestrator", responses_redis_url="redis://127.0.0.1:1/0"
    )
    assert isinstance(open_store(shared), RedisStore)
