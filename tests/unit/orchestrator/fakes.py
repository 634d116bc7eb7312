"""In-process fakes for pipeline tests: a router, a cache and an upstream, all scripted."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import orjson
from prometheus_client import CollectorRegistry

from tollgate.cache.v1 import cache_pb2
from tollgate_common.metrics import create_families
from tollgate_common.policy import Policy, load_policy
from tollgate_orchestrator.accounting import Accounting, Usage
from tollgate_orchestrator.admission import Admission, Admissions, Slots
from tollgate_orchestrator.budget import Budgets, MemoryCounters
from tollgate_orchestrator.catalog import Catalog
from tollgate_orchestrator.config import BudgetSpec, OrchestratorSettings
from tollgate_orchestrator.dialects import WIRES
from tollgate_orchestrator.dialects.chat import usage_of
from tollgate_orchestrator.fallback import Attempts
from tollgate_orchestrator.http_api import response_headers
from tollgate_orchestrator.metrics import OrchestratorMetrics
from tollgate_orchestrator.pipeline import Pipeline
from tollgate_orchestrator.providers.openai import UpstreamStream
from tollgate_orchestrator.retry import TIMEOUT, AttemptFailed, Failure
from tollgate_orchestrator.types import LlmRequest, Outcome, RouteDecision, Streamed, Target

POLICY = load_policy()
TARGETS = Catalog(POLICY)


def target(name: str) -> Target:
    t = TARGETS.local(name)
    assert t is not None
    return t


class FakeRouter:
    def __init__(self, chain: list[str], intent: str = "chat", baseline: str = "gpt-4o") -> None:
        self.chain = chain
        self.intent = intent
        self.baseline = baseline
        self.calls: list[dict[str, Any]] = []

    async def route(
        self, req: LlmRequest, tenant: str, request_id: str, downgrade: bool
    ) -> RouteDecision:
        self.calls.append({"model": req.model, "downgrade": downgrade, "tenant": tenant})
        chain = tuple(target(n) for n in self.chain)
        return RouteDecision(self.intent, "small", chain, target(self.baseline))


class FakeCache:
    def __init__(self) -> None:
        self.entries: dict[str, cache_pb2.Entry] = {}
        self.ttls: dict[str, int] = {}
        self.down = False

    async def lookup(self, key: str, model: str) -> tuple[str, cache_pb2.Entry | None]:
        if self.down:
            return "error", None
        e = self.entries.get(key)
        return ("hit", e) if e is not None else ("miss", None)

    async def store(
        self,
        key: str,
        body: bytes,
        model: str,
        usage: cache_pb2.Usage,
        cost_usd: float,
        ttl_seconds: int = 0,
    ) -> bool:
        self.entries[key] = cache_pb2.Entry(body=body, model=model, usage=usage, cost_usd=cost_usd)
        self.ttls[key] = ttl_seconds
        return True


USAGE = {
    "prompt_tokens": 1000,
    "completion_tokens": 500,
    "prompt_tokens_details": {"cached_tokens": 200},
    "completion_tokens_details": {"reasoning_tokens": 50},
}


def completion(model: str, text: str = "hello world") -> dict[str, Any]:
    return {
        "id": "cmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": USAGE,
    }


def stream_payloads(model: str, words: int = 5) -> list[bytes]:
    head = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": model}
    out = [
        orjson.dumps(
            {**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}
        )
    ]
    out += [
        orjson.dumps({**head, "choices": [{"index": 0, "delta": {"content": f"w{i} "}}]})
        for i in range(words)
    ]
    out.append(
        orjson.dumps({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    )
    out.append(orjson.dumps({**head, "choices": [], "usage": USAGE}))
    out.append(b"[DONE]")
    return out


class FakeUpstream:
    """``script[model]`` is a list of outcomes consumed per attempt: "ok", a ``Failure``,
    ("sleep", seconds), or ("break", n) for a stream that dies after n payloads."""

    def __init__(self, script: dict[str, list[Any]] | None = None) -> None:
        self.script = script or {}
        self.attempts: dict[str, int] = {}
        self.payloads: list[dict[str, Any]] = []
        self.closed = 0

    async def _outcome(self, t: Target, req: LlmRequest) -> Any:
        self.attempts[t.name] = self.attempts.get(t.name, 0) + 1
        self.payloads.append(orjson.loads(WIRES[req.api].payload(req, t.upstream_model)))
        steps = self.script.get(t.name)
        step = steps.pop(0) if steps else "ok"
        if isinstance(step, tuple) and step[0] == "sleep":
            await asyncio.sleep(step[1])
            step = "ok"
        if isinstance(step, Failure):
            raise AttemptFailed(step)
        return step

    async def complete(self, target: Target, req: LlmRequest, budget: float) -> tuple[bytes, Usage]:
        try:
            async with asyncio.timeout(budget):
                await self._outcome(target, req)
        except TimeoutError:
            raise AttemptFailed(Failure(TIMEOUT)) from None
        body = completion(target.upstream_model)
        return orjson.dumps(body), usage_of(body["usage"])

    async def stream(self, target: Target, req: LlmRequest, budget: float) -> UpstreamStream:
        async with asyncio.timeout(budget):
            step = await self._outcome(target, req)
        payloads = stream_payloads(target.upstream_model)
        broken_after = step[1] if isinstance(step, tuple) and step[0] == "break" else None
        upstream = self

        async def rest() -> AsyncIterator[bytes]:
            for i, p in enumerate(payloads[1:], start=1):
                if broken_after is not None and i >= broken_after:
                    raise httpx2.ReadError("connection lost")
                await asyncio.sleep(0)
                yield p

        class Counting(UpstreamStream):
            async def aclose(self) -> None:
                upstream.closed += 1
                await super().aclose()

        return Counting(httpx2.Response(200), [payloads[0]], rest())


class Rig:
    """A pipeline over fakes, with its own metric registry."""

    def __init__(
        self,
        chain: list[str],
        script: dict[str, list[Any]] | None = None,
        budgets: list[BudgetSpec] | None = None,
        policy: Policy = POLICY,
        **settings: Any,
    ) -> None:
        defaults: dict[str, Any] = {
            "retry_base_backoff_seconds": 0.0,
            "retry_max_backoff_seconds": 0.0,
        }
        self.settings = OrchestratorSettings(**{**defaults, **settings})
        self.registry = CollectorRegistry()
        fam = create_families("orchestrator", self.registry)
        models = {n: m.provider for n, m in policy.models.items()}
        self.metrics = OrchestratorMetrics(
            fam, models=models, tenants=["t"], routes=[], budget_store=False
        )
        self.catalog = Catalog(policy)
        self.catalog.subscribe(self.metrics.follow)
        self.router = FakeRouter(chain)
        self.cache = FakeCache()
        self.upstream = FakeUpstream(script)
        self.store = MemoryCounters()
        self.budgets = Budgets(budgets or [], self.store, "allow", self.metrics)
        self.attempts = Attempts(self.settings, self.metrics, rand=lambda: 1.0)
        self.admissions = Admissions(
            Slots(self.settings.max_concurrency), self.budgets, self.attempts.budget, self.metrics
        )
        self.pipeline = Pipeline(
            settings=self.settings,
            catalog=self.catalog,
            router=self.router,
            cache=self.cache,
            upstreams=self.upstream,
            budgets=self.budgets,
            attempts=self.attempts,
            accounting=Accounting(self.metrics),
        )
        self._open: dict[int, Admission] = {}

    async def handle(
        self, req: LlmRequest, tenant: str = "t", rid: str = "r", **kw: Any
    ) -> Outcome:
        """What a face does: admit, run, and close unless a stream is still to be read."""
        adm = self.admissions.open(rid)
        adm.tenant = tenant
        try:
            outcome = await self.pipeline.handle(adm, req, **kw)
        except BaseException:
            await adm.close()
            raise
        if isinstance(outcome, Streamed):
            self._open[id(outcome)] = adm
        else:
            await adm.close()
        return outcome

    async def close(self, outcome: Streamed) -> None:
        await self._open.pop(id(outcome)).close()

    async def collect(self, outcome: Outcome) -> list[bytes]:
        assert isinstance(outcome, Streamed)
        out = [ev async for ev in outcome.events]
        await self.close(outcome)
        return out

    def value(self, name: str, **labels: str) -> float:
        v = self.registry.get_sample_value(name, labels)
        return 0.0 if v is None else v

    def total(self, name: str, **match: str) -> float:
        n = 0.0
        for metric in self.registry.collect():
            for s in metric.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in match.items()):
                    n += s.value
        return n


def headers(outcome: Outcome) -> dict[str, str]:
    """The response headers the HTTP face sends for this outcome."""
    return response_headers(outcome.meta)
