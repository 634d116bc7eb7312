"""CostBudget notification labels cannot template PrometheusRule labels or set severity (M-8)."""

from __future__ import annotations

import pytest

from tollgate_operator.builders import SpecError, budget_from_spec, budget_rules

SPEC = {"tenant": "team-a", "period": "day", "limitUSD": 10}


@pytest.mark.parametrize(
    ("labels", "field"),
    [
        ({"severity": "info"}, "severity"),
        ({"team": "{{ $labels.x }}"}, "team"),
        ({"team": "$value"}, "team"),
        ({"team": "x" * 129}, "team"),
        ({f"l{i}": "v" for i in range(17)}, "labels"),
    ],
)
def test_unsafe_notification_labels_are_refused(labels: dict[str, str], field: str) -> None:
    with pytest.raises(SpecError, match=field):
        budget_from_spec({**SPEC, "notification": {"labels": labels}})


def test_plain_labels_route_alerts_and_cannot_replace_the_rules_own() -> None:
    budget = budget_from_spec({**SPEC, "notification": {"labels": {"team": "payments-eu"}}})
    for rule in budget_rules(budget, "ns/b"):
        assert rule["labels"]["team"] == "payments-eu"
        assert rule["labels"]["severity"] in ("warning", "critical")
