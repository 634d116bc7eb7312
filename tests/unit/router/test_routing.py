"""decide(): tiers, tenant routes, allowed models, max tier, downgrade, explicit models,
capability and context filters, substitutes, cost and reason."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tollgate_common.policy import INTENTS, Policy, cost_usd, load_policy, parse_policy
from tollgate_router.classifier import Features
from tollgate_router.routing import (
    COMPLETION_TOKENS_GUESS,
    FALLBACK_REASONS,
    ModelNotAllowed,
    RouteInput,
    UnknownModel,
    decide,
)

CODE = "Write a Python function that merges two sorted lists."
TALK = "hi, how are you?"


def _model(price: float, ctx: int, caps: list[str], provider: str = "openai") -> dict[str, Any]:
    return {
        "provider": provider,
        "input_per_mtok": price,
        "cached_input_per_mtok": price / 4,
        "output_per_mtok": price * 4,
        "context_window": ctx,
        "capabilities": caps,
    }


def policy_doc() -> dict[str, Any]:
    return {
        "version": "test-1",
        "providers": {
            "openai": {"base_url": "https://api.openai.com/v1", "api_key_env": "OPENAI_API_KEY"},
            "local": {"base_url": "http://127.0.0.1:8000/v1"},
        },
        "models": {
            "tiny": {
                **_model(0.05, 8_000, ["streaming"], "local"),
                "upstream_model": "llama-3.2-1b",
            },
            "mid": _model(0.4, 128_000, ["tools", "json", "streaming"]),
            "big": _model(2.0, 200_000, ["tools", "json", "streaming"]),
            "huge": _model(5.0, 1_000_000, ["json", "streaming"]),
        },
        "routes": {
            i: {"small": ["tiny", "mid"], "medium": ["mid", "big"], "large": ["big", "mid"]}
            for i in INTENTS
        },
        "default_model": "mid",
        "baseline_model": "big",
        "tenants": {
            "acme": {"routes": {"chat": {"small": ["big"]}}},
            "frugal": {"allowed_models": ["tiny", "mid"], "max_tier": "small"},
            "tinyonly": {"allowed_models": ["tiny"]},
            "nobody": {"allowed_models": []},
        },
    }


@pytest.fixture(scope="module")
def policy() -> Policy:
    return parse_policy(yaml.safe_dump(policy_doc()), prices={})


def route(policy: Policy, text: str = TALK, **kw: Any) -> Any:
    fkeys = {"has_tools", "json_mode", "max_tokens", "estimated_prompt_tokens", "turns"}
    f = Features(last_user_text=text, **{k: v for k, v in kw.items() if k in fkeys})
    rest = {k: v for k, v in kw.items() if k not in fkeys}
    return decide(policy, RouteInput(features=f, **rest))


def test_default_policy_sends_code_and_small_talk_to_different_models() -> None:
    p = load_policy()
    code = route(p, CODE)
    talk = route(p, TALK)
    chain = ("claude-sonnet-4-5", "gpt-4.1", "gemini-2.5-pro")
    assert (code.intent, code.tier, code.chain) == ("code", "medium", chain)
    assert (talk.intent, talk.tier, talk.chain[0]) == ("chat", "small", "gemini-2.5-flash-lite")
    assert code.reason.startswith("intent=code (")
    assert code.reason.endswith("-> tier medium; chain " + " > ".join(chain))
    assert code.baseline == "gpt-4o"
    assert code.fallbacks == () and talk.fallbacks == ()


def test_tiers_pick_their_chains(policy: Policy) -> None:
    assert route(policy, TALK).chain == ("tiny", "mid")
    assert route(policy, CODE).chain == ("mid", "big")
    large = route(policy, "Explain this. " * 50, estimated_prompt_tokens=4000, has_tools=True)
    assert large.tier == "large"
    assert large.chain == ("big", "mid")


def test_tenant_routes_override_and_unknown_tenant_uses_defaults(policy: Policy) -> None:
    assert route(policy, TALK, tenant="acme").chain == ("big",)
    assert route(policy, CODE, tenant="acme").chain == ("mid", "big")  # no override for code
    assert route(policy, TALK, tenant="someone-else").chain == ("tiny", "mid")


def test_max_tier_caps_and_is_counted(policy: Policy) -> None:
    d = route(policy, CODE, tenant="frugal")
    assert d.tier == "small"
    assert d.chain == ("tiny", "mid")
    assert d.fallbacks == ("max_tier",)
    assert "tenant max_tier -> small" in d.reason


def test_allowed_models_filter_the_chain(policy: Policy) -> None:
    d = route(policy, TALK, tenant="tinyonly")
    assert d.chain == ("tiny",)
    assert d.fallbacks == ()  # the primary survived
    d = route(policy, CODE, tenant="tinyonly")  # medium chain is mid > big: both disallowed
    assert d.chain == ("tiny",)
    assert d.fallbacks == ("allowed_models",)
    assert "no chain model fits" in d.reason


def test_downgrade_forces_the_cheapest_tier(policy: Policy) -> None:
    d = route(policy, CODE, downgrade=True)
    assert d.tier == "small"
    assert d.chain[0] == "tiny"
    assert d.fallbacks == ("downgrade",)
    assert "budget downgrade" in d.reason
    # Already small: nothing to downgrade, nothing counted.
    assert route(policy, TALK, downgrade=True).fallbacks == ()


def test_explicit_model_is_primary_with_policy_fallbacks(policy: Policy) -> None:
    d = route(policy, TALK, model="big")
    assert d.chain == ("big", "tiny", "mid")
    assert d.intent == "chat"
    assert d.reason.startswith("model big requested; intent=chat")
    d = route(policy, CODE, model="big")  # medium chain mid > big: big is not repeated
    assert d.chain == ("big", "mid")
    assert d.fallbacks == ()


def test_explicit_model_is_replaced_by_a_budget_downgrade(policy: Policy) -> None:
    d = route(policy, TALK, model="big", downgrade=True)
    assert d.chain[0] == "tiny"
    assert "downgrade" in d.fallbacks


def test_unknown_and_disallowed_explicit_models(policy: Policy) -> None:
    with pytest.raises(UnknownModel, match="'gpt-9'"):
        route(policy, TALK, model="gpt-9")
    with pytest.raises(ModelNotAllowed, match=r"'big'.*'frugal'"):
        route(policy, TALK, model="big", tenant="frugal")
    with pytest.raises(ModelNotAllowed, match="'nobody' is allowed no model"):
        route(policy, TALK, tenant="nobody")


def test_capability_filter_drops_models_without_tools(policy: Policy) -> None:
    d = route(policy, TALK, has_tools=True)
    assert d.chain == ("mid",)
    assert d.fallbacks == ("capability",)
    assert "dropped tiny (capability)" in d.reason
    # The explicit model stays primary even without the capability; only fallbacks filter.
    assert route(policy, TALK, model="tiny", has_tools=True).chain == ("tiny", "mid")


def test_context_window_filter(policy: Policy) -> None:
    # frugal caps at small: tiny > mid, and tiny's 8k window cannot take 7k + 2k.
    d = route(policy, TALK, tenant="frugal", estimated_prompt_tokens=7_000, max_tokens=2_000)
    assert d.chain == ("mid",)
    assert d.fallbacks == ("max_tier", "context_window")
    fits = route(policy, TALK, tenant="frugal", estimated_prompt_tokens=5_000, max_tokens=2_000)
    assert fits.chain == ("tiny", "mid")


def test_empty_chain_picks_cheapest_models_that_fit(policy: Policy) -> None:
    # tinyonly + tools: tiny lacks tools; nothing allowed fits -> closest allowed model.
    d = route(policy, TALK, tenant="tinyonly", has_tools=True)
    assert d.chain == ("tiny",)
    assert "no_eligible_model" in d.fallbacks
    # 500k tokens: neither mid nor big has room; huge is the only catalog model that does.
    d = route(policy, CODE, estimated_prompt_tokens=500_000)
    assert d.chain == ("huge",)
    assert d.fallbacks == ("context_window",)
    assert "no chain model fits; cheapest that do" in d.reason


def test_nothing_fits_anywhere_returns_the_largest_context(policy: Policy) -> None:
    d = route(policy, CODE, estimated_prompt_tokens=5_000_000)
    assert d.chain[0] == "huge"
    assert "no_eligible_model" in d.fallbacks
    assert set(d.fallbacks) <= set(FALLBACK_REASONS)


def test_estimated_cost_uses_prompt_tokens_and_max_tokens(policy: Policy) -> None:
    d = route(policy, TALK, estimated_prompt_tokens=1000)
    primary = policy.models[d.chain[0]]
    assert d.estimated_cost_usd == pytest.approx(cost_usd(primary, 1000, COMPLETION_TOKENS_GUESS))
    d = route(policy, TALK, estimated_prompt_tokens=1000, max_tokens=50)
    assert d.estimated_cost_usd == pytest.approx(cost_usd(policy.models[d.chain[0]], 1000, 50))
    assert d.baseline == "big"


def test_empty_model_means_auto(policy: Policy) -> None:
    assert route(policy, TALK, model="").chain == route(policy, TALK, model="auto").chain
