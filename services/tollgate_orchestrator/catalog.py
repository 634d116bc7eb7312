"""The routing policy as the orchestrator follows it: the router's, with the last good kept.

The router is the one source. Every route answer carries the router's policy
version; when it differs from ours, and on every dependency probe, the catalog
fetches the router's policy (``GetPolicy``) and applies it. Pulling needs no new
inbound RPC and works for any number of orchestrator replicas, and a router that is
away leaves the last good policy in force. Applying a policy renews everything
that is priced or named from it: metric label sets, ``/v1/models``, the degraded
route, budget estimates and the provider clients.

Embedding requests are routed here, not by the router (``embedding_route``): an
embedding model is chosen by name, because vectors of two models do not mix, so
there is nothing to classify.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from tollgate.router.v1 import router_pb2
from tollgate_common.policy import ModelEntry, Policy
from tollgate_orchestrator.errors import bad_request, model_not_allowed, model_not_found
from tollgate_orchestrator.types import RouteDecision, Target

log = logging.getLogger(__name__)

_TARGET_MEMO_MAX = 1024
AUTO = "auto"
# The intent of an embedding decision: a value of the bounded ``intent`` label that is
# not a chat intent (tollgate_common.policy.INTENTS), like the degraded route's.
EMBEDDING_INTENT = "other"


def embedding_chain(policy: Policy, model: str, tenant: str) -> list[str]:
    """The embedding models to try for ``model`` (``auto``: the policy's default), its
    listed fallbacks after it, within the tenant's ``allowed_models``. Raises the 400,
    403 or 404 the client gets."""
    rules = policy.tenants.get(tenant)
    allowed = rules.allowed_models if rules is not None else None
    if model == AUTO:
        name = policy.embeddings.default_model
        if name is None:
            raise bad_request(
                "model", "There is no default embedding model: name an embedding model."
            )
    else:
        name = model
        entry = policy.models.get(name)
        if entry is None:
            raise model_not_found(name)
        if entry.kind != "embedding":
            raise bad_request("model", f"The model `{name[:100]}` is not an embedding model.")
    if allowed is not None and name not in allowed:
        raise model_not_allowed(name)
    fallbacks = policy.embeddings.fallbacks.get(name, [])
    return [name, *(f for f in fallbacks if allowed is None or f in allowed)]


class Catalog:
    """The policy in force, and ``Target``s built from it or from the router's answers,
    memoised: the same model and price make one object, not one per request."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._memo: dict[tuple[object, ...], Target] = {}
        self._listeners: list[Callable[[Policy], None]] = []

    @property
    def version(self) -> str:
        return self.policy.version

    def subscribe(self, listener: Callable[[Policy], None]) -> None:
        """Called with every newly applied policy (and now, with the current one)."""
        self._listeners.append(listener)
        listener(self.policy)

    def apply(self, policy: Policy) -> bool:
        if policy.version == self.policy.version and policy == self.policy:
            return False
        old = self.policy.version
        self.policy = policy
        self._memo.clear()
        for listener in self._listeners:
            listener(policy)
        log.info(
            "policy followed",
            extra={
                "version": policy.version,
                "previous_version": old,
                "models": len(policy.models),
            },
        )
        return True

    def provider_type(self, provider: str) -> str:
        """The type (``openai``, ``anthropic``, ...) of a provider of the current policy."""
        p = self.policy.providers.get(provider)
        return p.type if p is not None else provider

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

    def embedding_route(self, model: str, tenant: str) -> RouteDecision:
        """The route of an embedding request (see ``embedding_chain``), without the router."""
        names = embedding_chain(self.policy, model, tenant)
        chain = tuple(t for t in map(self.local, names) if t is not None)
        reason = "embedding model by name; chain " + " > ".join(names)
        return RouteDecision(EMBEDDING_INTENT, "", chain, None, False, reason)

    def remote(self, mt: router_pb2.ModelTarget) -> Target:
        p = mt.price
        write = p.cache_write_per_mtok if p.HasField("cache_write_per_mtok") else None
        write_1h = p.cache_write_1h_per_mtok if p.HasField("cache_write_1h_per_mtok") else None
        key = (
            mt.name,
            mt.provider,
            mt.upstream_model,
            p.input_per_mtok,
            p.cached_input_per_mtok,
            p.output_per_mtok,
            write,
            write_1h,
            mt.context_window,
        )
        t = self._memo.get(key)
        if t is None:
            default_window = ModelEntry.model_fields["context_window"].default
            entry = ModelEntry(
                provider=mt.provider,
                upstream_model=mt.upstream_model or mt.name,
                input_per_mtok=p.input_per_mtok,
                cached_input_per_mtok=p.cached_input_per_mtok,
                output_per_mtok=p.output_per_mtok,
                cache_write_per_mtok=write,
                cache_write_1h_per_mtok=write_1h,
                context_window=mt.context_window or default_window,
            )
            t = Target(
                mt.name, mt.provider, mt.upstream_model or mt.name, entry, entry.context_window
            )
            self._remember(key, t)
        return t

    def _remember(self, key: tuple[object, ...], t: Target) -> None:
        if len(self._memo) >= _TARGET_MEMO_MAX:
            self._memo.clear()
        self._memo[key] = t
