"""Routing: which models does the router pick, how fast, and what happens upstream?"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard

from dashboards.lib import (
    MODEL,
    NS,
    new_dashboard,
    q,
    quantile,
    rate,
    ratio_or_zero,
    sel,
    stat_panel,
    state_timeline_panel,
    timeseries_panel,
)

UID = "tollgate-routing"
SELECTIONS = "tollgate_router_model_selections_total"
DECISION = "tollgate_router_decision_duration_seconds"


def build() -> dashboard.Dashboard:
    return (
        new_dashboard(
            UID,
            "tollgate / Routing",
            "Routing decisions by intent, tier and model; decision latency; fallbacks, "
            "retries, circuit breakers and degraded routes; upstream latency and errors.",
        )
        .with_row(dashboard.Row("Decisions"))
        .with_panel(
            timeseries_panel(
                "Decisions by intent",
                "Routing decisions per second by the intent the router classified.",
                "reqps",
                [q(rate(SELECTIONS, NS, MODEL, by="intent"), "{{intent}}")],
                width=8,
                stacked=True,
            )
        )
        .with_panel(
            timeseries_panel(
                "Decisions by tier",
                "Routing decisions per second by complexity tier (small, medium, large).",
                "reqps",
                [q(rate(SELECTIONS, NS, MODEL, by="tier"), "{{tier}}")],
                width=8,
                stacked=True,
            )
        )
        .with_panel(
            timeseries_panel(
                "Decisions by model",
                "Routing decisions per second by the model chosen first.",
                "reqps",
                [q(rate(SELECTIONS, NS, MODEL, by="model"), "{{model}}")],
                width=8,
                stacked=True,
            )
        )
        .with_panel(
            timeseries_panel(
                "Decision latency",
                "Time the router takes to classify a request and pick a chain, p50 and p99.",
                "s",
                [
                    q(quantile(0.5, DECISION, NS), "p50"),
                    q(quantile(0.99, DECISION, NS), "p99"),
                ],
                width=8,
            )
        )
        .with_panel(
            timeseries_panel(
                "Router fallbacks by reason",
                "Decisions per second where the router chose other than the policy's first "
                "choice (capabilities, tenant limits, open circuits), by reason.",
                "reqps",
                [q(rate("tollgate_router_fallbacks_total", NS, by="reason"), "{{reason}}")],
                width=8,
            )
        )
        .with_panel(
            timeseries_panel(
                "Chain length",
                "Models in the chains the router returns (first choice plus fallbacks), p50 "
                "and max.",
                "short",
                [
                    q(quantile(0.5, "tollgate_router_chain_length", NS), "p50"),
                    q(quantile(1.0, "tollgate_router_chain_length", NS), "max"),
                ],
                width=8,
            )
        )
        .with_panel(
            timeseries_panel(
                "Classifier confidence p50 by intent",
                "Median confidence of the intent classifier per intent (0 to 1).",
                "percentunit",
                [
                    q(
                        quantile(0.5, "tollgate_router_classifier_confidence", NS, by="intent"),
                        "{{intent}}",
                    )
                ],
                width=8,
                min_val=0,
                max_val=1,
            )
        )
        .with_panel(
            timeseries_panel(
                "Estimated cost per request by tier",
                "Median estimated cost of the chosen model per routed request, by tier.",
                "currencyUSD",
                [
                    q(
                        quantile(0.5, "tollgate_router_estimated_cost_usd", NS, by="tier"),
                        "{{tier}}",
                    )
                ],
                width=8,
            )
        )
        .with_panel(
            stat_panel(
                "Policy in force",
                "The routing policy version each router runs and where it came from.",
                "none",
                [
                    q(
                        f"count by (version, source) (tollgate_router_policy_info{sel(NS)})",
                        "{{version}} ({{source}})",
                    )
                ],
                width=8,
                height=8,
            )
        )
        .with_row(dashboard.Row("Fallbacks, retries and degraded routes"))
        .with_panel(
            timeseries_panel(
                "Fallbacks (from → to)",
                "Fallbacks per second from one model to the next in the chain, by reason.",
                "reqps",
                [
                    q(
                        rate(
                            "tollgate_llm_fallbacks_total",
                            NS,
                            'from_model=~"$model"',
                            by="from_model, to_model, reason",
                        ),
                        "{{from_model}} → {{to_model}} ({{reason}})",
                    )
                ],
                width=12,
            )
        )
        .with_panel(
            timeseries_panel(
                "Fallbacks per request",
                "Fallbacks per chat request (the fallback alert fires above 0.1 over 10 minutes).",
                "short",
                [
                    q(
                        ratio_or_zero(
                            rate("tollgate_llm_fallbacks_total", NS),
                            rate("tollgate_llm_requests_total", NS),
                        ),
                        "fallbacks per request",
                    )
                ],
                width=12,
                min_val=0,
            )
        )
        .with_panel(
            timeseries_panel(
                "Retries by reason",
                "Upstream retries per second by model and reason (429, 5xx, timeout, ...).",
                "reqps",
                [
                    q(
                        rate("tollgate_llm_retries_total", NS, MODEL, by="model, reason"),
                        "{{model}} {{reason}}",
                    )
                ],
                width=12,
            )
        )
        .with_panel(
            timeseries_panel(
                "Degraded requests by dependency",
                "Requests per second served in a degraded mode because a dependency failed: "
                "router (default model used), cache (bypassed), budget store.",
                "reqps",
                [
                    q(
                        rate("tollgate_degraded_total", NS, by="dependency, reason"),
                        "{{dependency}} {{reason}}",
                    )
                ],
                width=12,
            )
        )
        .with_row(dashboard.Row("Upstream"))
        .with_panel(
            timeseries_panel(
                "Upstream latency p99 by model",
                "99th percentile duration of one upstream attempt, to the last byte.",
                "s",
                [
                    q(
                        quantile(
                            0.99, "tollgate_llm_upstream_duration_seconds", NS, MODEL, by="model"
                        ),
                        "{{model}}",
                    )
                ],
                width=12,
            )
        )
        .with_panel(
            timeseries_panel(
                "Time to first token p95 by model",
                "95th percentile time from request start to the first streamed token (the "
                "alert fires above 5 s).",
                "s",
                [
                    q(
                        quantile(
                            0.95, "tollgate_llm_time_to_first_token_seconds", NS, MODEL, by="model"
                        ),
                        "{{model}}",
                    )
                ],
                width=12,
            )
        )
        .with_panel(
            timeseries_panel(
                "Upstream errors by class",
                "Failed upstream attempts per second by model and error class.",
                "reqps",
                [
                    q(
                        rate(
                            "tollgate_llm_upstream_errors_total", NS, MODEL, by="model, error_class"
                        ),
                        "{{model}} {{error_class}}",
                    )
                ],
                width=12,
            )
        )
        .with_panel(
            timeseries_panel(
                "Upstream error ratio by model",
                "Share of upstream attempts that failed over 5 minutes (the alert fires above 5%).",
                "percentunit",
                [
                    q(
                        "max by (model) (namespace_provider_model:tollgate_llm_upstream_errors:"
                        f"ratio_rate5m{sel(NS, MODEL)})",
                        "{{model}}",
                    )
                ],
                width=12,
                min_val=0,
            )
        )
        .with_panel(
            state_timeline_panel(
                "Circuit breaker state",
                "Each model's circuit breaker: closed (requests flow), half-open (one probe), "
                "open (the model is skipped). The worst state over replicas.",
                "none",
                [
                    q(
                        f"max by (model) (tollgate_circuit_breaker_state{sel(NS, MODEL)})",
                        "{{model}}",
                    )
                ],
                [("0", "closed", "green"), ("1", "half-open", "orange"), ("2", "open", "red")],
                width=12,
            )
        )
        .with_panel(
            timeseries_panel(
                "Circuit opens",
                "Times a model's circuit breaker opened, per second.",
                "ops",
                [
                    q(
                        rate("tollgate_circuit_breaker_opens_total", NS, MODEL, by="model"),
                        "{{model}}",
                    )
                ],
                width=12,
            )
        )
    )
