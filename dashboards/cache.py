"""Cache: how often does the prompt cache answer, how full is it, what does it save?"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard

from dashboards.lib import (
    NS,
    new_dashboard,
    q,
    quantile,
    rate,
    ratio_or_zero,
    sel,
    stat_panel,
    timeseries_panel,
)

UID = "tollgate-cache"
LOOKUPS = "tollgate_cache_lookups_total"


def build() -> dashboard.Dashboard:
    return (
        new_dashboard(
            UID,
            "tollgate / Cache",
            "Prompt cache hit rate, entries, bytes against capacity, evictions, savings and "
            "backend health.",
        )
        .with_row(dashboard.Row("Hits"))
        .with_panel(
            stat_panel(
                "Hit rate (rolling)",
                "The cache service's own hit rate over its last lookups "
                "(tollgate_prompt_cache_hit_rate); the lowest over replicas.",
                "percentunit",
                [q(f"min(tollgate_prompt_cache_hit_rate{sel(NS)})", "hit rate")],
                width=6,
                thresholds=((None, "red"), (0.1, "orange"), (0.3, "green")),
            )
        )
        .with_panel(
            stat_panel(
                "USD saved in range",
                "USD not spent upstream thanks to cache hits over the time range.",
                "currencyUSD",
                [q(f"sum(increase(tollgate_cache_saved_usd_total{sel(NS)}[$__range]))", "saved")],
                width=6,
                decimals=2,
            )
        )
        .with_panel(
            stat_panel(
                "Tokens saved in range",
                "Tokens not sent upstream thanks to cache hits over the time range.",
                "short",
                [
                    q(
                        f"sum(increase(tollgate_cache_saved_tokens_total{sel(NS)}[$__range]))",
                        "tokens",
                    )
                ],
                width=6,
            )
        )
        .with_panel(
            stat_panel(
                "Entries",
                "Entries held, summed over cache replicas and backends.",
                "short",
                [q(f"sum(tollgate_cache_entries{sel(NS)})", "entries")],
                width=6,
            )
        )
        .with_panel(
            timeseries_panel(
                "Hit ratio",
                "Share of cache lookups that hit, as the cache service counts them, and as "
                "the orchestrator sees it over every request (bypassed and failed lookups "
                "count as misses there).",
                "percentunit",
                [
                    q(
                        ratio_or_zero(rate(LOOKUPS, NS, 'result="hit"'), rate(LOOKUPS, NS)),
                        "cache service lookups",
                    ),
                    q(
                        ratio_or_zero(
                            rate("tollgate_cache_results_total", NS, 'result="hit"'),
                            rate("tollgate_cache_results_total", NS),
                        ),
                        "orchestrator requests",
                    ),
                ],
                width=12,
                min_val=0,
                max_val=1,
            )
        )
        .with_panel(
            timeseries_panel(
                "Orchestrator cache outcomes",
                "Requests per second by the orchestrator's cache outcome: hit, miss, bypass "
                "(not cacheable, or the cache is down), error.",
                "reqps",
                [q(rate("tollgate_cache_results_total", NS, by="result"), "{{result}}")],
                width=12,
                stacked=True,
            )
        )
        .with_row(dashboard.Row("Capacity"))
        .with_panel(
            timeseries_panel(
                "Entries by backend",
                "Entries held per backend (memory or Redis), summed over replicas.",
                "short",
                [q(f"sum by (backend) (tollgate_cache_entries{sel(NS)})", "{{backend}}")],
                width=8,
                min_val=0,
            )
        )
        .with_panel(
            timeseries_panel(
                "Bytes used and capacity",
                "Bytes held against the byte capacity, per backend.",
                "bytes",
                [
                    q(f"sum by (backend) (tollgate_cache_size_bytes{sel(NS)})", "{{backend}} used"),
                    q(
                        f"sum by (backend) (tollgate_cache_capacity_bytes{sel(NS)})",
                        "{{backend}} capacity",
                    ),
                ],
                width=8,
                min_val=0,
            )
        )
        .with_panel(
            timeseries_panel(
                "Evictions by reason",
                "Entries evicted per second: lru (capacity), ttl (expired), size (too large).",
                "ops",
                [q(rate("tollgate_cache_evictions_total", NS, by="reason"), "{{reason}}")],
                width=8,
            )
        )
        .with_row(dashboard.Row("Savings"))
        .with_panel(
            timeseries_panel(
                "USD saved per hour",
                "USD per hour not spent upstream thanks to hits.",
                "currencyUSD",
                [q(f"{rate('tollgate_cache_saved_usd_total', NS)} * 3600", "USD/h")],
                width=12,
            )
        )
        .with_panel(
            timeseries_panel(
                "Tokens saved per second",
                "Tokens per second not sent upstream thanks to hits.",
                "short",
                [q(rate("tollgate_cache_saved_tokens_total", NS), "tokens/s")],
                width=12,
            )
        )
        .with_row(dashboard.Row("Operations and backend"))
        .with_panel(
            timeseries_panel(
                "Operation latency",
                "Backend time per cache operation, p99, by backend and operation.",
                "s",
                [
                    q(
                        quantile(
                            0.99,
                            "tollgate_cache_operation_duration_seconds",
                            NS,
                            by="backend, operation",
                        ),
                        "{{backend}} {{operation}}",
                    )
                ],
                width=8,
            )
        )
        .with_panel(
            timeseries_panel(
                "Stores by result",
                "Store calls per second by result.",
                "ops",
                [q(rate("tollgate_cache_stores_total", NS, by="result"), "{{result}}")],
                width=8,
            )
        )
        .with_panel(
            timeseries_panel(
                "Backend errors by operation",
                "Failed backend operations per second, by backend and operation.",
                "ops",
                [
                    q(
                        rate("tollgate_cache_backend_errors_total", NS, by="backend, operation"),
                        "{{backend}} {{operation}}",
                    )
                ],
                width=8,
            )
        )
    )
