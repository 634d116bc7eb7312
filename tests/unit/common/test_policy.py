"""The policy model: the shipped default is valid, bad policies name the field, cost math."""

from __future__ import annotations

import pytest

from tollgate_common.policy import (
    DEFAULT_POLICY_FILE,
    INTENTS,
    TIERS,
    PolicyError,
    cost_usd,
    load_policy,
    parse_policy,
)


def default_text() -> str:
    return DEFAULT_POLICY_FILE.read_text()


def test_default_policy_covers_every_intent_and_tier() -> None:
    p = load_policy()
    for intent in INTENTS:
        for tier in TIERS:
            assert p.chain(intent, tier)
    assert p.models["gpt-4o"].input_per_mtok == 2.5  # from the dated price table


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (
            ("large:  [claude-sonnet-4-5, gpt-5,", "large:  [claude-9, gpt-5,"),
            "routes.code.large[0]",
        ),
        (("default_model: gpt-4o-mini", "default_model: nope"), "default_model"),
        (("ttl_seconds: 3600", "ttl_seconds: -5"), "cache.ttl_seconds"),
        (
            ("  gpt-4o:       {provider: openai,", "  gpt-4o:       {provider: azure,"),
            "models.gpt-4o.provider",
        ),
        (("  creative:\n", "  poetry:\n"), "routes.poetry"),
    ],
)
def test_bad_policy_names_the_field(edit: tuple[str, str], field: str) -> None:
    text = default_text()
    assert edit[0] in text
    with pytest.raises(PolicyError, match=field.replace("[", r"\[").replace("]", r"\]")):
        parse_policy(text.replace(*edit))


def test_not_yaml_mapping() -> None:
    with pytest.raises(PolicyError, match="mapping"):
        parse_policy("- just\n- a list\n")


def test_tenant_override_wins() -> None:
    text = default_text() + "tenants:\n  acme:\n    routes:\n      chat:\n        small: [gpt-4o]\n"
    p = parse_policy(text)
    assert p.chain("chat", "small", "acme") == ["gpt-4o"]
    assert p.chain("chat", "small", "other") == [
        "gemini-2.5-flash-lite",
        "gpt-4.1-nano",
        "claude-haiku-4-5",
    ]


def test_cost_uses_cached_rate_for_cached_prompt_tokens() -> None:
    m = load_policy().models["gpt-4o"]  # 2.50 in, 1.25 cached, 10.00 out per 1M
    assert cost_usd(m, 1000, 500) == pytest.approx((1000 * 2.5 + 500 * 10.0) / 1e6)
    assert cost_usd(m, 1000, 0, cached_prompt_tokens=400) == pytest.approx(
        (600 * 2.5 + 400 * 1.25) / 1e6
    )
