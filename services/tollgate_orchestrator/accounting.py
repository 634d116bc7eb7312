"""Accounting: usage priced and rounded once, and the metrics of every finished request.

The number in ``x-tollgate-cost-usd`` and the one added to
``tollgate_llm_cost_usd_total`` are the same float, so sums of either agree.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tollgate.cache.v1 import cache_pb2
from tollgate_common import tracing
from tollgate_common.policy import cost_usd
from tollgate_orchestrator.metrics import OrchestratorMetrics
from tollgate_orchestrator.types import API_LABELS, LlmRequest, RouteDecision, Spending, Target

if TYPE_CHECKING:
    from opentelemetry.trace import Span


def round_cost(usd: float) -> float:
    """12 significant digits: the header and the counter carry the very same number."""
    return float(f"{usd:.12g}")


def format_cost(usd: float) -> str:
    return "0" if usd == 0 else f"{usd:.12g}"


@dataclass(frozen=True, slots=True)
class Usage:
    prompt: int = 0
    completion: int = 0
    cached: int = 0
    reasoning: int = 0
    cache_write: int = 0  # prompt tokens written to the provider's prompt cache (of prompt)
    cache_write_1h: int = 0  # of cache_write, those kept for an hour (Anthropic's ttl "1h")

    def cost(self, target: Target) -> float:
        return round_cost(
            cost_usd(
                target.entry,
                self.prompt,
                self.completion,
                self.cached,
                self.cache_write,
                self.cache_write_1h,
            )
        )

    def pb(self) -> cache_pb2.Usage:
        return cache_pb2.Usage(
            prompt_tokens=self.prompt,
            completion_tokens=self.completion,
            cached_prompt_tokens=self.cached,
            reasoning_tokens=self.reasoning,
        )


@dataclass(slots=True)
class Call:
    """What the pipeline learns about one request on its way, for accounting."""

    req: LlmRequest
    adm: Spending
    started: float
    decision: RouteDecision | None = None
    cache: str = "bypass"  # hit | miss | bypass
    key: str = ""
    store: bool = False
    upstream_seconds: float = 0.0
    wait_seconds: float = 0.0
    span: Span | None = None  # the attempt that answered, until it is accounted (tracing on)

    @property
    def tenant(self) -> str:
        return self.adm.tenant

    @property
    def api(self) -> str:
        """The client API, as the ``api`` label of the metrics."""
        return API_LABELS.get(self.req.api, "chat")

    @property
    def route(self) -> RouteDecision:
        assert self.decision is not None, "routed before use"
        return self.decision


class Accounting:
    """Tokens, cost, savings, outcomes and durations, written once per request."""

    def __init__(
        self, metrics: OrchestratorMetrics, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self.metrics = metrics
        self.clock = clock

    def hit(self, call: Call, provider: str, model: str, saved_usd: float) -> None:
        m = self.metrics
        api = call.api
        m.llm_requests(
            *m.labels(provider, model, call.route.intent, call.tenant, api), "cache_hit"
        ).inc()
        if saved_usd > 0:
            m.savings("cache", m.tenant(call.tenant), api).inc(saved_usd)
        m.overhead("hit", api).observe(max(0.0, self.clock() - call.started), tracing.exemplar())

    def answered(self, call: Call, target: Target, usage: Usage, outcome: str) -> float:
        """A finished upstream call (whole or streamed): returns its cost, also on the admission."""
        d, m, req = call.route, self.metrics, call.req
        cost = call.adm.cost = usage.cost(target)
        labels = m.labels(target.provider, target.name, d.intent, call.tenant, call.api)
        m.usage(
            labels,
            usage.prompt,
            usage.cached,
            usage.completion,
            usage.reasoning,
            cost,
            usage.cache_write,
        )
        m.llm_requests(*labels, outcome).inc()
        if req.model == "auto" and d.baseline is not None and d.baseline.name != target.name:
            saved = usage.cost(d.baseline) - cost
            if saved > 0:
                m.savings("routing", m.tenant(call.tenant), call.api).inc(saved)
        total = self.clock() - call.started
        error = "" if outcome == "success" else outcome
        m.genai(
            target.provider,
            req.model,
            target.name,
            total,
            error,
            usage.prompt,
            usage.completion,
            call.api,
        )
        self._overhead(call, total)
        return cost

    def failed(self, call: Call, target: Target, error_type: str) -> None:
        m = self.metrics
        labels = m.labels(target.provider, target.name, call.route.intent, call.tenant, call.api)
        m.llm_requests(*labels, "error").inc()
        total = self.clock() - call.started
        m.genai(target.provider, call.req.model, target.name, total, error_type, api=call.api)
        self._overhead(call, total)

    def _overhead(self, call: Call, total: float) -> None:
        overhead = total - call.upstream_seconds - call.wait_seconds
        self.metrics.overhead(call.cache, call.api).observe(max(0.0, overhead), tracing.exemplar())
