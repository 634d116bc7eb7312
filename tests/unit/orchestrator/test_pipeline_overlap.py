"""The cache lookup of a request that names its model overlaps the route, and is
redone with the right key whenever the route's primary is another model."""

from __future__ import annotations

import asyncio
from typing import Any

from tollgate.cache.v1 import cache_pb2
from tollgate_orchestrator.types import LlmRequest, RouteDecision, Whole
from tollgate_orchestrator.validation import Limits, parse_chat_request

from .fakes import FakeCache, FakeRouter, Rig, headers


def request(model: str) -> LlmRequest:
    body = {"model": model, "temperature": 0, "messages": [{"role": "user", "content": "hi"}]}
    return parse_chat_request(body, Limits())


class SlowRouter(FakeRouter):
    """Answers only once the cache saw a lookup: a serial engine would never finish."""

    def __init__(self, chain: list[str], cache: RecordingCache) -> None:
        super().__init__(chain)
        self.cache = cache

    async def route(
        self, req: LlmRequest, tenant: str, request_id: str, downgrade: bool
    ) -> RouteDecision:
        await asyncio.wait_for(self.cache.looked_up.wait(), timeout=5)
        return await super().route(req, tenant, request_id, downgrade)


class RecordingCache(FakeCache):
    def __init__(self) -> None:
        super().__init__()
        self.lookups: list[tuple[str, str]] = []
        self.looked_up = asyncio.Event()

    async def lookup(self, key: str, model: str) -> tuple[str, cache_pb2.Entry | None]:
        self.lookups.append((key, model))
        self.looked_up.set()
        return await super().lookup(key, model)


def rig_with(chain: list[str], slow: bool = False, **settings: Any) -> tuple[Rig, RecordingCache]:
    rig = Rig(chain, **settings)
    cache = RecordingCache()
    rig.pipeline.cache = cache
    if slow:
        rig.pipeline.router = SlowRouter(chain, cache)
    return rig, cache


async def test_a_named_model_is_looked_up_while_the_route_is_pending() -> None:
    rig, cache = rig_with(["gpt-4o-mini", "gpt-4.1-mini"], slow=True)
    first = await rig.handle(request("gpt-4o-mini"), "t", "r1")
    assert isinstance(first, Whole) and first.meta.cache == "miss"
    await rig.pipeline.drain_background(1)
    second = await rig.handle(request("gpt-4o-mini"), "t", "r2")
    assert isinstance(second, Whole) and second.meta.cache == "hit"
    assert [m for _, m in cache.lookups] == ["gpt-4o-mini", "gpt-4o-mini"]  # one per request
    assert rig.value("tollgate_cache_results_total", result="hit", api="chat") == 1
    assert rig.value("tollgate_cache_results_total", result="miss", api="chat") == 1


async def test_another_primary_from_the_router_is_looked_up_under_its_own_key() -> None:
    # The router (say, a newer policy) puts another model first: the early key is wrong.
    rig, cache = rig_with(["gpt-4.1-mini", "gpt-4o-mini"])
    reply = await rig.handle(request("gpt-4o-mini"), "t", "r")
    assert isinstance(reply, Whole) and headers(reply)["x-tollgate-model"] == "gpt-4.1-mini"
    assert cache.lookups[-1][1] == "gpt-4.1-mini"
    await rig.pipeline.drain_background(1)
    (stored,) = cache.entries  # filed under the key of the model that answered
    assert stored == cache.lookups[-1][0]


async def test_auto_waits_for_the_route() -> None:
    rig, cache = rig_with(["gpt-4o-mini"])
    await rig.handle(request("auto"), "t", "r")
    assert cache.lookups == [(cache.lookups[0][0], "gpt-4o-mini")]
    assert rig.router.calls  # routed first, then one lookup
