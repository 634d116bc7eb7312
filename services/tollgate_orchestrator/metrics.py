"""The orchestrator's metric families, with bounded labels and children bound once.

Label values pass through ``Bounded`` (catalog models, providers, intents, tenants
from the configured keys; anything else is ``other``), and each label combination's
child is created once and kept: with bounded values the child caches stay small.
Series that dashboards and alerts rely on are created at start, at 0.
"""

from __future__ import annotations

from collections.abc import Iterable

from tollgate_common import tracing
from tollgate_common.breaker import CLOSED
from tollgate_common.budgets import NANO, to_nano
from tollgate_common.metrics import Bounded, Children, Families, Shown
from tollgate_common.policy import INTENTS, Policy
from tollgate_orchestrator.config import BudgetSpec
from tollgate_orchestrator.retry import CIRCUIT_OPEN, ERROR_CLASSES
from tollgate_orchestrator.types import API_LABELS

CACHE_RESULTS = ("hit", "miss", "bypass", "error", "invalid")
STREAM_OUTCOMES = ("completed", "client_disconnect", "error", "timeout")
RESPONSES_DROPPED = ("oversize", "error", "invalid")  # why an answer was not stored
REJECTION_REASONS = (
    "auth",
    "size",
    "concurrency",
    "invalid",
    "not_found",
    "forbidden",
    "draining",
    "budget",
    "tenant_concurrency",
    # the HTTP edge (edge.py): refused before a request reaches the application
    "headers_too_large",
    "uri_too_long",
    "header_timeout",
    "body_timeout",
)
OUTCOMES = ("success", "cache_hit", "error", "partial", "cancelled")
DEPENDENCIES = ("router", "cache", "budget_store")
DEGRADED_REASONS = ("unavailable", "timeout", "circuit_open")
TOKEN_TYPES = ("prompt", "cached_prompt", "cache_write_prompt", "completion", "reasoning")
APIS = tuple(API_LABELS.values())
# The GenAI semantic conventions' operation name per client API.
GENAI_OPERATIONS = {"embeddings": "embeddings"}  # every other API is a "chat"
HTTP_METHODS = ("GET", "POST", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS")
OTHER = "other"


class OrchestratorMetrics:
    def __init__(
        self,
        fam: Families,
        *,
        models: dict[str, str],  # catalog model -> provider
        tenants: Iterable[str],
        routes: Iterable[str],
        budget_store: bool,
    ) -> None:
        self.fam = fam
        self._known_models: set[tuple[str, str]] = set()
        self.model = Bounded(models)
        self.request_model = Bounded([*models, "auto"])
        self.provider = Bounded(set(models.values()))
        self.intent = Bounded(INTENTS)
        self.tenant = Bounded(tenants)
        self.route = Bounded(routes)
        self.method = Bounded(HTTP_METHODS)
        self.error_class = Bounded([*ERROR_CLASSES, CIRCUIT_OPEN, "deadline", "no_upstream"])
        c, g, h = fam.counter, fam.gauge, fam.histogram

        self.http_requests = Children(c("tollgate_http_requests_total"))
        self.http_duration = Children(h("tollgate_http_request_duration_seconds"))
        self.http_req_size = Children(h("tollgate_http_request_size_bytes"))
        self.http_resp_size = Children(h("tollgate_http_response_size_bytes"))
        self.http_in_flight = g("tollgate_http_requests_in_flight")
        self.rejections = Children(c("tollgate_http_rejections_total"))
        self.llm_requests = Children(c("tollgate_llm_requests_total"))
        self.llm_in_flight = g("tollgate_llm_requests_in_flight")
        self.upstream_duration = Children(h("tollgate_llm_upstream_duration_seconds"))
        self.ttft = Children(h("tollgate_llm_time_to_first_token_seconds"))
        self.tokens = Children(c("tollgate_llm_tokens_total"))
        self.cost = Children(c("tollgate_llm_cost_usd_total"))
        self.retries = Children(c("tollgate_llm_retries_total"))
        self.fallbacks = Children(c("tollgate_llm_fallbacks_total"))
        self.upstream_errors = Children(c("tollgate_llm_upstream_errors_total"))
        self.streams = Children(c("tollgate_llm_streams_total"))
        self.overhead = Children(h("tollgate_gateway_overhead_seconds"))
        self.savings = Children(c("tollgate_savings_usd_total"))
        self.cache_results = Children(c("tollgate_cache_results_total"))
        self.breaker_state = Children(g("tollgate_circuit_breaker_state"))
        self.breaker_opens = Children(c("tollgate_circuit_breaker_opens_total"))
        self.degraded_total = Children(c("tollgate_degraded_total"))
        self.dependency_up = Children(g("tollgate_dependency_up"))
        self.budget_spent = Children(g("tollgate_budget_spent_usd"))
        self.budget_limit = Children(g("tollgate_budget_limit_usd"))
        self.budget_remaining = Children(g("tollgate_budget_remaining_usd"))
        self.budget_actions = Children(c("tollgate_budget_actions_total"))
        self.responses_dropped = Children(c("tollgate_responses_store_dropped_total"))
        self.genai_tokens = Children(h("gen_ai_client_token_usage"))
        self.genai_duration = Children(h("gen_ai_client_operation_duration_seconds"))
        # (provider, as_of) per loaded table: checked when loaded, at most MAX_TABLES.
        self._price_tables = Shown(g("tollgate_price_table_info"))
        self._preinit(models, list(tenants), budget_store)

    def _preinit(self, models: dict[str, str], tenants: list[str], budget_store: bool) -> None:
        # Error-ratio alerts and panels divide by these: they must exist at 0.
        chat = self.route("/v1/chat/completions")
        if chat != OTHER:
            for code in ("200", "400", "401", "404", "429", "500", "502", "503", "504"):
                self.http_requests("POST", chat, code)
            self.http_duration("POST", chat)
        for r in CACHE_RESULTS:
            for api in APIS:
                self.cache_results(r, api)
        for o in STREAM_OUTCOMES:
            self.streams(o)
        for reason in RESPONSES_DROPPED:
            self.responses_dropped(reason)
        for reason in REJECTION_REASONS:
            self.rejections(reason)
        for dep in DEPENDENCIES:
            if dep != "budget_store" or budget_store:
                self.dependency_up(dep).set(1)
                for reason in DEGRADED_REASONS:
                    self.degraded_total(dep, reason)
        self._breaker_series(models)
        for t in [*tenants, OTHER]:
            for source in ("cache", "routing"):
                for api in APIS:
                    self.savings(source, t, api)

    def _breaker_series(self, models: dict[str, str]) -> None:
        for model, provider in models.items():
            if (provider, model) not in self._known_models:
                self._known_models.add((provider, model))
                self.breaker_state(provider, model).set(CLOSED)
                self.breaker_opens(provider, model)

    def follow(self, policy: Policy) -> None:
        """A newly followed policy: its models and providers become label values."""
        models = {name: m.provider for name, m in policy.models.items()}
        self.model.update(models)
        self.request_model.update([*models, "auto"])
        self.provider.update(set(models.values()))
        self._breaker_series(models)
        self._price_tables.show(policy.price_tables)

    # --- HTTP -----------------------------------------------------------------------
    def http(
        self, method: str, route: str, status: int, seconds: float, req: int, resp: int
    ) -> None:
        m, r = self.method(method), self.route(route)
        self.http_requests(m, r, str(status)).inc()
        self.http_duration(m, r).observe(seconds, tracing.exemplar())
        self.http_req_size(m, r).observe(req)
        self.http_resp_size(m, r).observe(resp)

    def rejected(self, reason: str) -> None:
        self.rejections(reason if reason in REJECTION_REASONS else OTHER).inc()

    # --- LLM ------------------------------------------------------------------------
    def labels(
        self, provider: str, model: str, intent: str, tenant: str, api: str
    ) -> tuple[str, ...]:
        """The LLM labels; ``api`` is already a label value (``API_LABELS``)."""
        return (
            self.provider(provider),
            self.model(model),
            self.intent(intent),
            self.tenant(tenant),
            api,
        )

    def usage(
        self,
        llm: tuple[str, ...],
        prompt: int,
        cached: int,
        completion: int,
        reasoning: int,
        cost_usd: float,
        cache_write: int = 0,
    ) -> None:
        self.tokens(*llm, "prompt").inc(prompt)
        self.tokens(*llm, "cached_prompt").inc(cached)
        self.tokens(*llm, "cache_write_prompt").inc(cache_write)
        self.tokens(*llm, "completion").inc(completion)
        self.tokens(*llm, "reasoning").inc(reasoning)
        if cost_usd > 0:
            self.cost(*llm).inc(cost_usd)
        else:
            self.cost(*llm)

    def genai(
        self,
        provider: str,
        request_model: str,
        response_model: str,
        seconds: float,
        error_type: str = "",
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        api: str = "chat",
    ) -> None:
        base = (
            GENAI_OPERATIONS.get(api, "chat"),
            self.provider(provider),
            self.request_model(request_model),
            self.model(response_model),
        )
        et = self.error_class(error_type) if error_type else ""
        self.genai_duration(*base, et).observe(seconds, tracing.exemplar())
        if input_tokens is not None:
            self.genai_tokens(*base, "input").observe(input_tokens)
        if output_tokens is not None:
            self.genai_tokens(*base, "output").observe(output_tokens)

    def retry(self, provider: str, model: str, reason: str) -> None:
        self.retries(self.provider(provider), self.model(model), self.error_class(reason)).inc()

    def fallback(self, from_model: str, to_model: str, reason: str) -> None:
        self.fallbacks(self.model(from_model), self.model(to_model), self.error_class(reason)).inc()

    def upstream_error(self, provider: str, model: str, error_class: str) -> None:
        p, m = self.provider(provider), self.model(model)
        self.upstream_errors(p, m, self.error_class(error_class)).inc()

    def breaker_changed(self, provider: str, model: str, new: int, opened: bool) -> None:
        p, m = self.provider(provider), self.model(model)
        self.breaker_state(p, m).set(new)
        if opened:
            self.breaker_opens(p, m).inc()

    def degraded(self, dependency: str, reason: str) -> None:
        self.degraded_total(dependency, reason if reason in DEGRADED_REASONS else OTHER).inc()

    def set_up(self, dependency: str, up: bool) -> None:
        self.dependency_up(dependency).set(1 if up else 0)

    # --- budgets (the hooks Budgets calls) --------------------------------------------
    def reset(self) -> None:
        """Budgets were replaced: drop the gauges of budgets that no longer exist."""
        for gauge in (self.budget_limit, self.budget_spent, self.budget_remaining):
            gauge.clear()

    def limit(self, spec: BudgetSpec) -> None:
        t = self.tenant(spec.tenant)
        self.budget_limit(t, spec.period).set(spec.limit_usd)
        self.budget_spent(t, spec.period)
        self.budget_remaining(t, spec.period).set(spec.limit_usd)
        for action in ("reject", "downgrade", "unchecked"):
            self.budget_actions(t, spec.period, action)

    def values(self, spec: BudgetSpec, spent_nano: int) -> None:
        t = self.tenant(spec.tenant)
        self.budget_spent(t, spec.period).set(spent_nano / NANO)
        remaining = max(0, to_nano(spec.limit_usd) - spent_nano)
        self.budget_remaining(t, spec.period).set(remaining / NANO)

    def action(self, spec: BudgetSpec, action: str) -> None:
        self.budget_actions(self.tenant(spec.tenant), spec.period, action).inc()
