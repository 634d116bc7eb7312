"""Cache entries are signed by the orchestrator that stored them: an entry planted or
altered in the cache service is answered as a miss (H-2, defence in depth behind the
cache's caller authentication)."""

from __future__ import annotations

import pytest

from tollgate.cache.v1 import cache_pb2
from tollgate_orchestrator.integrity import Signer

from .test_clients import FakeCacheServicer, FakeRouterServicer, Rig, serve_fakes

KEY = "a" * 64


def entry(**kw: object) -> cache_pb2.Entry:
    base: dict[str, object] = {
        "body": b'{"choices":[]}',
        "model": "gpt-4o-mini",
        "usage": cache_pb2.Usage(prompt_tokens=10, completion_tokens=5),
        "cost_usd": 0.001,
        "created_unix": 1,
    }
    return cache_pb2.Entry(**{**base, **kw})  # type: ignore[arg-type]


def test_a_signature_covers_every_field_a_hit_uses() -> None:
    s = Signer(b"k" * 32)
    e = entry()
    s.sign(KEY, e)
    assert s.verify(KEY, e)
    assert not s.verify("b" * 64, e)  # filed under another key (another tenant's)
    for change in (
        {"body": b'{"choices":[1]}'},
        {"model": "gpt-4o"},
        {"cost_usd": 99.0},
        {"usage": cache_pb2.Usage(prompt_tokens=11, completion_tokens=5)},
    ):
        altered = entry(**change)
        altered.tag = e.tag
        assert not s.verify(KEY, altered), change
    assert not Signer(b"x" * 32).verify(KEY, e)  # another deployment's key
    with pytest.raises(ValueError):
        Signer(b"short")


async def test_a_planted_entry_is_a_miss() -> None:
    cache = FakeCacheServicer()
    server = await serve_fakes(FakeRouterServicer(), cache)
    rig = Rig(server.port)
    try:
        assert await rig.cache.store(KEY, b"{}", "m", cache_pb2.Usage(prompt_tokens=3), 0.5)
        result, got = await rig.cache.lookup(KEY, "m")
        assert result == "hit" and got is not None
        cache.entries[KEY] = entry(body=b'{"choices":[{"message":{"content":"phish"}}]}')
        assert await rig.cache.lookup(KEY, "m") == ("invalid", None)
        forged = entry()
        forged.tag = got.tag  # a real tag on other content
        cache.entries[KEY] = forged
        assert await rig.cache.lookup(KEY, "m") == ("invalid", None)
    finally:
        await rig.channel.close()
        await server.stop(0)
