"""The router and cache as the orchestrator sees them: short deadlines, a breaker each,
and a degraded answer instead of an error when they fail.

Router down or slow: the local policy's default model (or the explicit model, when
the local catalog has it), with ``degraded=True``. Cache down or slow: no entry,
and the request bypasses the cache. Both are counted in ``tollgate_degraded_total``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from tollgate.cache.v1 import cache_pb2, cache_pb2_grpc
from tollgate.router.v1 import router_pb2, router_pb2_grpc
from tollgate_common.breaker import CircuitBreaker
from tollgate_common.policy import ModelEntry, Policy
from tollgate_orchestrator.errors import ApiError
from tollgate_orchestrator.metrics import OrchestratorMetrics
from tollgate_orchestrator.upstream import Target
from tollgate_orchestrator.validation import ChatRequest

log = logging.getLogger(__name__)

DEGRADED_INTENT = "other"
_TARGET_MEMO_MAX = 1024


@dataclass(frozen=True, slots=True)
class RouteDecision:
    intent: str
    tier: str
    chain: tuple[Target, ...]
    baseline: Target | None
    degraded: bool = False
    reason: str = ""


def model_not_found(model: str) -> ApiError:
    return ApiError(
        404,
        f"The model `{model[:100]}` does not exist or you do not have access to it.",
        param="model",
        code="model_not_found",
        reason="not_found",
    )


def _reason_of(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError) and exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        return "timeout"
    if isinstance(exc, TimeoutError):
        return "timeout"
    return "unavailable"


class Targets:
    """Builds ``Target``s from the router's answers or the local policy, memoised:
    the same model and price make one object, not one per request."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._memo: dict[tuple[object, ...], Target] = {}

    def local(self, name: str) -> Target | None:
        m = self.policy.models.get(name)
        if m is None:
            return None
        key = ("local", name)
        t = self._memo.get(key)
        if t is None:
            t = Target(name, m.provider, m.upstream_model or name, m, m.context_window)
            self._remember(key, t)
        return t

    def remote(self, mt: router_pb2.ModelTarget) -> Target:
        p = mt.price
        key = (
            mt.name,
            mt.provider,
            mt.upstream_model,
            p.input_per_mtok,
            p.cached_input_per_mtok,
            p.output_per_mtok,
            mt.context_window,
        )
        t = self._memo.get(key)
        if t is None:
            entry = ModelEntry(
                provider=mt.provider,
                upstream_model=mt.upstream_model or mt.name,
                input_per_mtok=p.input_per_mtok,
                cached_input_per_mtok=p.cached_input_per_mtok,
                output_per_mtok=p.output_per_mtok,
                context_window=mt.context_window or 128_000,
            )
            t = Target(
                mt.name,
                mt.provider,
                mt.upstream_model or mt.name,
                entry,
                entry.context_window,
            )
            self._remember(key, t)
        return t

    def _remember(self, key: tuple[object, ...], t: Target) -> None:
        if len(self._memo) >= _TARGET_MEMO_MAX:
            self._memo.clear()
        self._memo[key] = t


