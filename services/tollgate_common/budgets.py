"""The budget vocabulary and its one validator, shared by the CostBudget resource
(operator), the orchestrator's settings and its ``UpdateBudgets`` RPC.

A budget caps what one tenant spends in USD per ``period``; when the cap is reached
the ``action`` applies: ``reject`` refuses requests, ``downgrade`` routes them to the
cheapest model. ``thresholds`` are fractions of the limit that raise alerts (1.0 =
exhausted; up to 2.0 to alert on overspend).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Literal, TypeAlias, TypeGuard

Period: TypeAlias = Literal["day", "month"]
Action: TypeAlias = Literal["reject", "downgrade"]
PERIODS: tuple[Period, ...] = ("day", "month")
ACTIONS: tuple[Action, ...] = ("reject", "downgrade")
DEFAULT_ACTION: Action = "reject"
DEFAULT_THRESHOLDS = (0.5, 0.8, 1.0)
MAX_THRESHOLD = 2.0
MAX_LIMIT_USD = 1e9
TENANT_MAX_CHARS = 128
# A CostBudget's tenant: it becomes a label value and part of generated object names.
NANO = 1_000_000_000  # budgets count integer nano-dollars: sums stay exact


def to_nano(usd: float) -> int:
    return round(usd * NANO)


RESOURCE_TENANT_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def validate_budget(
    tenant: object,
    period: object,
    limit_usd: object,
    action: object = DEFAULT_ACTION,
    thresholds: Sequence[object] = (),
    *,
    resource: bool = False,
    prefix: str = "",
) -> list[str]:
    """Every problem with one budget, as ``"<prefix><field>: <what is wrong>"``; [] if none.

    The rules: ``tenant`` a non-empty string of at most 128 characters; ``period`` one
    of ``PERIODS``; ``limit_usd`` a finite number in [0, 1e9] (0 refuses everything);
    ``action`` one of ``ACTIONS``; each threshold a number in (0, 2].

    ``resource=True`` adds what the CostBudget schema is stricter about: the tenant
    matches ``RESOURCE_TENANT_RE`` and the limit is above 0 (a zero there is a typo;
    the orchestrator's settings and RPC accept it).
    Field names are the snake_case ones; the operator renames them for its resource.
    """
    problems: list[str] = []

    def bad(name: str, message: str) -> None:
        problems.append(f"{prefix}{name}: {message}")

    if not isinstance(tenant, str) or not tenant:
        bad("tenant", "required")
    elif len(tenant) > TENANT_MAX_CHARS:
        bad("tenant", f"at most {TENANT_MAX_CHARS} characters")
    elif resource and not RESOURCE_TENANT_RE.match(tenant):
        bad("tenant", f"{tenant!r} must match {RESOURCE_TENANT_RE.pattern}")
    if period not in PERIODS:
        bad("period", f"must be one of {', '.join(PERIODS)}")
    if not _is_number(limit_usd):
        bad("limit_usd", "must be a number")
    else:
        limit = float(limit_usd)
        if not math.isfinite(limit) or not 0 <= limit <= MAX_LIMIT_USD:
            bad("limit_usd", f"must be a finite number in [0, {MAX_LIMIT_USD:g}]")
        elif resource and limit == 0:
            bad("limit_usd", "must be greater than 0")
    if action not in ACTIONS:
        bad("action", f"must be one of {', '.join(ACTIONS)}")
    for i, t in enumerate(thresholds):
        if not _is_number(t):
            bad(f"thresholds[{i}]", "must be a number")
        elif not 0 < float(t) <= MAX_THRESHOLD:
            bad(f"thresholds[{i}]", f"{t} is not in (0, {MAX_THRESHOLD:g}]")
    return problems
