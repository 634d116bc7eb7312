"""Overview: is the gateway up, fast and healthy? RED metrics per service."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard

from dashboards.lib import (
    MODEL,
    NS,
    RATE,
    TENANT,
    new_dashboard,
    q,
    quantile,
    rate,
    ratio_or_zero,
    sel,
    stat_panel,
    timeseries_panel,
)

UID = "tollgate-overview"
JOBS = 'job=~"tollgate-.*"'
API = 'route=~"/v1/.+"'
GENAI_MODEL = 'gen_ai_request_model=~"$model"'


def build() -> dashboard.Dashboard:
    http_total = rate("tollgate_http_requests_total", NS, API)
    grpc_handled = rate("grpc_server_handled_total", NS, by="job")
    return (
        new_dashboard(
            UID,
            "tollgate / Overview",
            "Rate, errors and duration of every tollgate service, gateway overhead and "
            "in-flight work.",
        )
        .with_row(dashboard.Row("Health"))
        .with_panel(
            stat_panel(
                "Targets up",
                "Scrape targets of each tollgate job that are up, out of those Prometheus knows.",
                "short",
                [
                    q(f"sum by (job) (up{sel(NS, JOBS)})", "{{job}} up"),
                    q(f"count by (job) (up{sel(NS, JOBS)})", "{{job}} total"),
                ],
                width=8,
                height=5,
            )
        )
        .with_panel(
            stat_panel(
                "Versions",
                "The tollgate version each service runs (tollgate_build_info).",
                "none",
                [
                    q(
                        f"count by (service, version) (tollgate_build_info{sel(NS)})",
                        "{{service}} {{version}}",
                    )
                ],
                width=8,
                height=5,
            )
        )
        .with_panel(
            timeseries_panel(
                "Dependencies reachable",
                "Whether the orchestrator last reached each dependency (router, cache, Redis): "
                "1 reachable, 0 not. The minimum over replicas.",
                "bool_yes_no",
                [q(f"min by (dependency) (tollgate_dependency_up{sel(NS)})", "{{dependency}}")],
                width=8,
                height=5,
                min_val=0,
                max_val=1,
            )
        )
        .with_row(dashboard.Row("Orchestrator: the OpenAI-compatible API"))
        .with_panel(
            timeseries_panel(
                "Requests by status",
                "HTTP requests to the API per second, by status code.",
                "reqps",
                [
                    q(
                        rate("tollgate_http_requests_total", NS, API, by="status_code"),
                        "{{status_code}}",
                    )
                ],
                width=8,
                stacked=True,
            )
        )
        .with_panel(
            timeseries_panel(
                "HTTP error ratio",
                "Share of API requests answered with a 5xx (the availability SLO allows 0.1%) "
                "and with a 4xx (client errors, budget rejections).",
                "percentunit",
                [
                    q(
                        ratio_or_zero(
                            rate("tollgate_http_requests_total", NS, API, 'status_code=~"5.."'),
                            http_total,
                        ),
                        "5xx",
                    ),
                    q(
                        ratio_or_zero(
                            rate("tollgate_http_requests_total", NS, API, 'status_code=~"4.."'),
                            http_total,
                        ),
                        "4xx",
                    ),
                ],
                width=8,
                min_val=0,
            )
        )
        .with_panel(
            timeseries_panel(
                "HTTP latency",
                "Chat completion duration, first to last byte, p50 and p99 (the latency SLO "
                "wants 99% under 10 s).",
                "s",
                [
                    q(
                        quantile(
                            0.5,
                            "tollgate_http_request_duration_seconds",
                            NS,
                            'route="/v1/chat/completions"',
                        ),
                        "p50",
                    ),
                    q(
                        quantile(
                            0.99,
                            "tollgate_http_request_duration_seconds",
                            NS,
                            'route="/v1/chat/completions"',
                        ),
                        "p99",
                    ),
                ],
                width=8,
            )
        )
        .with_panel(
            timeseries_panel(
                "Gateway overhead",
                "Time each request spends in tollgate outside upstream calls (auth, budget, "
                "routing, cache), p50 and p99, split by cache outcome.",
                "s",
                [
                    q(
                        quantile(0.5, "tollgate_gateway_overhead_seconds", NS, by="cache"),
                        "p50 {{cache}}",
                    ),
                    q(
                        quantile(0.99, "tollgate_gateway_overhead_seconds", NS, by="cache"),
                        "p99 {{cache}}",
                    ),
                ],
                width=8,
            )
        )
        .with_panel(
            timeseries_panel(
                "In-flight requests",
                "HTTP requests being served and chat completions being processed, summed over "
                "replicas.",
                "short",
                [
                    q(f"sum(tollgate_http_requests_in_flight{sel(NS)})", "HTTP"),
                    q(f"sum(tollgate_llm_requests_in_flight{sel(NS)})", "chat completions"),
                ],
                width=8,
                min_val=0,
            )
        )
        .with_panel(
            timeseries_panel(
                "Chat completions by outcome",
                "Chat completion requests per second by outcome, for the selected tenants and "
                "models.",
                "reqps",
                [
                    q(
                        rate("tollgate_llm_requests_total", NS, TENANT, MODEL, by="outcome"),
                        "{{outcome}}",
                    )
                ],
                width=8,
                stacked=True,
            )
        )
        .with_panel(
            timeseries_panel(
                "Rejections by reason",
                "Requests refused before any work (auth, size, concurrency cap, bad input) per "
                "second.",
                "reqps",
                [q(rate("tollgate_http_rejections_total", NS, by="reason"), "{{reason}}")],
                width=12,
            )
        )
        .with_panel(
            timeseries_panel(
                "Streams by outcome",
                "Streamed responses per second by how they ended: completed, client "
                "disconnect, error.",
                "reqps",
                [q(rate("tollgate_llm_streams_total", NS, by="outcome"), "{{outcome}}")],
                width=12,
            )
        )
        .with_row(dashboard.Row("gRPC services: router, cache, orchestrator"))
        .with_panel(
            timeseries_panel(
                "RPC rate by service",
                "RPCs completed per second by each gRPC server.",
                "reqps",
                [q(grpc_handled, "{{job}}")],
                width=8,
            )
        )
        .with_panel(
            timeseries_panel(
                "RPC error ratio by service",
                "Share of RPCs each gRPC server completed with a status other than OK.",
                "percentunit",
                [
                    q(
                        ratio_or_zero(
                            rate("grpc_server_handled_total", NS, 'grpc_code!="OK"', by="job"),
                            grpc_handled,
                        ),
                        "{{job}}",
                    )
                ],
                width=8,
                min_val=0,
            )
        )
        .with_panel(
            timeseries_panel(
                "RPC latency p99 by service",
                "99th percentile time to handle an RPC on each gRPC server.",
                "s",
                [q(quantile(0.99, "grpc_server_handling_seconds", NS, by="job"), "{{job}}")],
                width=8,
            )
        )
        .with_row(dashboard.Row("OpenTelemetry GenAI view"))
        .with_panel(
            timeseries_panel(
                "GenAI operation duration p95",
                "gen_ai_client_operation_duration_seconds, the OpenTelemetry GenAI client "
                "metric, p95 per requested model.",
                "s",
                [
                    q(
                        quantile(
                            0.95,
                            "gen_ai_client_operation_duration_seconds",
                            NS,
                            GENAI_MODEL,
                            by="gen_ai_request_model",
                        ),
                        "{{gen_ai_request_model}}",
                    )
                ],
            )
        )
        .with_panel(
            timeseries_panel(
                "GenAI tokens per second by type",
                "gen_ai_client_token_usage: input and output tokens per second, from the "
                "histogram's sum.",
                "short",
                [
                    q(
                        "sum by (gen_ai_token_type) "
                        f"(rate(gen_ai_client_token_usage_sum{sel(NS, GENAI_MODEL)}[{RATE}]))",
                        "{{gen_ai_token_type}}",
                    )
                ],
            )
        )
    )
