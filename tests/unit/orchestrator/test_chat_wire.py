"""The chat wire format refuses answers of odd shapes and never fails on a cached one (L-3)."""

from __future__ import annotations

import orjson

from tollgate_common.cachekey import cache_key
from tollgate_orchestrator.dialects.chat import WIRE


def test_odd_answers_are_not_answers() -> None:
    for body in ({"choices": [None]}, {"choices": [1]}, {"choices": [{"message": "x"}]}):
        assert WIRE.answer(orjson.dumps(body)) is None, body
    ok = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}]}
    assert WIRE.answer(orjson.dumps(ok)) is not None


def test_odd_cached_entries_replay_as_a_miss() -> None:
    for stored in (b'{"choices":[1]}', b'{"choices":[{"message":3}]}', b"[]", b"not json"):
        assert WIRE.replay(stored, include_usage=True) is None, stored


def test_web_search_and_service_tier_are_part_of_the_cache_key() -> None:
    base = {"messages": [{"role": "user", "content": "news?"}], "temperature": 0}
    plain = cache_key("gpt-4o", base, "t")
    assert cache_key("gpt-4o", {**base, "web_search_options": {}}, "t") != plain
    assert cache_key("gpt-4o", {**base, "service_tier": "flex"}, "t") != plain
    assert cache_key("gpt-4o", {**base, "user": "end-user-1"}, "t") == plain
