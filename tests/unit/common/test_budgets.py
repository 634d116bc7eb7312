"""tollgate_common.budgets: one vocabulary and one validator whose problems name fields."""

from __future__ import annotations

import math

import pytest

from tollgate_common.budgets import ACTIONS, PERIODS, validate_budget


def test_the_vocabulary() -> None:
    assert PERIODS == ("day", "month")
    assert ACTIONS == ("reject", "downgrade")


def test_a_good_budget_has_no_problems() -> None:
    assert validate_budget("team-a", "month", 100, "downgrade", (0.5, 1.0, 2)) == []
    assert validate_budget("dev", "day", 0) == []  # 0 refuses everything: allowed here


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (("", "day", 1), "tenant: required"),
        ((None, "day", 1), "tenant: required"),
        (("t" * 129, "day", 1), "tenant: at most 128"),
        (("t", "week", 1), "period: must be one of day, month"),
        (("t", "day", -1), "limit_usd: must be a finite number"),
        (("t", "day", math.inf), "limit_usd: must be a finite number"),
        (("t", "day", 2e9), "limit_usd: must be a finite number"),
        (("t", "day", "100"), "limit_usd: must be a number"),
        (("t", "day", True), "limit_usd: must be a number"),
        (("t", "day", 1, "block"), "action: must be one of reject, downgrade"),
        (("t", "day", 1, "reject", [0.5, 2.5]), "thresholds[1]: 2.5 is not in (0, 2]"),
        (("t", "day", 1, "reject", [0]), "thresholds[0]: 0 is not in (0, 2]"),
        (("t", "day", 1, "reject", ["x"]), "thresholds[0]: must be a number"),
    ],
)
def test_each_problem_names_its_field(args: tuple[object, ...], field: str) -> None:
    problems = validate_budget(*args)  # type: ignore[arg-type]
    assert len(problems) == 1 and problems[0].startswith(field), problems


def test_every_problem_is_reported_with_the_prefix() -> None:
    problems = validate_budget("", "week", -1, "block", prefix="budgets[2].")
    assert [p.split(":")[0] for p in problems] == [
        "budgets[2].tenant",
        "budgets[2].period",
        "budgets[2].limit_usd",
        "budgets[2].action",
    ]


def test_the_resource_rules_are_stricter() -> None:
    assert validate_budget("team a", "day", 1) == []
    assert validate_budget("team a", "day", 1, resource=True)[0].startswith("tenant: 'team a'")
    assert validate_budget("t", "day", 0, resource=True) == ["limit_usd: must be greater than 0"]
