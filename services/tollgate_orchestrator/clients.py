"""The gRPC clients of the router and the cache: short deadlines, a breaker each, and a
degraded answer instead of an error when they fail.

Router down or slow: the local policy's default model (or the explicit model, when
the local catalog has it), with ``degraded=True``. Cache down or slow: no entry,
and the request bypasses the cache. Both are counted in ``tollgate_degraded_total``.

Providers this deployment has no key for (``Upstreams.unavailable``) are skipped on
every path: the router is told to leave their models out, the degraded route and the
embedding chains drop them, and a request naming one of their models is refused at
once (``provider_unavailable``) rather than failed over to a model it did not ask for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Collection

import grpc

from tollgate.cache.v1 import cache_pb2, cache_pb2_grpc
from tollgate.router.v1 import router_pb2, router_pb2_grpc
from tollgate_common.breaker import CircuitBreaker
from tollgate_common.policy import TIERS, Policy, PolicyError, Provider, parse_policy
from tollgate_orchestrator.catalog import Catalog
from tollgate_orchestrator.errors import ApiError, bad_request, model_not_allowed, model_not_found
from tollgate_orchestrator.integrity import Signer
from tollgate_orchestrator.metrics import OrchestratorMetrics
from tollgate_orchestrator.types import EMBEDDINGS_API, LlmRequest, RouteDecision

log = logging.getLogger(__name__)

DEGRADED_INTENT = "other"


def provider_unavailable(model: str, provider: str, entry: Provider | None) -> ApiError:
    """A named model whose provider has no key here. A 400, not a 503: retrying cannot
    help (SDKs retry 503s, and Anthropic's shape would call it ``overloaded_error``);
    the client has to name another model or ``auto``. Names the env var, never a key."""
    if entry is not None and entry.api_key_file:
        missing = "its api_key_file is empty or unreadable"
    elif entry is not None and entry.api_key_env:
        missing = f"{entry.api_key_env[:100]} is unset or empty"
    else:
        missing = "no key is configured"
    return ApiError(
        400,
        f"The model `{model[:100]}` is served by provider `{provider[:100]}`, which has no "
        f"API key on this gateway ({missing}); use another model or `auto`.",
        param="model",
        code="model_not_available",
        reason="invalid",
    )


def degraded_model(
    policy: Policy, model: str, tenant: str, skip: Collection[str] = frozenset()
) -> str:
    """The chat model to serve without the router; raises 404, 400 (an embedding model
    or one of a provider in ``skip``, which has no key) or 403 as the router would."""
    rules = policy.tenants.get(tenant)
    allowed = rules.allowed_models if rules is not None else None
    if model != "auto":
        if model not in policy.models:
            raise model_not_found(model)
        entry = policy.models[model]
        if entry.kind != "chat":
            raise bad_request("model", f"The model `{model[:100]}` is an embedding model.")
        if allowed is not None and model not in allowed:
            raise model_not_allowed(model)
        if entry.provider in skip:
            raise provider_unavailable(model, entry.provider, policy.providers.get(entry.provider))
        return model

    def usable(name: str) -> bool:
        m = policy.models.get(name)
        return (
            m is not None
            and m.kind == "chat"
            and (allowed is None or name in allowed)
            and m.provider not in skip
        )

    if usable(policy.default_model):
        return policy.default_model
    # The tenant's own chain for small chat (within any max_tier), else any allowed chat
    # model (allowed_models may list embedding models too), on a provider with a key.
    others: list[str] = list(allowed if allowed is not None else policy.models)
    for name in (*policy.chain("chat", TIERS[0], tenant), *others):
        if usable(name):
            return name
    if skip:  # no reachable model at all: serve as without the list (its attempt fails over)
        return degraded_model(policy, model, tenant)
    raise model_not_allowed(model)


def _reason_of(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError) and exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        return "timeout"
    if isinstance(exc, TimeoutError):
        return "timeout"
    return "unavailable"


class RouterClient:
    def __init__(
        self,
        stub: router_pb2_grpc.RouterStub,
        catalog: Catalog,
        timeout: float,
        breaker: CircuitBreaker,
        metrics: OrchestratorMetrics,
        unavailable: Collection[str] = (),
    ) -> None:
        self._stub = stub
        self._catalog = catalog
        self._timeout = timeout
        self._breaker = breaker
        self._metrics = metrics
        self._refreshing: asyncio.Task[bool] | None = None
        self._last_yaml = ""
        self._skip: frozenset[str] = frozenset()
        self._skip_sent: tuple[str, ...] = ()
        self._skip_keys: dict[str, Provider] = {}
        if unavailable:
            self.set_unavailable(unavailable)

    def set_unavailable(self, providers: Collection[str]) -> None:
        """The providers with no key here (``Upstreams.unavailable``), once per load of the
        upstreams: what every request then sends and checks is built now. Where each key
        was expected comes from this deployment's own policy (the catalog's at this
        point), never from a followed one."""
        self._skip = frozenset(providers)
        self._skip_sent = tuple(sorted(self._skip))
        own = self._catalog.policy.providers
        self._skip_keys = {p: own[p] for p in self._skip if p in own}

    @property
    def unavailable(self) -> frozenset[str]:
        return self._skip

    def _check_named(self, model: str) -> None:
        """Refuse a named model of a provider with no key (before asking the router)."""
        if not self._skip:
            return
        entry = self._catalog.policy.models.get(model)
        if entry is not None and entry.kind == "chat" and entry.provider in self._skip:
            raise provider_unavailable(model, entry.provider, self._skip_keys.get(entry.provider))

    def _request(
        self, req: LlmRequest, tenant: str, request_id: str, downgrade: bool
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
            has_images=req.has_images,
            skip_providers=self._skip_sent,
        )

    async def route(
        self, req: LlmRequest, tenant: str, request_id: str, downgrade: bool
    ) -> RouteDecision:
        if req.api == EMBEDDINGS_API:
            # An embedding model is named, never classified: the router has nothing to
            # decide, and the route holds whether the router is up or not. It never
            # names a chat model (nor the router's routes an embedding one).
            return self._embedding_route(req.model, tenant)
        if req.model != "auto":
            self._check_named(req.model)
        if not self._breaker.allow():
            self._metrics.degraded("router", "circuit_open")
            return self.local(req.model, tenant)
        try:
            resp: router_pb2.RouteResponse = await self._stub.Route(
                self._request(req, tenant, request_id, downgrade), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.NOT_FOUND:
                self._breaker.record_success()  # the router answered
                raise model_not_found(req.model) from None
            if code == grpc.StatusCode.PERMISSION_DENIED:
                self._breaker.record_success()  # a refusal is an answer, not an outage
                raise model_not_allowed(req.model) from None
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                self._breaker.record_success()
                raise ApiError(
                    400, exc.details() or "invalid request", param="model", reason="invalid"
                ) from None
            return self._degrade(req, exc, tenant)
        except Exception as exc:  # a broken channel: same as unreachable
            return self._degrade(req, exc, tenant)
        self._breaker.record_success()
        self._metrics.set_up("router", True)
        if resp.policy_version and resp.policy_version != self._catalog.version:
            self._refresh_soon()
        if not resp.chain:
            return self._degrade(req, RuntimeError("empty chain"), tenant)
        catalog = self._catalog
        # Priced from our own catalog, never from the answer; unknown models are dropped.
        found = [catalog.local(mt.name) for mt in resp.chain]
        if None in found:
            await self._refresh_now()  # a model newer than our copy of the policy
            found = [catalog.local(mt.name) for mt in resp.chain]
        chain = tuple(t for t in found if t is not None)
        if not chain:
            return self._degrade(req, RuntimeError("no chain model in the catalog"), tenant)
        baseline = catalog.local(resp.baseline.name) if resp.baseline.name else None
        return RouteDecision(resp.intent, resp.tier, chain, baseline, False, resp.reason)

    def _embedding_route(self, model: str, tenant: str) -> RouteDecision:
        d = self._catalog.embedding_route(model, tenant)
        if not self._skip:
            return d
        chain = tuple(t for t in d.chain if t.provider not in self._skip)
        if chain == d.chain:
            return d
        if not chain or (model != "auto" and chain[0].name != model):
            first = d.chain[0]
            raise provider_unavailable(
                first.name, first.provider, self._skip_keys.get(first.provider)
            )
        return RouteDecision(d.intent, d.tier, chain, d.baseline, d.degraded, d.reason)

    def _degrade(self, req: LlmRequest, exc: BaseException, tenant: str = "") -> RouteDecision:
        self._breaker.record_failure()
        self._metrics.set_up("router", False)
        self._metrics.degraded("router", _reason_of(exc))
        return self.local(req.model, tenant)

    def local(self, model: str, tenant: str = "") -> RouteDecision:
        """The router's answer when it cannot be asked: the explicit model, or the default
        one, within the tenant's ``allowed_models`` and ``max_tier`` as the router would."""
        catalog = self._catalog
        policy = catalog.policy
        if model != "auto":
            self._check_named(model)
        name = degraded_model(policy, model, tenant, self._skip)
        target = catalog.local(name)
        assert target is not None  # degraded_model only names catalog models
        baseline = catalog.local(policy.baseline_model)
        return RouteDecision(DEGRADED_INTENT, "", (target,), baseline, True, "router unavailable")

    async def _refresh_now(self) -> None:
        self._refresh_soon()
        assert self._refreshing is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._refreshing), timeout=self._timeout)

    def _refresh_soon(self) -> None:
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.get_running_loop().create_task(self.refresh())

    async def refresh(self) -> bool:
        """Fetch the router's policy and follow it; on any failure keep the one we have."""
        try:
            resp: router_pb2.GetPolicyResponse = await self._stub.GetPolicy(
                router_pb2.GetPolicyRequest(), timeout=max(self._timeout, 1.0)
            )
        except grpc.aio.AioRpcError as exc:
            log.debug("policy fetch failed", extra={"code": exc.code().name})
            return False
        # The text, not only the version: a document pushed under an unchanged version
        # still changes the policy. Parsed once per distinct text.
        if not resp.policy_yaml or resp.policy_yaml == self._last_yaml:
            return False
        self._last_yaml = resp.policy_yaml
        try:
            policy = parse_policy(resp.policy_yaml)
        except PolicyError as exc:
            log.warning("router policy refused, keeping ours", extra={"error": str(exc)[:300]})
            return False
        if not policy.version:
            return False
        return self._catalog.apply(policy.model_copy(update={"version": resp.version}))


