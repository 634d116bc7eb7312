"""Prompt-cache writes, 5-minute and 1-hour, read from every wire format and priced as such."""

from __future__ import annotations

import pytest

from tollgate_common.policy import ModelEntry, cost_usd
from tollgate_orchestrator.accounting import Usage
from tollgate_orchestrator.dialects import chat, messages, responses

SONNET = ModelEntry(
    provider="anthropic",
    input_per_mtok=3.0,
    cached_input_per_mtok=0.30,
    cache_write_per_mtok=3.75,
    cache_write_1h_per_mtok=6.0,
    output_per_mtok=15.0,
)
# 100 uncached, 1000 read, 200 written for 5 minutes and 300 for an hour; 50 out.
USAGE = Usage(prompt=1600, completion=50, cached=1000, cache_write=500, cache_write_1h=300)
EXPECTED = (100 * 3.0 + 1000 * 0.30 + 200 * 3.75 + 300 * 6.0 + 50 * 15.0) / 1e6


def test_each_kind_of_prompt_token_is_priced_at_its_own_rate() -> None:
    assert cost_usd(SONNET, 1600, 50, 1000, 500, 300) == pytest.approx(EXPECTED, rel=1e-12)


def test_unset_write_prices_are_the_list_multipliers() -> None:
    entry = ModelEntry(
        provider="x", input_per_mtok=1.0, cached_input_per_mtok=0.1, output_per_mtok=0
    )
    assert cost_usd(entry, 300, 0, 0, 300, 100) == pytest.approx((200 * 1.25 + 100 * 2.0) / 1e6)


def test_counts_cannot_exceed_what_contains_them() -> None:
    # More 1-hour writes than writes, more writes than prompt: capped, never negative.
    assert cost_usd(SONNET, 10, 0, 0, 50, 80) == pytest.approx(10 * 6.0 / 1e6)


def test_anthropic_usage_reads_both_write_durations() -> None:
    u = messages.usage_of(
        {
            "input_tokens": 100,
            "cache_read_input_tokens": 1000,
            "cache_creation_input_tokens": 500,
            "cache_creation": {"ephemeral_5m_input_tokens": 200, "ephemeral_1h_input_tokens": 300},
            "output_tokens": 50,
        }
    )
    assert u == USAGE


def test_every_wire_writes_and_reads_the_same_usage() -> None:
    assert chat.usage_of(chat.chat_usage(USAGE)) == USAGE
    assert messages.usage_of(messages.message_usage(USAGE)) == USAGE
    assert (
        responses.usage_of(
            {
                "input_tokens": 1600,
                "output_tokens": 50,
                "input_tokens_details": {
                    "cached_tokens": 1000,
                    "cache_write_tokens": 500,
                    "cache_write_1h_tokens": 300,
                },
            }
        )
        == USAGE
    )


def test_chat_usage_without_writes_is_plain_openai() -> None:
    out = chat.chat_usage(Usage(prompt=10, completion=2, cached=4))
    assert out["prompt_tokens_details"] == {"cached_tokens": 4}
    assert out["total_tokens"] == 12
