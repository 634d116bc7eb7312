"""gRPC: rate, errors and latency of every RPC between tollgate's services."""

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
    timeseries_panel,
)

UID = "tollgate-grpc"
METHOD = "job, grpc_service, grpc_method"


def build() -> dashboard.Dashboard:
    return (
        new_dashboard(
            UID,
            "tollgate / gRPC",
            "Server and client RPCs by service and method (go-grpc-prometheus names): rate, "
            "status codes and latency.",
        )
        .with_row(dashboard.Row("Servers"))
        .with_panel(
            timeseries_panel(
                "Server RPC rate by method",
                "RPCs started per second on each server, by service and method.",
                "reqps",
                [
                    q(
                        rate("grpc_server_started_total", NS, by=METHOD),
                        "{{job}} {{grpc_service}}/{{grpc_method}}",
                    )
                ],
                width=12,
            )
        )
        .with_panel(
            timeseries_panel(
                "Server RPCs by code",
                "RPCs completed per second on each server, by status code.",
                "reqps",
                [
                    q(
                        rate("grpc_server_handled_total", NS, by="job, grpc_code"),
                        "{{job}} {{grpc_code}}",
                    )
                ],
                width=12,
            )
        )
        .with_panel(
            timeseries_panel(
                "Server error ratio by method",
                "Share of RPCs completed with a status other than OK, per method.",
                "percentunit",
                [
                    q(
                        ratio_or_zero(
                            rate("grpc_server_handled_total", NS, 'grpc_code!="OK"', by=METHOD),
                            rate("grpc_server_handled_total", NS, by=METHOD),
                        ),
                        "{{job}} {{grpc_service}}/{{grpc_method}}",
                    )
                ],
                width=12,
                min_val=0,
            )
        )
        .with_panel(
            timeseries_panel(
                "Server latency by method",
                "Time to handle an RPC on the server, p50 and p99, per method.",
                "s",
                [
                    q(
                        quantile(0.5, "grpc_server_handling_seconds", NS, by=METHOD),
                        "p50 {{job}} {{grpc_method}}",
                    ),
                    q(
                        quantile(0.99, "grpc_server_handling_seconds", NS, by=METHOD),
                        "p99 {{job}} {{grpc_method}}",
                    ),
                ],
                width=12,
            )
        )
        .with_panel(
            timeseries_panel(
                "In-flight server RPCs",
                "RPCs started but not completed on each server.",
                "short",
                [
                    q(
                        f"sum by (job) (grpc_server_started_total{sel(NS)}) - "
                        f"sum by (job) (grpc_server_handled_total{sel(NS)})",
                        "{{job}}",
                    )
                ],
                width=12,
                min_val=0,
            )
        )
        .with_panel(
            timeseries_panel(
                "Server messages",
                "Messages received and sent per second by each server.",
                "ops",
                [
                    q(rate("grpc_server_msg_received_total", NS, by="job"), "{{job}} received"),
                    q(rate("grpc_server_msg_sent_total", NS, by="job"), "{{job}} sent"),
                ],
                width=12,
            )
        )
        .with_row(dashboard.Row("Clients (orchestrator → router, cache; operator → services)"))
        .with_panel(
            timeseries_panel(
                "Client RPC rate by method",
                "RPCs started per second by clients, by the service and method they call.",
                "reqps",
                [
                    q(
                        rate("grpc_client_started_total", NS, by=METHOD),
                        "{{job}} → {{grpc_service}}/{{grpc_method}}",
                    )
                ],
                width=12,
            )
        )
        .with_panel(
            timeseries_panel(
                "Client RPCs by code",
                "RPCs completed per second as clients saw them, by status code: UNAVAILABLE "
                "means no connection, DEADLINE_EXCEEDED a peer too slow.",
                "reqps",
                [
                    q(
                        rate("grpc_client_handled_total", NS, by="grpc_service, grpc_code"),
                        "{{grpc_service}} {{grpc_code}}",
                    )
                ],
                width=12,
            )
        )
        .with_panel(
            timeseries_panel(
                "Client latency p99 by method",
                "99th percentile time from RPC start to its status, as clients saw it.",
                "s",
                [
                    q(
                        quantile(0.99, "grpc_client_handling_seconds", NS, by=METHOD),
                        "{{job}} → {{grpc_service}}/{{grpc_method}}",
                    )
                ],
                width=12,
            )
        )
        .with_panel(
            timeseries_panel(
                "Client messages",
                "Messages sent and received per second by clients.",
                "ops",
                [
                    q(rate("grpc_client_msg_sent_total", NS, by="job"), "{{job}} sent"),
                    q(rate("grpc_client_msg_received_total", NS, by="job"), "{{job}} received"),
                ],
                width=12,
            )
        )
    )