class CacheClient:
    def __init__(
        self,
        stub: cache_pb2_grpc.CacheStub,
        timeout: float,
        breaker: CircuitBreaker,
        metrics: OrchestratorMetrics,
        signer: Signer | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._stub = stub
        self._timeout = timeout
        self._breaker = breaker
        self._metrics = metrics
        # Without a shared key, entries verify only on the replica that stored them.
        self._signer = signer or Signer(secrets.token_bytes(32))
        self._clock = clock

    async def lookup(self, key: str, model: str) -> tuple[str, cache_pb2.Entry | None]:
        """(result, entry): result is hit, miss, invalid (an entry whose signature fails:
        a miss) or error (then the request bypasses)."""
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
        if not resp.hit:
            return "miss", None
        if not self._signer.verify(key, resp.entry):
            return "invalid", None  # made up or altered outside the orchestrators: a miss
        return "hit", resp.entry

    async def store(
        self,
        key: str,
        body: bytes,
        model: str,
        usage: cache_pb2.Usage,
        cost_usd: float,
        ttl_seconds: int = 0,
    ) -> bool:
        if not self._breaker.allow():
            return False
        entry = cache_pb2.Entry(
            body=body, model=model, usage=usage, cost_usd=cost_usd, created_unix=int(self._clock())
        )
        self._signer.sign(key, entry)
        try:
            resp: cache_pb2.StoreResponse = await self._stub.Store(
                cache_pb2.StoreRequest(key=key, entry=entry, ttl_seconds=ttl_seconds),
                timeout=self._timeout,
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
