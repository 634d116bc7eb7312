"""Every metric tollgate emits, in one place.

Dashboards, alerts and ``docs/metrics.md`` are checked against this list. Names
follow Prometheus conventions (base units, ``_total`` on counters); the gRPC
families use the go-grpc-prometheus names and the ``gen_ai_*`` families the
OpenTelemetry GenAI names, so stock dashboards work. Every label is bounded: see
``Bounded`` in ``families.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["counter", "gauge", "histogram"]

# Services that emit a family. "grpc" means every gRPC server (router, cache,
# orchestrator); "all" means every service including the operator.
GRPC_SERVERS = ("router", "cache", "orchestrator")
ALL_SERVICES = ("router", "cache", "orchestrator", "operator")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
FAST_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
MICRO_BUCKETS = (
    0.00001,
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.05,
)
SIZE_BUCKETS = (64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)
# OTel GenAI advice: powers of 4 for token counts.
TOKEN_BUCKETS = tuple(float(4**i) for i in range(0, 14))
OTEL_DURATION_BUCKETS = (
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
)
RATIO_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


@dataclass(frozen=True)
class MetricSpec:
    name: str  # the exposed name; counters end in _total
    kind: Kind
    help: str
    labels: tuple[str, ...]
    services: tuple[str, ...]
    unit: str = ""
    buckets: tuple[float, ...] | None = None
    # The name the project's first brief promised for this metric, when this family
    # replaces it (docs/metrics.md, "Legacy names"); its documented greps still match.
    legacy_name: str = ""


GRPC_LABELS = ("grpc_type", "grpc_service", "grpc_method")
HTTP_LABELS = ("method", "route")
# ``api``: the client API a request came in (chat, responses, messages, embeddings).
LLM_LABELS = ("provider", "model", "intent", "tenant", "api")
GENAI_LABELS = (
    "gen_ai_operation_name",
    "gen_ai_provider_name",
    "gen_ai_request_model",
    "gen_ai_response_model",
)

C: Kind = "counter"
G: Kind = "gauge"
H: Kind = "histogram"

_SPECS: list[MetricSpec] = [
    # --- every service ---------------------------------------------------------------
    MetricSpec(
        "tollgate_build_info",
        G,
        "Build information; always 1.",
        ("service", "version"),
        ALL_SERVICES,
    ),
    MetricSpec(
        "tollgate_price_table_info",
        G,
        "A price table the policy in force was priced from; always 1. as_of is the date "
        "its figures were copied from the provider's price list: a new as_of is new prices.",
        ("provider", "as_of"),
        ("router", "orchestrator"),
    ),
    # --- gRPC servers (go-grpc-prometheus names) ------------------------------------
    MetricSpec(
        "grpc_server_started_total", C, "RPCs started on the server.", GRPC_LABELS, GRPC_SERVERS
    ),
    MetricSpec(
        "grpc_server_handled_total",
        C,
        "RPCs completed on the server, by status code.",
        (*GRPC_LABELS, "grpc_code"),
        GRPC_SERVERS,
    ),
    MetricSpec(
        "grpc_server_handling_seconds",
        H,
        "Time to handle an RPC on the server.",
        GRPC_LABELS,
        GRPC_SERVERS,
        "seconds",
        FAST_BUCKETS,
    ),
    MetricSpec(
        "grpc_server_msg_received_total",
        C,
        "Messages received by the server.",
        GRPC_LABELS,
        GRPC_SERVERS,
    ),
    MetricSpec(
        "grpc_server_msg_sent_total", C, "Messages sent by the server.", GRPC_LABELS, GRPC_SERVERS
    ),
    MetricSpec(
        "tollgate_grpc_auth_denied_total",
        C,
        "gRPC calls refused before their handler ran: no accepted caller identity "
        "(unauthenticated) or a caller the method does not allow (permission_denied).",
        ("service", "grpc_service", "grpc_method", "reason"),
        GRPC_SERVERS,
    ),
    # --- gRPC clients ----------------------------------------------------------------
    MetricSpec(
        "grpc_client_started_total",
        C,
        "RPCs started by the client.",
        GRPC_LABELS,
        ("orchestrator", "operator"),
    ),
    MetricSpec(
        "grpc_client_handled_total",
        C,
        "RPCs completed by the client, by status code.",
        (*GRPC_LABELS, "grpc_code"),
        ("orchestrator", "operator"),
    ),
    MetricSpec(
        "grpc_client_handling_seconds",
        H,
        "Time from RPC start to its status, client side.",
        GRPC_LABELS,
        ("orchestrator", "operator"),
        "seconds",
        FAST_BUCKETS,
    ),
    MetricSpec(
        "grpc_client_msg_received_total",
        C,
        "Messages received by the client.",
        GRPC_LABELS,
        ("orchestrator", "operator"),
    ),
    MetricSpec(
        "grpc_client_msg_sent_total",
        C,
        "Messages sent by the client.",
        GRPC_LABELS,
        ("orchestrator", "operator"),
    ),
    # --- orchestrator: HTTP --------------------------------------------------------
    MetricSpec(
        "tollgate_http_requests_total",
        C,
        "HTTP requests by route template and status code.",
        (*HTTP_LABELS, "status_code"),
        ("orchestrator",),
        legacy_name="http_requests_total",
    ),
    MetricSpec(
        "tollgate_http_request_duration_seconds",
        H,
        "HTTP request duration.",
        HTTP_LABELS,
        ("orchestrator",),
        "seconds",
        LATENCY_BUCKETS,
    ),
    MetricSpec(
        "tollgate_http_request_size_bytes",
        H,
        "HTTP request body size.",
        HTTP_LABELS,
        ("orchestrator",),
        "bytes",
        SIZE_BUCKETS,
    ),
    MetricSpec(
        "tollgate_http_response_size_bytes",
        H,
        "HTTP response body size.",
        HTTP_LABELS,
        ("orchestrator",),
        "bytes",
        SIZE_BUCKETS,
    ),
    MetricSpec(
        "tollgate_http_requests_in_flight", G, "HTTP requests being served.", (), ("orchestrator",)
    ),
    MetricSpec(
        "tollgate_http_rejections_total",
        C,
        "Requests refused before any work: auth, size, concurrency cap, a tenant's share "
        "of it, bad input, and at the HTTP edge oversized heads and header or body timeouts.",
        ("reason",),
        ("orchestrator",),
    ),
    # --- orchestrator: LLM calls ---------------------------------------------------
    MetricSpec(
        "tollgate_llm_requests_total",
        C,
        "LLM requests (every client API) by the model that served them and outcome.",
        (*LLM_LABELS, "outcome"),
        ("orchestrator",),
    ),
    MetricSpec(
        "tollgate_llm_requests_in_flight",
        G,
        "Chat completions being processed.",
        (),
        ("orchestrator",),
    ),
    MetricSpec(
        "tollgate_llm_upstream_duration_seconds",
        H,
        "Upstream call duration per attempt, to the last byte.",
        ("provider", "model"),
        ("orchestrator",),
        "seconds",
        LATENCY_BUCKETS,
    ),
    MetricSpec(
        "tollgate_llm_time_to_first_token_seconds",
        H,
        "Time from request start to the first streamed token.",
        ("provider", "model", "api"),
        ("orchestrator",),
        "seconds",
        LATENCY_BUCKETS,
    ),
    MetricSpec(
        "tollgate_llm_tokens_total",
        C,
        "Tokens by type: prompt (all input, cached and cache writes included), cached_prompt, "
        "cache_write_prompt (input written to the provider's prompt cache), completion, "
        "reasoning.",
        (*LLM_LABELS, "type"),
        ("orchestrator",),
        legacy_name="openai_tokens_used",
    ),
    MetricSpec(
        "tollgate_llm_cost_usd_total",
        C,
        "Upstream spend in USD: usage x price table.",
        LLM_LABELS,
        ("orchestrator",),
        "usd",
        legacy_name="openai_cost_usd",
    ),
    MetricSpec(
        "tollgate_llm_retries_total",
        C,
        "Upstream retries by reason.",
        ("provider", "model", "reason"),
        ("orchestrator",),
    ),
    MetricSpec(
        "tollgate_llm_fallbacks_total",
        C,
        "Fallbacks from one model to the next in the chain.",
        ("from_model", "to_model", "reason"),
        ("orchestrator",),
    ),
    MetricSpec(
        "tollgate_llm_upstream_errors_total",
        C,
        "Failed upstream attempts by class.",
        ("provider", "model", "error_class"),
        ("orchestrator",),
    ),
    MetricSpec(
        "tollgate_llm_streams_total",
        C,
        "Streamed responses by how they ended: completed, client_disconnect, error, timeout "
        "(the stream's total duration or its time without progress).",
        ("outcome",),
        ("orchestrator",),
    ),
    MetricSpec(
        "tollgate_gateway_overhead_seconds",
        H,
        "Time spent in the gateway outside upstream calls, per request.",
        ("cache", "api"),
        ("orchestrator",),
        "seconds",
        FAST_BUCKETS,
    ),
    MetricSpec(
        "tollgate_savings_usd_total",
        C,
        "USD saved: cache (what a hit would have cost) and routing (baseline minus chosen).",
        ("source", "tenant", "api"),
        ("orchestrator",),
        "usd",
    ),
    MetricSpec(
        "tollgate_cache_results_total",
        C,
        "The orchestrator's cache outcome per request: hit, miss, bypass, error, or invalid "
        "(an entry whose signature did not verify, answered as a miss).",
        ("result", "api"),
        ("orchestrator",),
    ),
    MetricSpec(
        "tollgate_responses_store_dropped_total",
        C,
        "Responses answered but not stored (so previous_response_id cannot continue them), "
        "by reason: oversize, error (the store failed), invalid.",
        ("reason",),
        ("orchestrator",),
    ),
    MetricSpec(
        "tollgate_circuit_breaker_state",
        G,
        "Circuit state per model: 0 closed, 1 half-open, 2 open.",
        ("provider", "model"),
        ("orchestrator",),
    ),
    MetricSpec(
        "tollgate_circuit_breaker_opens_total",
        C,
        "Times a circuit opened.",
        ("provider", "model"),
        ("orchestrator",),
    ),
    MetricSpec(
        "tollgate_degraded_total",
        C,
        "Requests served in a degraded mode because a dependency failed.",
        ("dependency", "reason"),
        ("orchestrator",),
    ),
    MetricSpec(
        "tollgate_dependency_up",
        G,
        "Dependency reachable as last seen: 1 or 0.",
        ("dependency",),
        ("orchestrator",),
    ),
    # --- orchestrator: budgets ------------------------------------------------------
    MetricSpec(
        "tollgate_budget_spent_usd",
        G,
        "Spend in the current budget period.",
        ("tenant", "period"),
        ("orchestrator",),
        "usd",
    ),
    MetricSpec(
        "tollgate_budget_limit_usd",
        G,
        "Budget limit for the period.",
        ("tenant", "period"),
        ("orchestrator",),
        "usd",
    ),
    MetricSpec(
        "tollgate_budget_remaining_usd",
        G,
        "Budget left in the period (not below 0).",
        ("tenant", "period"),
        ("orchestrator",),
        "usd",
    ),
    MetricSpec(
        "tollgate_budget_actions_total",
        C,
        "Budget enforcement: reject, downgrade, or unchecked (store unreachable).",
        ("tenant", "period", "action"),
        ("orchestrator",),
    ),
    # --- orchestrator: OpenTelemetry GenAI names -----------------------------------
    MetricSpec(
        "gen_ai_client_token_usage",
        H,
        "OTel GenAI: tokens used per operation.",
        (*GENAI_LABELS, "gen_ai_token_type"),
        ("orchestrator",),
        "",
        TOKEN_BUCKETS,
    ),
    MetricSpec(
        "gen_ai_client_operation_duration_seconds",
        H,
        "OTel GenAI: duration of a client operation.",
        (*GENAI_LABELS, "error_type"),
        ("orchestrator",),
        "seconds",
        OTEL_DURATION_BUCKETS,
    ),
    # --- router ------------------------------------------------------------------------
    MetricSpec(
        "tollgate_router_model_selections_total",
        C,
        "Routing decisions by intent, tier and chosen model.",
        ("intent", "tier", "model"),
        ("router",),
        legacy_name="model_selections_total",
    ),
    MetricSpec(
        "tollgate_router_decision_duration_seconds",
        H,
        "Time to make a routing decision.",
        (),
        ("router",),
        "seconds",
        MICRO_BUCKETS,
    ),
    MetricSpec(
        "tollgate_router_fallbacks_total",
        C,
        "Decisions where the router chose other than the first choice, by reason.",
        ("reason",),
        ("router",),
    ),
    MetricSpec(
        "tollgate_router_chain_length",
        H,
        "Models in the returned chain.",
        (),
        ("router",),
        "",
        (1, 2, 3, 4, 5, 8),
    ),
    MetricSpec(
        "tollgate_router_policy_info",
        G,
        "The policy in force; always 1.",
        ("version", "source"),
        ("router",),
    ),
    MetricSpec(
        "tollgate_router_policy_reloads_total",
        C,
        "Policy reloads by trigger and result.",
        ("trigger", "result"),
        ("router",),
    ),
    MetricSpec(
        "tollgate_router_policy_last_reload_timestamp_seconds",
        G,
        "Unix time of the last successful policy load.",
        (),
        ("router",),
        "seconds",
    ),
    MetricSpec(
        "tollgate_router_classifier_confidence",
        H,
        "Classifier confidence per intent.",
        ("intent",),
        ("router",),
        "",
        RATIO_BUCKETS,
    ),
    MetricSpec(
        "tollgate_router_complexity_score",
        H,
        "Complexity score of routed requests.",
        (),
        ("router",),
        "",
        RATIO_BUCKETS,
    ),
    MetricSpec(
        "tollgate_router_estimated_cost_usd",
        H,
        "Estimated cost of the chosen model.",
        ("tier",),
        ("router",),
        "usd",
        (0.00001, 0.0001, 0.001, 0.01, 0.1, 1),
    ),
    # --- cache --------------------------------------------------------------------------
    MetricSpec(
        "tollgate_cache_lookups_total",
        C,
        "Cache lookups by result: hit or miss.",
        ("result",),
        ("cache",),
    ),
    MetricSpec(
        "tollgate_prompt_cache_hit_rate",
        G,
        "Hit rate over the last lookups (a rolling window of the cache service).",
        (),
        ("cache",),
        "ratio",
        legacy_name="prompt_cache_hit_rate",
    ),
    MetricSpec("tollgate_cache_entries", G, "Entries held.", ("backend",), ("cache",)),
    MetricSpec("tollgate_cache_size_bytes", G, "Bytes held.", ("backend",), ("cache",), "bytes"),
    MetricSpec(
        "tollgate_cache_capacity_bytes", G, "Byte capacity.", ("backend",), ("cache",), "bytes"
    ),
    MetricSpec(
        "tollgate_cache_evictions_total",
        C,
        "Entries evicted, by reason: lru, ttl, size.",
        ("reason",),
        ("cache",),
    ),
    MetricSpec("tollgate_cache_stores_total", C, "Store calls by result.", ("result",), ("cache",)),
    MetricSpec(
        "tollgate_cache_invalidations_total", C, "Entries removed by Invalidate.", (), ("cache",)
    ),
    MetricSpec(
        "tollgate_cache_operation_duration_seconds",
        H,
        "Backend time per cache operation.",
        ("backend", "operation"),
        ("cache",),
        "seconds",
        FAST_BUCKETS,
    ),
    MetricSpec(
        "tollgate_cache_backend_errors_total",
        C,
        "Backend failures.",
        ("backend", "operation"),
        ("cache",),
    ),
    MetricSpec(
        "tollgate_cache_saved_tokens_total",
        C,
        "Tokens not sent upstream thanks to hits.",
        (),
        ("cache",),
    ),
    MetricSpec(
        "tollgate_cache_saved_usd_total", C, "USD not spent thanks to hits.", (), ("cache",), "usd"
    ),
    # --- operator -----------------------------------------------------------------------
    MetricSpec(
        "tollgate_operator_reconciles_total",
        C,
        "Reconciles by kind and result.",
        ("kind", "result"),
        ("operator",),
    ),
    MetricSpec(
        "tollgate_operator_reconcile_errors_total",
        C,
        "Reconcile errors by kind.",
        ("kind", "reason"),
        ("operator",),
    ),
    MetricSpec(
        "tollgate_operator_reconcile_duration_seconds",
        H,
        "Reconcile duration.",
        ("kind",),
        ("operator",),
        "seconds",
        LATENCY_BUCKETS,
    ),
    MetricSpec(
        "tollgate_operator_pushes_total",
        C,
        "Live config pushes to routers and orchestrators, by target and result.",
        ("target", "result"),
        ("operator",),
    ),
    MetricSpec(
        "tollgate_operator_managed_resources",
        G,
        "Custom resources being managed.",
        ("kind",),
        ("operator",),
    ),
]

CATALOG: dict[str, MetricSpec] = {s.name: s for s in _SPECS}
assert len(CATALOG) == len(_SPECS), "duplicate metric name in the catalog"


def specs_for(service: str) -> list[MetricSpec]:
    return [s for s in _SPECS if service in s.services]
