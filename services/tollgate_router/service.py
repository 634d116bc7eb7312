"""The Router gRPC servicer: proto <-> domain adaptation, status codes and metrics only."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import grpc

from tollgate.router.v1 import router_pb2, router_pb2_grpc
from tollgate_common import tracing
from tollgate_common.grpc.auth import Allowed
from tollgate_common.logging import request_id_var
from tollgate_common.policy import Policy, PolicyError
from tollgate_router.classifier import MAX_TEXT_CHARS, Features
from tollgate_router.metrics import RouterMetrics
from tollgate_router.policy_store import PolicyState, PolicyStore
from tollgate_router.routing import (
    ModelNotAllowed,
    NotAChatModel,
    RouteInput,
    UnknownModel,
    decide,
)

log = logging.getLogger(__name__)

SERVICE_NAME = router_pb2.DESCRIPTOR.services_by_name["Router"].full_name

# Who may call each method (checked by tollgate_common.grpc.auth; docs/security.md H-1).
# The operator pushes policies; orchestrators route and follow the policy.
CALLERS: dict[str, Allowed] = {
    f"/{SERVICE_NAME}/Route": frozenset({"orchestrator"}),
    f"/{SERVICE_NAME}/GetPolicy": frozenset({"orchestrator", "operator"}),
    f"/{SERVICE_NAME}/UpdatePolicy": frozenset({"operator"}),
}


class InvalidInput(ValueError):
    """A request field is wrong; the message names it."""


_NO_SKIP: frozenset[str] = frozenset()
MAX_SKIP_PROVIDERS = 64  # a caller's list is its providers without a key: a few


def _skip_set(names: Sequence[str]) -> frozenset[str]:
    # Most callers have every key: no set is built for them.
    if not names:
        return _NO_SKIP
    if len(names) > MAX_SKIP_PROVIDERS:
        raise InvalidInput(f"skip_providers: at most {MAX_SKIP_PROVIDERS} names")
    return frozenset(names)


def to_input(request: router_pb2.RouteRequest) -> RouteInput:
    f = request.features
    for name, value in (
        ("max_tokens", request.max_tokens),
        ("features.turns", f.turns),
        ("features.prompt_chars", f.prompt_chars),
        ("features.estimated_prompt_tokens", f.estimated_prompt_tokens),
    ):
        if value < 0:
            raise InvalidInput(f"{name}: must be >= 0, got {value}")
    return RouteInput(
        model=request.model,
        tenant=request.tenant,
        features=Features(
            last_user_text=f.last_user_text[:MAX_TEXT_CHARS],
            system_text=f.system_text[:MAX_TEXT_CHARS],
            turns=max(f.turns, 1),
            prompt_chars=f.prompt_chars,
            estimated_prompt_tokens=f.estimated_prompt_tokens,
            has_tools=request.has_tools,
            json_mode=request.json_mode,
            max_tokens=request.max_tokens,
            has_images=request.has_images,
        ),
        downgrade=request.downgrade,
        skip_providers=_skip_set(request.skip_providers),
    )


def build_targets(policy: Policy) -> dict[str, router_pb2.ModelTarget]:
    return {
        name: router_pb2.ModelTarget(
            name=name,
            provider=m.provider,
            upstream_model=m.upstream_model or name,
            price=router_pb2.Price(
                input_per_mtok=m.input_per_mtok or 0.0,
                cached_input_per_mtok=m.cached_input_per_mtok or 0.0,
                output_per_mtok=m.output_per_mtok or 0.0,
                cache_write_per_mtok=m.cache_write_per_mtok,
                cache_write_1h_per_mtok=m.cache_write_1h_per_mtok,
            ),
            context_window=m.context_window,
        )
        for name, m in policy.models.items()
    }


class RouterService(router_pb2_grpc.RouterServicer):
    def __init__(self, store: PolicyStore, metrics: RouterMetrics) -> None:
        self.store = store
        self.metrics = metrics
        self._state: PolicyState | None = None
        self._targets: dict[str, router_pb2.ModelTarget] = {}

    def _targets_for(self, state: PolicyState) -> dict[str, router_pb2.ModelTarget]:
        if state is not self._state:  # rebuilt once per policy, not per request
            self._targets = build_targets(state.policy)
            self._state = state
        return self._targets

    async def Route(
        self, request: router_pb2.RouteRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.RouteResponse:
        if request.request_id:
            request_id_var.set(request.request_id[:128])
        state = self.store.current
        try:
            route_input = to_input(request)
            start = time.perf_counter()
            d = decide(state.policy, route_input)
            elapsed = time.perf_counter() - start
        except (InvalidInput, NotAChatModel) as exc:
            # The orchestrator answers INVALID_ARGUMENT as a 400 on `model` with this text.
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise  # unreachable: abort raises
        except UnknownModel as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
            raise
        except ModelNotAllowed as exc:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
            raise
        self.metrics.decided(d, elapsed)
        if tracing.on:
            tracing.annotate(
                {
                    "tollgate.intent": d.intent,
                    "tollgate.tier": d.tier,
                    "tollgate.chain": list(d.chain),
                    "tollgate.route_reason": d.reason,
                    "tollgate.policy_version": state.version,
                }
            )
        targets = self._targets_for(state)
        log.debug(
            "routed",
            extra={"intent": d.intent, "tier": d.tier, "model": d.chain[0], "reason": d.reason},
        )
        return router_pb2.RouteResponse(
            intent=d.intent,
            tier=d.tier,
            chain=[targets[name] for name in d.chain],
            reason=d.reason,
            estimated_cost_usd=d.estimated_cost_usd,
            confidence=d.confidence,
            policy_version=state.version,
            baseline=targets[d.baseline],
        )

    async def UpdatePolicy(
        self, request: router_pb2.UpdatePolicyRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.UpdatePolicyResponse:
        try:
            state, changed = self.store.update(request.policy_yaml, request.source)
        except PolicyError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise
        return router_pb2.UpdatePolicyResponse(version=state.version, changed=changed)

    async def GetPolicy(
        self, request: router_pb2.GetPolicyRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.GetPolicyResponse:
        state = self.store.current
        return router_pb2.GetPolicyResponse(
            version=state.version, policy_yaml=state.yaml, source=state.source
        )
