"""The request path, in no wire format: budget, route and cache, attempts, account, store.

``handle`` reads top to bottom: reserve the budget estimate; route (with the cache
lookup beside it when the key does not depend on the route); answer a hit; else run
the attempt loop (``fallback``) and return the whole answer, accounted and stored,
or a ``Relay`` stream that accounts when it ends. The admission settles the budget.
Dialects translate in front of this; statuses and headers are the faces' business.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from tollgate.cache.v1 import cache_pb2
from tollgate_common import tracing
from tollgate_common.cachekey import cache_mode
from tollgate_common.policy import cost_usd
from tollgate_orchestrator import spans
from tollgate_orchestrator.accounting import Accounting, Call, Usage
from tollgate_orchestrator.admission import Admission
from tollgate_orchestrator.budget import Budgets
from tollgate_orchestrator.catalog import Catalog
from tollgate_orchestrator.config import OrchestratorSettings
from tollgate_orchestrator.dialects import WIRES, Wire
from tollgate_orchestrator.errors import exhausted, upstream_error
from tollgate_orchestrator.fallback import Attempts, Exhausted, Refused
from tollgate_orchestrator.providers import Upstream
from tollgate_orchestrator.relay import Relay
from tollgate_orchestrator.retry import CLIENT
from tollgate_orchestrator.types import (
    EMBEDDINGS_API,
    Cache,
    EarlyLookup,
    LlmRequest,
    Meta,
    Outcome,
    Router,
    Streamed,
    Target,
    Whole,
)

_MAX_BACKGROUND = 512  # pending cache stores; beyond this a store is skipped, never queued


class Pipeline:
    def __init__(
        self,
        *,
        settings: OrchestratorSettings,
        catalog: Catalog,
        router: Router,
        cache: Cache,
        upstreams: Upstream,
        budgets: Budgets,
        attempts: Attempts,
        accounting: Accounting,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.router = router
        self.cache = cache
        self.upstreams = upstreams
        self.budgets = budgets
        self.attempts = attempts
        self.accounting = accounting
        self.metrics = accounting.metrics
        self._clock = clock
        self._background: set[asyncio.Task[Any]] = set()

    def estimate_usd(self, req: LlmRequest) -> float:
        """The budget reservation: prompt estimate plus max_tokens (or the default) per choice,
        at the explicit model's price, or the baseline's for ``auto`` (an upper bound)."""
        policy = self.catalog.policy
        fallback = policy.baseline_model
        if req.api == EMBEDDINGS_API and policy.embeddings.default_model:
            fallback = policy.embeddings.default_model  # auto names the default embedder
        entry = policy.models.get(req.model) or policy.models[fallback]
        cap = req.max_tokens  # 0 where there is no completion (embeddings)
        completion = (
            cap if cap is not None else self.settings.budget_default_completion_tokens
        ) * req.n
        return cost_usd(entry, req.est_prompt_tokens, completion)

    async def handle(
        self,
        adm: Admission,
        req: LlmRequest,
        cache_control: str | None = None,
        opt_in: bool = False,
    ) -> Outcome:
        adm.begin()
        call = Call(req, adm, self._clock())
        wire = WIRES[req.api]
        adm.reservation = await self.budgets.reserve(adm.tenant, self.estimate_usd(req))
        downgrade = adm.reservation.downgrade
        mode = cache_mode(req.body, cache_control, opt_in or wire.deterministic)
        if not self.catalog.policy.cache.enabled:
            mode = mode._replace(lookup=False, store=False)
        early = self._early_lookup(wire, req, adm.tenant, mode.lookup and not downgrade)
        try:
            call.decision = d = await self.router.route(req, adm.tenant, adm.request_id, downgrade)
        except BaseException:
            if early is not None:
                early.task.cancel()
            raise
        primary = d.chain[0]
        if early is not None and early.model != primary.name:
            early.task.cancel()  # the router chose another primary: the key was wrong
            early = None
        if mode.lookup or mode.store:
            call.key = early.key if early else wire.cache_key(primary.name, req, adm.tenant)
            call.store = mode.store
        if mode.lookup:
            result, entry = await (
                early.task if early else self.cache.lookup(call.key, primary.name)
            )
            hit = self._hit(call, wire, entry) if entry is not None else None
            if hit is not None:
                self.metrics.cache_results("hit", call.api).inc()
                return hit
            result = "miss" if entry is not None else result  # an unplayable entry is a miss
            self.metrics.cache_results(result, call.api).inc()
            call.cache = "miss" if result in ("miss", "invalid") else "bypass"
        else:
            self.metrics.cache_results("bypass", call.api).inc()
        try:
            return await (self._stream(call, wire, adm) if req.stream else self._complete(call))
        except Exhausted as exc:
            self.accounting.failed(call, exc.target, exc.error_class)
            retry_after = exc.failure.retry_after if exc.failure is not None else None
            raise exhausted(exc.error_class, retry_after) from None
        except Refused as exc:
            self.accounting.failed(call, exc.target, CLIENT)
            raise upstream_error(exc.failure.status or 400, exc.failure.body) from None

    def _early_lookup(
        self, wire: Wire, req: LlmRequest, tenant: str, wanted: bool
    ) -> EarlyLookup | None:
        """Start the cache lookup beside the route when its key is already known.

        An explicit catalog model stays the primary of its chain unless the budget
        downgrades it (the router pins it, and the degraded answer keeps it too), so
        its key does not depend on the route: the two RPCs overlap instead of adding
        up. ``auto`` waits for the route, which picks the model the key names.
        """
        if not wanted or req.model not in self.catalog.policy.models:
            return None
        key = wire.cache_key(req.model, req, tenant)
        task = asyncio.get_running_loop().create_task(self.cache.lookup(key, req.model))
        return EarlyLookup(req.model, key, task)

    def _meta(self, call: Call, model: str, cost: float | None) -> Meta:
        d = call.route
        return Meta(model, d.intent, d.tier, call.cache, cost, d.degraded)

    def _hit(self, call: Call, wire: Wire, entry: cache_pb2.Entry) -> Outcome | None:
        d = call.route
        events = wire.replay(entry.body, call.req.include_usage) if call.req.stream else None
        if call.req.stream and events is None:
            return None
        call.cache = "hit"
        model = entry.model or d.chain[0].name
        provider = next((t.provider for t in d.chain if t.name == model), d.chain[0].provider)
        self.accounting.hit(call, provider, model, entry.cost_usd)
        meta = self._meta(call, model, 0.0)
        if events is None:
            return Whole(entry.body, meta)
        self.metrics.streams("completed").inc()
        return Streamed(_replayed(events), meta)

    async def _complete(self, call: Call) -> Whole:
        req = call.req

        async def attempt(target: Target, budget: float) -> tuple[bytes, Usage]:
            return await self.upstreams.complete(target, req, budget)

        target, (raw, usage), _ = await self.attempts.run(call, attempt)
        cost = self.accounting.answered(call, target, usage, "success")
        if call.span is not None:
            spans.attempt_answered(call.span, target, usage, cost, "success", raw)
            call.span = None
        if call.store:
            self._store(call, target, raw, usage)
        return Whole(raw, self._meta(call, target.name, cost))

    async def _stream(self, call: Call, wire: Wire, adm: Admission) -> Streamed:
        req, m = call.req, self.metrics

        async def attempt(target: Target, budget: float) -> Any:
            return await self.upstreams.stream(target, req, budget)

        target, upstream, t0 = await self.attempts.run(call, attempt, observe_success=False)
        now = self._clock()
        m.ttft(m.provider(target.provider), m.model(target.name), call.api).observe(
            now - call.started, tracing.exemplar(call.span)
        )
        relay = Relay(
            call=call,
            target=target,
            upstream=upstream,
            wire=wire,
            parser=wire.parser(req, assemble=call.store),
            accounting=self.accounting,
            store=(lambda t, body, usage: self._store(call, t, body, usage))
            if call.store
            else None,
            attempt_started=t0,
            opened=now,
        )
        adm.on_close(relay.finish)
        return Streamed(relay.events(), self._meta(call, target.name, None))

    def _storer(self, call: Call) -> Callable[[Target, bytes, Usage], None]:
        def store(target: Target, body: bytes, usage: Usage) -> None:
            self._store(call, target, body, usage)

        return store

    def _store(self, call: Call, target: Target, body: bytes, usage: Usage) -> None:
        # An answer from a fallback model is filed under that model, not the primary.
        if target is call.route.chain[0]:
            key = call.key
        else:
            key = WIRES[call.req.api].cache_key(target.name, call.req, call.tenant)
        ttl = self.catalog.policy.cache.ttl_seconds or 0  # 0: the cache's default
        cost = call.adm.cost
        self.spawn(self.cache.store(key, body, target.name, usage.pb(), cost, ttl))

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        if len(self._background) >= _MAX_BACKGROUND:
            coro.close()
            return
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain_background(self, seconds: float) -> None:
        if self._background:
            await asyncio.wait(set(self._background), timeout=seconds)


async def _replayed(events: list[bytes]) -> AsyncIterator[bytes]:
    for ev in events:
        yield ev
