"""Cache keys change with every answer-changing field and nothing else."""

from __future__ import annotations

from tollgate_common.cachekey import BYPASS, CacheMode, cache_key, cache_mode

BODY = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}


def test_same_request_same_key_regardless_of_dict_order_and_stream() -> None:
    reordered = {"temperature": 0, "messages": [{"content": "hi", "role": "user"}]}
    assert cache_key("gpt-4o", BODY, "t") == cache_key("gpt-4o", {**reordered, "stream": True}, "t")


def test_answer_changing_fields_change_the_key() -> None:
    base = cache_key("gpt-4o", BODY, "t")
    assert cache_key("gpt-4o-mini", BODY, "t") != base
    assert cache_key("gpt-4o", {**BODY, "max_tokens": 5}, "t") != base
    assert cache_key("gpt-4o", {**BODY, "seed": 1}, "t") != base
    assert cache_key("gpt-4o", {**BODY, "tools": [{"type": "function"}]}, "t") != base
    assert cache_key("gpt-4o", BODY, "other-tenant") != base


def test_cache_mode() -> None:
    assert cache_mode(BODY, None, False) == CacheMode(True, True)
    assert cache_mode({**BODY, "temperature": 0.7}, None, False) == BYPASS
    assert cache_mode({**BODY, "temperature": 0.7, "seed": 3}, None, False).lookup
    assert cache_mode({**BODY, "temperature": 0.7}, None, True).lookup
    assert cache_mode(BODY, "no-store", False) == BYPASS
    assert cache_mode(BODY, "max-age=0, no-cache", False) == CacheMode(False, True)
