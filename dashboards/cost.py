"""Cost: what are we spending, per team, model and intent, against which budget?"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard

from dashboards.lib import (
    MODEL,
    NS,
    TENANT,
    bargauge_panel,
    new_dashboard,
    q,
    rate,
    sel,
    stat_panel,
    timeseries_panel,
)

UID = "tollgate-cost"
COST = "tollgate_llm_cost_usd_total"
SAVINGS = "tollgate_savings_usd_total"
BUDGET_STEPS = ((None, "green"), (0.8, "orange"), (1.0, "red"))
DAY = 'period="day"'
MONTH = 'period="month"'


def _per_hour(expr: str) -> str:
    return f"{expr} * 3600"


def build() -> dashboard.Dashboard:
    used = "namespace_tenant_period:tollgate_budget_used:ratio"
    forecast = "namespace_tenant_period:tollgate_budget_spent_usd:predict_linear_period_end"
    return (
        new_dashboard(
            UID,
            "tollgate / Cost",
            "Upstream spend in USD by model, intent and tenant; budgets, forecasts and what "
            "routing and caching saved. Prices come from tollgate's price table.",
        )
        .with_row(dashboard.Row("Spend"))
        .with_panel(
            stat_panel(
                "Spend in range",
                "USD spent upstream over the dashboard's time range, for the selected tenants "
                "and models.",
                "currencyUSD",
                [q(f"sum(increase({COST}{sel(NS, TENANT, MODEL)}[$__range]))", "spent")],
                width=6,
                decimals=2,
            )
        )
        .with_panel(
            stat_panel(
                "Spend rate",
                "Current spend in USD per hour.",
                "currencyUSD",
                [q(_per_hour(rate(COST, NS, TENANT, MODEL)), "USD/h")],
                width=6,
                decimals=2,
            )
        )
        .with_panel(
            stat_panel(
                "30-day run rate",
                "The last 24 hours' spend rate extrapolated to 30 days, in USD.",
                "currencyUSD",
                [q(f"sum(rate({COST}{sel(NS, TENANT, MODEL)}[1d])) * 86400 * 30", "USD/30d")],
                width=6,
                decimals=0,
            )
        )
        .with_panel(
            stat_panel(
                "Saved in range",
                "USD not spent thanks to cache hits and to routing cheaper than the baseline "
                "model, over the time range.",
                "currencyUSD",
                [q(f"sum(increase({SAVINGS}{sel(NS, TENANT)}[$__range]))", "saved")],
                width=6,
                decimals=2,
            )
        )
        .with_panel(
            timeseries_panel(
                "USD per hour by model",
                "Upstream spend rate per model, in USD per hour.",
                "currencyUSD",
                [q(_per_hour(rate(COST, NS, TENANT, MODEL, by="model")), "{{model}}")],
                width=8,
                stacked=True,
            )
        )
        .with_panel(
            timeseries_panel(
                "USD per hour by intent",
                "Upstream spend rate per request intent (code, math, chat, ...), in USD per hour.",
                "currencyUSD",
                [q(_per_hour(rate(COST, NS, TENANT, MODEL, by="intent")), "{{intent}}")],
                width=8,
                stacked=True,
            )
        )
        .with_panel(
            timeseries_panel(
                "USD per hour by tenant",
                "Upstream spend rate per tenant, in USD per hour.",
                "currencyUSD",
                [q(_per_hour(rate(COST, NS, TENANT, MODEL, by="tenant")), "{{tenant}}")],
                width=8,
                stacked=True,
            )
        )
        .with_panel(
            timeseries_panel(
                "Tokens per second by type",
                "Prompt, cached prompt, completion and reasoning tokens per second.",
                "short",
                [q(rate("tollgate_llm_tokens_total", NS, TENANT, MODEL, by="type"), "{{type}}")],
                width=12,
            )
        )
        .with_panel(
            timeseries_panel(
                "Spend vs the same hour over the last 7 days",
                "Each tenant's spend over the last hour against the average of the same hour on "
                "the previous 7 days (the baseline of the cost anomaly alert), in USD per hour.",
                "currencyUSD",
                [
                    q(
                        _per_hour(
                            f"namespace_tenant:tollgate_llm_cost_usd:rate1h{sel(NS, TENANT)}"
                        ),
                        "{{tenant}} last hour",
                    ),
                    q(
                        _per_hour(
                            "namespace_tenant:tollgate_llm_cost_usd:rate1h_same_hour_avg7d"
                            f"{sel(NS, TENANT)}"
                        ),
                        "{{tenant}} same hour, 7-day average",
                    ),
                ],
                width=12,
            )
        )
        .with_row(dashboard.Row("Budgets"))
        .with_panel(
            bargauge_panel(
                "Budget used today",
                "Share of each tenant's daily budget spent since 00:00 UTC.",
                "percentunit",
                [q(f"max by (tenant) ({used}{sel(NS, TENANT, DAY)})", "{{tenant}}")],
                thresholds=BUDGET_STEPS,
                width=12,
            )
        )
        .with_panel(
            bargauge_panel(
                "Budget used this month",
                "Share of each tenant's monthly budget spent since the 1st, 00:00 UTC.",
                "percentunit",
                [q(f"max by (tenant) ({used}{sel(NS, TENANT, MONTH)})", "{{tenant}}")],
                thresholds=BUDGET_STEPS,
                width=12,
            )
        )
        .with_panel(
            timeseries_panel(
                "Spend today and daily budget",
                "Each tenant's spend since 00:00 UTC and its daily limit, in USD.",
                "currencyUSD",
                [
                    q(
                        f"max by (tenant) (tollgate_budget_spent_usd{sel(NS, TENANT, DAY)})",
                        "{{tenant}} spent",
                    ),
                    q(
                        f"max by (tenant) (tollgate_budget_limit_usd{sel(NS, TENANT, DAY)})",
                        "{{tenant}} limit",
                    ),
                ],
                width=12,
            )
        )
        .with_panel(
            timeseries_panel(
                "Month to date, month-end forecast and budget",
                "Each tenant's spend this month, the spend forecast at the month's end "
                "(predict_linear over 6 hours) and its monthly limit, in USD.",
                "currencyUSD",
                [
                    q(
                        f"max by (tenant) (tollgate_budget_spent_usd{sel(NS, TENANT, MONTH)})",
                        "{{tenant}} spent",
                    ),
                    q(
                        f"max by (tenant) ({forecast}{sel(NS, TENANT, MONTH)})",
                        "{{tenant}} forecast",
                    ),
                    q(
                        f"max by (tenant) (tollgate_budget_limit_usd{sel(NS, TENANT, MONTH)})",
                        "{{tenant}} limit",
                    ),
                ],
                width=12,
            )
        )
        .with_panel(
            timeseries_panel(
                "Budget enforcement",
                "Requests per second that a budget rejected or downgraded, or let through "
                "unchecked because the budget store was unreachable.",
                "reqps",
                [
                    q(
                        rate(
                            "tollgate_budget_actions_total", NS, TENANT, by="tenant, period, action"
                        ),
                        "{{tenant}} {{period}} {{action}}",
                    )
                ],
                width=24,
            )
        )
        .with_row(dashboard.Row("Savings"))
        .with_panel(
            timeseries_panel(
                "Savings per hour by source",
                "USD per hour not spent: cache (what the hits would have cost) and routing "
                "(baseline model cost minus the chosen model's cost).",
                "currencyUSD",
                [
                    q(
                        _per_hour(rate(SAVINGS, NS, TENANT, by="source")),
                        "{{source}}",
                    )
                ],
                width=12,
                stacked=True,
            )
        )
        .with_panel(
            timeseries_panel(
                "Savings ratio",
                "Savings as a share of what the traffic would have cost without routing and "
                "caching: saved / (spent + saved).",
                "percentunit",
                [
                    q(
                        f"{rate(SAVINGS, NS, TENANT)} / "
                        f"({rate(COST, NS, TENANT)} + {rate(SAVINGS, NS, TENANT)})",
                        "saved",
                    )
                ],
                width=12,
                min_val=0,
                max_val=1,
            )
        )
    )