class RouterClient:
    def __init__(
        self,
        stub: router_pb2_grpc.RouterStub,
        targets: Targets,
        timeout: float,
        breaker: CircuitBreaker,
        metrics: OrchestratorMetrics,
    ) -> None:
        self._stub = stub
        self._targets = targets
        self._timeout = timeout
        self._breaker = breaker
        self._metrics = metrics

    def _request(
        self, req: ChatRequest, tenant: str, request_id: str, downgrade: bool
    ) -> router_pb2.RouteRequest:
        return router_pb2.RouteRequest(
            model=req.model,
            tenant=tenant,
            features=router_pb2.MessageFeatures(
                last_user_text=req.last_user_text,
                system_text=req.system_text,
                turns=req.turns,
                prompt_chars=req.prompt_chars,
                estimated_prompt_tokens=req.est_prompt_tokens,
            ),
            has_tools=req.has_tools,
            json_mode=req.json_mode,
            max_tokens=min(req.max_tokens or 0, 2**31 - 1),
            request_id=request_id,
            downgrade=downgrade,
        )

    async def route(
        self, req: ChatRequest, tenant: str, request_id: str, downgrade: bool
    ) -> RouteDecision:
        if not self._breaker.allow():
            self._metrics.degraded("router", "circuit_open")
            return self.local(req.model)
        try:
            resp: router_pb2.RouteResponse = await self._stub.Route(
                self._request(req, tenant, request_id, downgrade), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.NOT_FOUND:
                self._breaker.record_success()  # the router answered
                raise model_not_found(req.model) from None
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                self._breaker.record_success()
                raise ApiError(
                    400, exc.details() or "invalid request", param="model", reason="invalid"
                ) from None
            return self._degrade(req, exc)
        except Exception as exc:  # a broken channel: same as unreachable
            return self._degrade(req, exc)
        self._breaker.record_success()
        self._metrics.set_up("router", True)
        if not resp.chain:
            return self._degrade(req, RuntimeError("empty chain"))
        chain = tuple(self._targets.remote(mt) for mt in resp.chain)
        baseline = self._targets.remote(resp.baseline) if resp.baseline.name else None
        return RouteDecision(resp.intent, resp.tier, chain, baseline, False, resp.reason)

    def _degrade(self, req: ChatRequest, exc: BaseException) -> RouteDecision:
        self._breaker.record_failure()
        self._metrics.set_up("router", False)
        self._metrics.degraded("router", _reason_of(exc))
        return self.local(req.model)

    def local(self, model: str) -> RouteDecision:
        """The router's answer when it cannot be asked: default model or the explicit one."""
        policy = self._targets.policy
        name = policy.default_model if model == "auto" else model
        target = self._targets.local(name)
        if target is None:
            raise model_not_found(model)
        baseline = self._targets.local(policy.baseline_model)
        return RouteDecision(DEGRADED_INTENT, "", (target,), baseline, True, "router unavailable")


class CacheClient:
    def __init__(
        self,
        stub: cache_pb2_grpc.CacheStub,
        timeout: float,
        breaker: CircuitBreaker,
        metrics: OrchestratorMetrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._stub = stub
        self._timeout = timeout
        self._breaker = breaker
        self._metrics = metrics
        self._clock = clock

    async def lookup(self, key: str, model: str) -> tuple[str, cache_pb2.Entry | None]:
        """(result, entry): result is hit, miss or error (then the request bypasses)."""
        if not self._breaker.allow():
            self._metrics.degraded("cache", "circuit_open")
            return "error", None
        try:
            resp: cache_pb2.LookupResponse = await self._stub.Lookup(
                cache_pb2.LookupRequest(key=key, model=model), timeout=self._timeout
            )
        except Exception as exc:
            self._failed(exc)
            return "error", None
        self._breaker.record_success()
        self._metrics.set_up("cache", True)
        if resp.hit:
            return "hit", resp.entry
        return "miss", None

    async def store(
        self,
        key: str,
        body: bytes,
        model: str,
        usage: cache_pb2.Usage,
        cost_usd: float,
    ) -> bool:
        if not self._breaker.allow():
            return False
        entry = cache_pb2.Entry(
            body=body, model=model, usage=usage, cost_usd=cost_usd, created_unix=int(self._clock())
        )
        try:
            resp: cache_pb2.StoreResponse = await self._stub.Store(
                cache_pb2.StoreRequest(key=key, entry=entry), timeout=self._timeout
            )
        except Exception as exc:
            # The answer already went out: a failed store degrades nothing, count no request.
            self._failed(exc, degraded=False)
            return False
        self._breaker.record_success()
        return bool(resp.stored)

    def _failed(self, exc: BaseException, degraded: bool = True) -> None:
        self._breaker.record_failure()
        self._metrics.set_up("cache", False)
        if degraded:
            self._metrics.degraded("cache", _reason_of(exc))
