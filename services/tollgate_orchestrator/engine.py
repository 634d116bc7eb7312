"""The request path, shared by HTTP and gRPC: budget, route, cache, upstream, cost, settle, store.

Upstream attempts follow the chain the router returned: each model gets up to
``retry_max_attempts`` tries (429, 5xx, timeouts and connection errors retry with
backoff or the upstream's Retry-After), then the next model; an open circuit
skips a model at once; 400/401/404 pass straight through. Everything before the
first byte to the client spends from one deadline.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
import httpx2
import orjson

from tollgate.cache.v1 import cache_pb2
from tollgate_common.breaker import OPEN, BreakerConfig, CircuitBreaker
from tollgate_common.cachekey import cache_key, cache_mode
from tollgate_common.policy import Policy, cost_usd
from tollgate_orchestrator.accounting import Usage, format_cost
from tollgate_orchestrator.budget import Budgets, Reservation
from tollgate_orchestrator.config import OrchestratorSettings
from tollgate_orchestrator.deps import RouteDecision
from tollgate_orchestrator.errors import SERVER, ApiError, upstream_error
from tollgate_orchestrator.metrics import OrchestratorMetrics
from tollgate_orchestrator.retry import (
    CIRCUIT_OPEN,
    CLIENT,
    MODEL_NOT_FOUND,
    PROTOCOL,
    RATE_LIMIT,
    TIMEOUT,
    UPSTREAM_AUTH,
    Failure,
    RetryBudget,
    RetryPolicy,
)
from tollgate_orchestrator.sse import COST_FIELD, DONE, DONE_EVENT, Assembler, error_event, event
from tollgate_orchestrator.sse import replay as replay_events
from tollgate_orchestrator.upstream import AttemptFailed, Target, UpstreamStream
from tollgate_orchestrator.validation import ChatRequest

log = logging.getLogger(__name__)

_MAX_BACKGROUND = 512  # pending cache stores; beyond this a store is skipped, never queued


class Router(Protocol):
    async def route(
        self, req: ChatRequest, tenant: str, request_id: str, downgrade: bool
    ) -> RouteDecision: ...


class Cache(Protocol):
    async def lookup(self, key: str, model: str) -> tuple[str, cache_pb2.Entry | None]: ...

    async def store(
        self, key: str, body: bytes, model: str, usage: cache_pb2.Usage, cost_usd: float
    ) -> bool: ...


class Upstream(Protocol):
    async def complete(
        self, target: Target, payload: bytes, budget: float
    ) -> tuple[bytes, dict[str, Any]]: ...

    async def stream(self, target: Target, payload: bytes, budget: float) -> UpstreamStream: ...


@dataclass(slots=True)
class Call:
    """One request on its way through the engine."""

    req: ChatRequest
    tenant: str
    request_id: str
    started: float
    reservation: Reservation | None = None
    decision: RouteDecision | None = None
    cache: str = "bypass"  # the x-tollgate-cache header: hit | miss | bypass
    key: str = ""
    store: bool = False
    upstream_seconds: float = 0.0
    wait_seconds: float = 0.0
    cost: float = 0.0


@dataclass(slots=True)
class Reply:
    """A whole JSON answer."""

    body: bytes
    headers: dict[str, str]
    model: str
    intent: str
    cache: str
    cost: float


@dataclass(slots=True)
class StreamReply:
    """An SSE answer: iterate ``events``; ``aclose`` always runs the accounting."""

    headers: dict[str, str]
    events: AsyncIterator[bytes]
    close: Callable[[], Coroutine[Any, Any, None]]


@dataclass(slots=True)
class _Relay:
    """State of one relayed stream."""

    call: Call
    target: Target
    upstream: UpstreamStream
    attempt_started: float
    opened: float
    assembler: Assembler | None
    usage: Usage | None = None
    chunks: int = 0
    outcome: str = "client_disconnect"
    finished: bool = False


class Engine:
    def __init__(
        self,
        *,
        settings: OrchestratorSettings,
        policy: Policy,
        router: Router,
        cache: Cache,
        upstreams: Upstream,
        budgets: Budgets,
        metrics: OrchestratorMetrics,
        rand: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.settings = settings
        self.policy = policy
        self.router = router
        self.cache = cache
        self.upstreams = upstreams
        self.budgets = budgets
        self.metrics = metrics
        self._rand = rand
        self._clock = clock
        s = settings
        self.retry_policy = RetryPolicy(
            max_attempts_per_model=s.retry_max_attempts,
            total_attempts=s.retry_total_attempts,
            base_backoff=s.retry_base_backoff_seconds,
            max_backoff=s.retry_max_backoff_seconds,
            retry_after_cap=s.retry_after_cap_seconds,
        )
        self.retry_budget = RetryBudget(s.retry_budget_ratio, s.retry_budget_min)
        self.breaker_config = BreakerConfig(
            consecutive_failures=s.breaker_consecutive_failures,
            failure_ratio=s.breaker_failure_ratio,
            window_seconds=s.breaker_window_seconds,
            min_requests=s.breaker_min_requests,
            cooldown_seconds=s.breaker_cooldown_seconds,
        )
        self._breakers: dict[tuple[str, str], CircuitBreaker] = {}
        self._background: set[asyncio.Task[Any]] = set()

    # --- helpers ----------------------------------------------------------------------
    def breaker(self, target: Target) -> CircuitBreaker:
        key = (target.provider, target.name)
        b = self._breakers.get(key)
        if b is None:
            m = self.metrics

            def changed(old: int, new: int) -> None:
                m.breaker_changed(target.provider, target.name, new, new == OPEN)
                log.warning(
                    "circuit %s",
                    {0: "closed", 1: "half-open", 2: "open"}[new],
                    extra={"model": m.model(target.name)},
                )

            b = self._breakers[key] = CircuitBreaker(self.breaker_config, on_change=changed)
        return b

    def estimate_usd(self, req: ChatRequest) -> float:
        """The budget reservation: prompt estimate plus max_tokens (or the default) per choice,
        at the explicit model's price, or the baseline's for ``auto`` (an upper bound)."""
        models = self.policy.models
        entry = models.get(req.model) or models[self.policy.baseline_model]
        completion = (req.max_tokens or self.settings.budget_default_completion_tokens) * req.n
        return cost_usd(entry, req.est_prompt_tokens, completion)

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

    def _headers(self, call: Call, model: str, cost: float | None) -> dict[str, str]:
        d = call.decision
        assert d is not None
        h = {
            "x-tollgate-model": model,
            "x-tollgate-intent": d.intent,
            "x-tollgate-cache": call.cache,
        }
        if d.tier:
            h["x-tollgate-tier"] = d.tier
        if cost is not None:
            h["x-tollgate-cost-usd"] = format_cost(cost)
        if d.degraded:
            h["x-tollgate-route"] = "degraded"
        return h

    def _payload(self, req: ChatRequest, target: Target) -> bytes:
        body = dict(req.body)
        body["model"] = target.upstream_model
        if req.stream:
            body["stream"] = True
            # Usage is needed for cost even when the client did not ask for it.
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        else:
            body.pop("stream_options", None)
        return orjson.dumps(body)

    # --- the request path -------------------------------------------------------------
    async def handle(
        self,
        req: ChatRequest,
        tenant: str,
        request_id: str,
        cache_control: str | None = None,
        opt_in: bool = False,
    ) -> Reply | StreamReply:
        call = Call(req, tenant, request_id, self._clock())
        m = self.metrics
        m.llm_in_flight.inc()
        self.retry_budget.requests += 1
        handed_over = False
        try:
            call.reservation = await self.budgets.reserve(tenant, self.estimate_usd(req))
            downgrade = call.reservation.downgrade
            mode = cache_mode(req.body, cache_control, opt_in)
            early = self._early_lookup(req, tenant, mode.lookup and not downgrade)
            try:
                call.decision = d = await self.router.route(req, tenant, request_id, downgrade)
            except BaseException:
                if early is not None:
                    early[2].cancel()
                raise
            primary = d.chain[0]
            if early is not None and early[0] != primary.name:
                early[2].cancel()  # the router chose another primary: the key was wrong
                early = None
            if mode.lookup or mode.store:
                call.key = early[1] if early else cache_key(primary.name, req.body, tenant)
                call.store = mode.store
            if mode.lookup:
                if early is not None:
                    result, entry = await early[2]
                else:
                    result, entry = await self.cache.lookup(call.key, primary.name)
                if entry is not None:
                    hit = self._hit(call, entry)
                    if hit is not None:
                        m.cache_results("hit").inc()
                        return hit
                    result = "miss"  # an entry that cannot be replayed is a miss
                m.cache_results(result).inc()
                call.cache = "miss" if result == "miss" else "bypass"
            else:
                m.cache_results("bypass").inc()
            if req.stream:
                reply: Reply | StreamReply = await self._stream(call)
                handed_over = True
                return reply
            return await self._complete(call)
        finally:
            if not handed_over:
                if call.reservation is not None:
                    # Shielded: a client that vanished must not leave its estimate reserved.
                    with anyio.CancelScope(shield=True):
                        await self.budgets.settle(call.reservation, call.cost)
                m.llm_in_flight.dec()
                self.retry_budget.requests -= 1

    def _early_lookup(
        self, req: ChatRequest, tenant: str, wanted: bool
    ) -> tuple[str, str, asyncio.Task[tuple[str, cache_pb2.Entry | None]]] | None:
        """Start the cache lookup beside the route when its key is already known.

        An explicit catalog model stays the primary of its chain unless the budget
        downgrades it (the router pins it, and the degraded answer keeps it too), so
        its key does not depend on the route: the two RPCs overlap instead of adding
        up. ``auto`` waits for the route, which picks the model the key names.
        """
        if not wanted or req.model not in self.policy.models:
            return None
        key = cache_key(req.model, req.body, tenant)
        task = asyncio.get_running_loop().create_task(self.cache.lookup(key, req.model))
        return req.model, key, task

    def _hit(self, call: Call, entry: cache_pb2.Entry) -> Reply | StreamReply | None:
        d = call.decision
        assert d is not None
        req, m = call.req, self.metrics
        model = entry.model or d.chain[0].name
        events: list[bytes] | None = None
        if req.stream:
            try:
                stored = orjson.loads(entry.body)
            except orjson.JSONDecodeError:
                return None  # a corrupt entry is a miss
            if not isinstance(stored, dict):
                return None
            events = replay_events(stored, req.include_usage, 0.0)
        call.cache = "hit"
        provider = next((t.provider for t in d.chain if t.name == model), d.chain[0].provider)
        m.llm_requests(*m.labels(provider, model, d.intent, call.tenant), "cache_hit").inc()
        if entry.cost_usd > 0:
            m.savings("cache", m.tenant(call.tenant)).inc(entry.cost_usd)
        m.overhead("hit").observe(max(0.0, self._clock() - call.started))
        headers = self._headers(call, model, 0.0)
        if events is None:
            return Reply(entry.body, headers, model, d.intent, "hit", 0.0)

        async def gen() -> AsyncIterator[bytes]:
            for ev in events:
                yield ev

        async def close() -> None:
            return None

        m.streams("completed").inc()
        return StreamReply(headers, gen(), close)

    async def _complete(self, call: Call) -> Reply:
        d = call.decision
        assert d is not None
        target, result, _ = await self._attempts(call, stream=False)
        raw, parsed = result
        usage = Usage.of(parsed.get("usage"))
        call.cost = usage.cost(target)
        self._account(call, target, usage, "success")
        if call.store:
            self._store(call, target, raw, usage)
        return Reply(
            raw,
            self._headers(call, target.name, call.cost),
            target.name,
            d.intent,
            call.cache,
            call.cost,
        )

    def _store(self, call: Call, target: Target, body: bytes, usage: Usage) -> None:
        d = call.decision
        assert d is not None
        # An answer from a fallback model is filed under that model, not the primary.
        key = (
            call.key if target is d.chain[0] else cache_key(target.name, call.req.body, call.tenant)
        )
        self.spawn(self.cache.store(key, body, target.name, usage.pb(), call.cost))

    def _account(self, call: Call, target: Target, usage: Usage, outcome: str) -> None:
        """Metrics for a finished upstream call: tokens, cost, savings, outcome, durations."""
        d, m, req = call.decision, self.metrics, call.req
        assert d is not None
        labels = m.labels(target.provider, target.name, d.intent, call.tenant)
        m.usage(labels, usage.prompt, usage.cached, usage.completion, usage.reasoning, call.cost)
        m.llm_requests(*labels, outcome).inc()
        if req.model == "auto" and d.baseline is not None and d.baseline.name != target.name:
            baseline_cost = cost_usd(d.baseline.entry, usage.prompt, usage.completion, usage.cached)
            saved = baseline_cost - call.cost
            if saved > 0:
                m.savings("routing", m.tenant(call.tenant)).inc(saved)
        total = self._clock() - call.started
        m.genai(
            target.provider,
            req.model,
            target.name,
            total,
            "" if outcome == "success" else outcome,
            usage.prompt,
            usage.completion,
        )
        overhead = total - call.upstream_seconds - call.wait_seconds
        m.overhead(call.cache).observe(max(0.0, overhead))

    # --- attempts, retries, fallbacks -----------------------------------------------
    async def _attempts(self, call: Call, stream: bool) -> tuple[Target, Any, float]:
        """(the model that answered, its result, when its attempt started)."""
        d, m, req = call.decision, self.metrics, call.req
        assert d is not None
        policy = self.retry_policy
        deadline = call.started + self.settings.request_deadline_seconds
        total = 0
        last: Failure | None = None
        last_target = d.chain[0]
        for i, target in enumerate(d.chain):
            if i > 0:
                reason = last.error_class if last is not None else CIRCUIT_OPEN
                m.fallback(d.chain[i - 1].name, target.name, reason)
            breaker = self.breaker(target)
            on_model = 0
            payload = b""
            while total < policy.total_attempts:
                if not breaker.allow():
                    if on_model == 0:
                        m.upstream_error(target.provider, target.name, CIRCUIT_OPEN)
                        last, last_target = Failure(CIRCUIT_OPEN), target
                    break
                remaining = deadline - self._clock()
                if remaining <= 0:
                    breaker.release()
                    raise self._exhausted(call, last_target, Failure("deadline"))
                budget = min(remaining, self.settings.upstream_timeout_seconds)
                payload = payload or self._payload(req, target)
                on_model += 1
                total += 1
                retrying = on_model > 1
                if retrying:
                    self.retry_budget.retries += 1
                t0 = self._clock()
                try:
                    if stream:
                        result: Any = await self.upstreams.stream(target, payload, budget)
                    else:
                        result = await self.upstreams.complete(target, payload, budget)
                except AttemptFailed as exc:
                    f = exc.failure
                    elapsed = self._clock() - t0
                    call.upstream_seconds += elapsed
                    m.upstream_duration(m.provider(target.provider), m.model(target.name)).observe(
                        elapsed
                    )
                    m.upstream_error(target.provider, target.name, f.error_class)
                    if f.counts_against_breaker:
                        breaker.record_failure()
                    else:
                        breaker.release()
                    last, last_target = f, target
                    if f.error_class == CLIENT:
                        raise self._passthrough(call, target, f) from None
                    delay = policy.retry_delay(
                        f, on_model, total, deadline - self._clock(), self._rand
                    )
                    if delay is None or not self.retry_budget.allows():
                        break
                    m.retry(target.provider, target.name, f.error_class)
                    await asyncio.sleep(delay)
                    call.wait_seconds += delay
                    continue
                except BaseException:
                    breaker.release()
                    raise
                finally:
                    if retrying:
                        self.retry_budget.retries -= 1
                breaker.record_success()
                elapsed = self._clock() - t0
                call.upstream_seconds += elapsed
                if not stream:
                    m.upstream_duration(m.provider(target.provider), m.model(target.name)).observe(
                        elapsed
                    )
                return target, result, t0
            if total >= policy.total_attempts:
                break
        raise self._exhausted(call, last_target, last)

    def _fail(self, call: Call, target: Target, error_type: str) -> None:
        d, m = call.decision, self.metrics
        assert d is not None
        m.llm_requests(
            *m.labels(target.provider, target.name, d.intent, call.tenant), "error"
        ).inc()
        total = self._clock() - call.started
        m.genai(target.provider, call.req.model, target.name, total, error_type)
        overhead = total - call.upstream_seconds - call.wait_seconds
        m.overhead(call.cache).observe(max(0.0, overhead))

    def _passthrough(self, call: Call, target: Target, f: Failure) -> ApiError:
        self._fail(call, target, CLIENT)
        return upstream_error(f.status or 400, f.body)

    def _exhausted(self, call: Call, target: Target, last: Failure | None) -> ApiError:
        cls = last.error_class if last is not None else CIRCUIT_OPEN
        self._fail(call, target, cls)
        if cls == CIRCUIT_OPEN:
            return ApiError(
                503,
                "Every model that could serve this request is unavailable; retry shortly.",
                type_=SERVER,
                code="upstream_unavailable",
                headers={"retry-after": "1"},
            )
        if cls in ("deadline", TIMEOUT):
            return ApiError(
                504, "The upstream model did not answer in time.", type_=SERVER, code="timeout"
            )
        if cls == RATE_LIMIT:
            assert last is not None
            ra = last.retry_after
            return ApiError(
                429,
                "The upstream model is rate limited; retry later.",
                type_="rate_limit_error",
                code="rate_limit_exceeded",
                headers={"retry-after": str(max(1, math.ceil(ra if ra is not None else 1)))},
            )
        if cls == UPSTREAM_AUTH:
            # The provider's text can hold a masked key and the account's URL: never relay it.
            return ApiError(
                502,
                "The upstream provider refused the gateway's credentials; "
                "this is a gateway configuration problem, not your API key.",
                type_=SERVER,
                code="upstream_auth_error",
            )
        if cls == MODEL_NOT_FOUND:
            return ApiError(
                502,
                "The upstream provider does not serve the model the gateway is configured with.",
                type_=SERVER,
                code="upstream_model_not_found",
            )
        return ApiError(
            502,
            f"The upstream model failed ({cls}) and no fallback succeeded.",
            type_=SERVER,
            code="upstream_error",
        )

    # --- streaming --------------------------------------------------------------------
    async def _stream(self, call: Call) -> StreamReply:
        target, upstream, t0 = await self._attempts(call, stream=True)
        m = self.metrics
        now = self._clock()
        m.ttft(m.provider(target.provider), m.model(target.name)).observe(now - call.started)
        relay = _Relay(call, target, upstream, t0, now, Assembler() if call.store else None)

        async def close() -> None:
            await self._finish(relay)

        return StreamReply(self._headers(call, target.name, None), self._relay(relay), close)

    def _forward(self, r: _Relay, payload: bytes) -> bytes | None:
        """The event to send for one upstream payload, or None to drop it."""
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return event(payload)  # not ours to judge; forward untouched
        if not isinstance(chunk, dict):
            return event(payload)
        if r.assembler is not None:
            r.assembler.add(chunk)
        if chunk.get("choices"):
            r.chunks += 1
        if isinstance(chunk.get("usage"), dict):
            r.usage = Usage.of(chunk["usage"])
            r.call.cost = r.usage.cost(r.target)
            if not chunk.get("choices"):  # the usage chunk we asked for
                if not r.call.req.include_usage:
                    return None
                chunk[COST_FIELD] = r.call.cost
                return event(orjson.dumps(chunk))
        return event(payload)

    async def _relay(self, r: _Relay) -> AsyncIterator[bytes]:
        done = False
        try:
            for payload in r.upstream.first:
                ev = self._forward(r, payload)
                if ev is not None:
                    yield ev
            async for payload in r.upstream:
                if payload == DONE:
                    done = True
                    break
                if payload.startswith(b'{"error"'):
                    break
                ev = self._forward(r, payload)
                if ev is not None:
                    yield ev
            if done:
                r.outcome = "completed"
                yield DONE_EVENT
            else:
                r.outcome = "error"
                yield self._stream_error(r, PROTOCOL)
        except (httpx2.HTTPError, OSError, TimeoutError):
            # After the first byte a stream cannot be retried: end it with an error event.
            r.outcome = "error"
            yield self._stream_error(r, PROTOCOL)
        finally:
            with anyio.CancelScope(shield=True):
                await self._finish(r)

    def _stream_error(self, r: _Relay, error_class: str) -> bytes:
        m = self.metrics
        m.upstream_error(r.target.provider, r.target.name, error_class)
        self._estimate_partial(r)
        return error_event(
            "The upstream stream failed after it started; the answer is incomplete.",
            SERVER,
            "upstream_stream_error",
            r.call.cost,
        )

    def _estimate_partial(self, r: _Relay) -> None:
        """A stream that ended without usage still cost something: estimate it."""
        if r.usage is None:
            r.usage = Usage(prompt=r.call.req.est_prompt_tokens, completion=r.chunks)
            r.call.cost = r.usage.cost(r.target)

    async def _finish(self, r: _Relay) -> None:
        """Accounting for a stream, exactly once, however it ended."""
        if r.finished:
            return
        r.finished = True
        call, m, target = r.call, self.metrics, r.target
        try:
            await r.upstream.aclose()  # a client that left stops the upstream's spending
        except Exception:  # closing a broken connection may raise; it is closed either way
            log.debug("upstream close failed", exc_info=True)
        elapsed = self._clock() - r.opened
        call.upstream_seconds += elapsed
        m.upstream_duration(m.provider(target.provider), m.model(target.name)).observe(
            r.opened - r.attempt_started + elapsed
        )
        self._estimate_partial(r)
        assert r.usage is not None
        outcome = {"completed": "success", "error": "partial"}.get(r.outcome, "cancelled")
        m.streams(r.outcome).inc()
        self._account(call, target, r.usage, outcome)
        if r.outcome == "completed" and r.assembler is not None:
            body = orjson.dumps(r.assembler.completion())
            self._store(call, target, body, r.usage)
        try:
            if call.reservation is not None:
                await self.budgets.settle(call.reservation, call.cost)
        finally:
            m.llm_in_flight.dec()
            self.retry_budget.requests -= 1
