"""The followed policy: new models priced and named, cache settings read, last good kept."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from tollgate.router.v1 import router_pb2
from tollgate_common.policy import DEFAULT_POLICY_FILE, parse_policy
from tollgate_orchestrator.catalog import Catalog
from tollgate_orchestrator.clients import RouterClient
from tollgate_orchestrator.types import Whole
from tollgate_orchestrator.validation import Limits, parse_chat_request

from .fakes import POLICY, Rig

TEXT = DEFAULT_POLICY_FILE.read_text()


def policy(**cache: Any) -> Any:
    text = TEXT.replace('version: "default-2026-12-03"', 'version: "v2"').replace(
        "models:\n",
        "models:\n  acme: {provider: openai, input_per_mtok: 1, cached_input_per_mtok: 0.5, "
        "output_per_mtok: 2}\n",
    )
    if "enabled" in cache:
        text = text.replace("enabled: true", f"enabled: {str(cache['enabled']).lower()}")
    if "ttl" in cache:
        text = text.replace("ttl_seconds: 3600", f"ttl_seconds: {cache['ttl']}")
    return parse_policy(text)


def request(model: str = "gpt-4o-mini") -> Any:
    body = {"model": model, "temperature": 0, "messages": [{"role": "user", "content": "hi"}]}
    return parse_chat_request(body, Limits())


async def test_cache_disabled_by_the_policy_neither_looks_up_nor_stores() -> None:
    rig = Rig(["gpt-4o-mini"], policy=policy(enabled=False))
    for _ in range(2):
        reply = await rig.handle(request())
        assert isinstance(reply, Whole) and reply.meta.cache == "bypass"
        await rig.pipeline.drain_background(1)
    assert rig.cache.entries == {}
    assert rig.upstream.attempts == {"gpt-4o-mini": 2}


async def test_the_policy_ttl_goes_with_every_store() -> None:
    rig = Rig(["gpt-4o-mini"], policy=policy(ttl=120))
    await rig.handle(request())
    await rig.pipeline.drain_background(1)
    assert list(rig.cache.ttls.values()) == [120]


async def test_a_followed_model_is_a_label_and_priced_while_degraded() -> None:
    rig = Rig(["gpt-4o-mini"])
    assert rig.metrics.model("acme") == "other"
    assert rig.catalog.apply(policy())
    assert rig.metrics.model("acme") == "acme"
    assert rig.metrics.provider("openai") == "openai"
    assert not rig.catalog.apply(policy())  # the same policy again changes nothing
    target = rig.catalog.local("acme")
    assert target is not None and target.entry.output_per_mtok == 2


class _Stub:
    def __init__(self, resp: router_pb2.GetPolicyResponse | Exception) -> None:
        self.resp = resp

    async def GetPolicy(self, req: Any, **_: Any) -> router_pb2.GetPolicyResponse:
        if isinstance(self.resp, Exception):
            raise self.resp
        return self.resp


def client(resp: router_pb2.GetPolicyResponse | Exception, catalog: Catalog) -> RouterClient:
    rig = Rig(["gpt-4o-mini"])
    return RouterClient(_Stub(resp), catalog, 0.1, None, rig.metrics)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "resp",
    [
        router_pb2.GetPolicyResponse(version="v3", policy_yaml="models: [not, a, policy]"),
        router_pb2.GetPolicyResponse(version="v3", policy_yaml=""),
        grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata()),
    ],
)
async def test_a_bad_or_missing_router_policy_keeps_the_last_good_one(resp: Any) -> None:
    catalog = Catalog(POLICY)
    assert not await client(resp, catalog).refresh()
    assert catalog.policy is POLICY


async def test_a_newer_router_policy_is_followed() -> None:
    catalog = Catalog(POLICY)
    resp = router_pb2.GetPolicyResponse(version="v2", policy_yaml=TEXT.replace("default-", "x-"))
    assert await client(resp, catalog).refresh()
    assert catalog.version == "v2"


def test_a_routed_model_keeps_its_cache_write_prices() -> None:
    """The router's answer carries a table's cache-write prices; unset ones keep the default."""
    from tollgate_common.policy import cost_usd
    from tollgate_router.service import build_targets

    targets = build_targets(POLICY)
    catalog = Catalog(POLICY)
    claude = catalog.remote(targets["claude-sonnet-4-5"])
    local = catalog.local("claude-sonnet-4-5")
    assert local is not None
    assert claude.entry.cache_write_1h_per_mtok == local.entry.cache_write_1h_per_mtok == 6.0
    args = (1_000_000, 0, 0)
    kw = {"cache_write_tokens": 1_000_000, "cache_write_1h_tokens": 1_000_000}
    assert cost_usd(claude.entry, *args, **kw) == cost_usd(local.entry, *args, **kw) == 6.0
    stripped = router_pb2.ModelTarget()
    stripped.CopyFrom(targets["claude-sonnet-4-5"])
    stripped.price.ClearField("cache_write_1h_per_mtok")  # an older router's answer
    old = catalog.remote(stripped)
    assert old.entry.cache_write_1h_per_mtok is None
