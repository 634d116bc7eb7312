"""The heuristic classifier: intent per example, confidence bounds, complexity and tiers."""

from __future__ import annotations

import pytest

from tollgate_common.policy import INTENTS, TIERS
from tollgate_router.classifier import (
    Features,
    classify,
    classify_intent,
    complexity_score,
    tier_for,
)

ARTICLE = "The council met on Tuesday to discuss the transit plan and its budget. " * 3


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("Write a Python function that parses a CSV file into a list of dicts.", "code"),
        ("```js\nconst x = await fetch(url);\n```\nwhy is x a promise?", "code"),
        (
            'Traceback (most recent call last):\n  File "app.py", line 3\nKeyError: "id"',
            "code",
        ),
        ("How do I refactor this class so the method is easier to unit test in Java?", "code"),
        ("Solve for x: 3x + 5 = 20", "math"),
        ("Prove that the square root of 2 is irrational.", "math"),
        ("What is the derivative of sin(x) * x^2?", "math"),
        ("Summarize this in three sentences: " + ARTICLE, "summarization"),
        ("tl;dr: " + ARTICLE, "summarization"),
        ("Extract every person, date and amount from this invoice.", "extraction"),
        ("Translate 'where is the train station?' into German.", "translation"),
        ("Can you translate this paragraph to Japanese for me? " + ARTICLE, "translation"),
        ("Write a poem about autumn in Kyoto.", "creative"),
        ("Tell me a short story about a dragon who loves tea.", "creative"),
        ("hi, how are you?", "chat"),
        ("What is the capital of Australia?", "chat"),
        # Lone weak keywords do not leave chat.
        ("My yoga class was cancelled, what should I do instead?", "chat"),
        ("What are the import duties on cars in Germany?", "chat"),
    ],
)
def test_intent_examples(text: str, intent: str) -> None:
    got, confidence, _ = classify_intent(text)
    assert got == intent
    assert 0.0 <= confidence <= 1.0


def test_programming_language_translation_is_code() -> None:
    assert classify_intent("Translate this Python code to JavaScript: def f(x): return x")[0] == (
        "code"
    )


def test_json_mode_points_to_extraction_and_system_text_hints() -> None:
    assert classify_intent("List the people in this text: " + ARTICLE, json_mode=True)[0] == (
        "extraction"
    )
    assert (
        classify_intent(
            "help me with this", "You are an expert Python programmer who debugs code."
        )[0]
        == "code"
    )


def test_clear_signal_is_more_confident_than_a_mixed_one() -> None:
    clear = classify_intent("Summarize this article. Give me the key points. " + ARTICLE)[1]
    mixed = classify_intent("Summarize the Python function and extract its fields")[1]
    assert clear > mixed


def test_every_intent_is_known_and_confidence_bounded() -> None:
    for text in ("", " ", "?" * 10_000, "```" * 3000, "= 1 " * 3000, "\u222b" * 50):
        c = classify(Features(last_user_text=text, system_text=text))
        assert c.intent in INTENTS
        assert c.tier in TIERS
        assert 0.0 <= c.confidence <= 1.0
        assert 0.0 <= c.complexity <= 1.0


def test_huge_input_is_truncated_and_still_classified() -> None:
    text = "Summarize this: " + "word " * 500_000
    assert classify(Features(last_user_text=text)).intent == "summarization"


def test_complexity_grows_with_size_tools_turns_and_output() -> None:
    small = complexity_score(Features(last_user_text="hi"), 0.0)
    big = complexity_score(
        Features(
            last_user_text="x",
            estimated_prompt_tokens=6000,
            turns=12,
            has_tools=True,
            json_mode=True,
            max_tokens=16_000,
        ),
        2.0,
    )
    assert 0.0 <= small < 0.2
    assert big > 0.95
    more_tokens = complexity_score(Features(estimated_prompt_tokens=2000), 0.0)
    fewer_tokens = complexity_score(Features(estimated_prompt_tokens=20), 0.0)
    assert more_tokens > fewer_tokens


def test_prompt_tokens_estimate_order() -> None:
    assert Features(estimated_prompt_tokens=7, prompt_chars=400).prompt_tokens() == 7
    assert Features(prompt_chars=400).prompt_tokens() == 100
    assert Features(last_user_text="a" * 40).prompt_tokens() == 10


def test_tiers_and_floors() -> None:
    assert tier_for("chat", 0.05) == "small"
    assert tier_for("chat", 0.4) == "medium"
    assert tier_for("chat", 0.9) == "large"
    # Code and math never go below medium.
    assert tier_for("code", 0.05) == "medium"
    assert tier_for("math", 0.0) == "medium"
    assert tier_for("code", 0.9) == "large"


def test_coding_prompt_and_small_talk_land_on_different_tiers() -> None:
    code = classify(Features(last_user_text="Write a Python function to merge two sorted lists."))
    talk = classify(Features(last_user_text="hi, how are you?"))
    assert (code.intent, code.tier) == ("code", "medium")
    assert (talk.intent, talk.tier) == ("chat", "small")


def test_long_tool_using_analysis_is_large() -> None:
    c = classify(
        Features(
            last_user_text="Analyze and compare the architecture trade-offs in detail. " + ARTICLE,
            estimated_prompt_tokens=3500,
            turns=8,
            has_tools=True,
            max_tokens=4096,
        )
    )
    assert c.tier == "large"
