"""The routing decision: policy + request -> intent, tier and the model chain to try.

Pure (no gRPC, no I/O, no metrics). The steps, in order:
1. classify the request (intent, confidence, complexity -> tier);
2. cap the tier at the tenant's ``max_tier``; a budget ``downgrade`` forces the cheapest tier;
3. take the chain for (intent, tier), the tenant's routes first; an explicit model is
   pinned as primary and the chain supplies its fallbacks;
4. drop models the tenant may not use, whose provider the caller cannot reach (it has
   no key for it: ``skip_providers``), that lack a needed capability (tools, json,
   vision) or whose context window is too small; if nothing is left, pick the cheapest
   catalog models that fit, and say so in the reason. Images need ``vision`` only in a
   policy that gives some model that capability: one written before it keeps its chains.

An explicit model stays the primary whatever its provider: the orchestrator answers a
named model it cannot reach with its own error before asking (it knows which key is
missing); only the fallbacks behind it are filtered.

Only chat models are routed: embedding models serve /v1/embeddings, which the
orchestrator routes by name without asking here; the policy keeps them out of chains.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tollgate_common.policy import TIERS, ModelEntry, Policy, TenantPolicy, cost_usd
from tollgate_router.classifier import Classification, Features, classify

AUTO = "auto"
COMPLETION_TOKENS_GUESS = 256  # when the client sets no max_tokens
MAX_SUBSTITUTES = 3  # models picked from the catalog when the whole chain is unfit

# Why the router did not return the policy's first choice (bounded metric label).
FALLBACK_REASONS = (
    "max_tier",
    "downgrade",
    "allowed_models",
    "provider_unavailable",
    "capability",
    "context_window",
    "no_eligible_model",
)


class RoutingError(Exception):
    """The request cannot be routed; the message says why."""


class UnknownModel(RoutingError):
    def __init__(self, model: str) -> None:
        super().__init__(f"model {model!r} is not in the routing policy's catalog")
        self.model = model


class NotAChatModel(RoutingError):
    """An explicit model that is an embedding model: it cannot answer a chat request."""

    def __init__(self, model: str) -> None:
        super().__init__(f"model {model!r} is an embedding model; use it on /v1/embeddings")
        self.model = model


class ModelNotAllowed(RoutingError):
    def __init__(self, model: str, tenant: str) -> None:
        if model:
            super().__init__(f"model {model!r} is not allowed for tenant {tenant!r}")
        else:
            super().__init__(f"tenant {tenant!r} is allowed no model of the policy")
        self.model = model
        self.tenant = tenant


@dataclass(frozen=True, slots=True)
class RouteInput:
    model: str = AUTO  # "auto" (or empty) or a catalog name
    tenant: str = ""
    features: Features = field(default_factory=Features)
    downgrade: bool = False  # budget action
    # Providers the caller has no key for: their models are unfit (a frozenset, so each
    # check is one hash lookup; empty for most callers).
    skip_providers: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Decision:
    intent: str
    tier: str
    chain: tuple[str, ...]  # primary first
    reason: str
    estimated_cost_usd: float
    confidence: float
    baseline: str
    complexity: float
    fallbacks: tuple[str, ...] = ()  # members of FALLBACK_REASONS


# The capabilities a request needs, by (tools, json, images): built once, not per request.
_NEEDS: dict[tuple[bool, bool, bool], tuple[str, ...]] = {
    (t, j, i): tuple(cap for cap, wanted in (("tools", t), ("json", j), ("vision", i)) if wanted)
    for t in (False, True)
    for j in (False, True)
    for i in (False, True)
}


def _declares_vision(policy: Policy) -> bool:
    # Scanned only for requests with images, a few per cent of traffic.
    return any("vision" in m.capabilities for m in policy.models.values() if m.kind == "chat")


def _unfit(
    name: str,
    entry: ModelEntry,
    allowed: list[str] | None,
    needs: tuple[str, ...],
    context_tokens: int,
    skip: frozenset[str],
) -> str:
    """The FALLBACK_REASONS key that rules ``name`` out, or "" when it fits."""
    if allowed is not None and name not in allowed:
        return "allowed_models"
    if entry.provider in skip:
        return "provider_unavailable"
    for cap in needs:
        if cap not in entry.capabilities:
            return "capability"
    if context_tokens > entry.context_window:
        return "context_window"
    return ""


def _substitutes(
    policy: Policy,
    allowed: list[str] | None,
    needs: tuple[str, ...],
    context_tokens: int,
    prompt_tokens: int,
    completion_tokens: int,
    skip: frozenset[str],
) -> tuple[list[str], bool]:
    """The cheapest catalog models that fit. When none does, the allowed models with
    the largest context windows, with capabilities relaxed next and skipped providers
    last (their attempts then fail over at once, as without the list); the bool says so."""

    def price(name: str) -> float:
        return cost_usd(policy.models[name], prompt_tokens, completion_tokens)

    chat = {n: m for n, m in policy.models.items() if m.kind == "chat"}
    fit = [n for n, m in chat.items() if not _unfit(n, m, allowed, needs, context_tokens, skip)]
    if fit:
        fit.sort(key=price)
        return fit[:MAX_SUBSTITUTES], False
    usable: list[str] = []
    for relaxed_needs, relaxed_skip in ((needs, skip), ((), skip), ((), frozenset[str]())):
        usable = [
            n for n, m in chat.items() if not _unfit(n, m, allowed, relaxed_needs, 0, relaxed_skip)
        ]
        if usable:
            break
    usable.sort(key=lambda n: (-policy.models[n].context_window, price(n)))
    return usable[:MAX_SUBSTITUTES], True


def _tier(
    c: Classification, tenant: TenantPolicy | None, downgrade: bool, notes: list[str]
) -> tuple[str, list[str]]:
    tier = c.tier
    changed: list[str] = []
    cap = tenant.max_tier if tenant is not None else None
    if cap is not None and TIERS.index(tier) > TIERS.index(cap):
        tier = cap
        notes.append(f"tenant max_tier -> {tier}")
        changed.append("max_tier")
    if downgrade and tier != TIERS[0]:
        tier = TIERS[0]
        notes.append(f"budget downgrade -> {tier}")
        changed.append("downgrade")
    return tier, changed


def decide(policy: Policy, req: RouteInput) -> Decision:
    """Route one request. Raises ``UnknownModel``, ``NotAChatModel`` or ``ModelNotAllowed``."""
    f = req.features
    tenant = policy.tenants.get(req.tenant) if req.tenant else None
    allowed = tenant.allowed_models if tenant is not None else None
    explicit = req.model not in ("", AUTO)
    if explicit:
        if req.model not in policy.models:
            raise UnknownModel(req.model)
        if policy.models[req.model].kind != "chat":
            raise NotAChatModel(req.model)
        if allowed is not None and req.model not in allowed:
            raise ModelNotAllowed(req.model, req.tenant)

    c = classify(f)
    notes: list[str] = []
    tier, tier_changes = _tier(c, tenant, req.downgrade, notes)
    base = policy.chain(c.intent, tier, req.tenant)
    # A budget downgrade overrides an explicit model too: that is the budget's point.
    pinned = explicit and not req.downgrade
    if pinned:
        chain = [req.model, *(m for m in base if m != req.model)]
        fallbacks: list[str] = []
    else:
        chain = list(base)
        fallbacks = tier_changes
        if explicit and chain[0] != req.model:
            notes.append(f"budget downgrade replaces {req.model}")
            if "downgrade" not in fallbacks:
                fallbacks.append("downgrade")

    images = f.has_images
    if images and not _declares_vision(policy):
        # A policy that tags no model with vision predates the filter: its chains stand.
        images = False
        notes.append("no model declares vision; images not filtered")
    needs = _NEEDS[f.has_tools, f.json_mode, images]
    prompt_tokens = f.prompt_tokens()
    completion_tokens = f.max_tokens if f.max_tokens > 0 else COMPLETION_TOKENS_GUESS
    context_tokens = prompt_tokens + max(f.max_tokens, 0)
    kept: list[str] = chain[:1] if pinned else []
    skip = req.skip_providers
    for name in chain[len(kept) :]:
        why = _unfit(name, policy.models[name], allowed, needs, context_tokens, skip)
        if why:
            notes.append(f"dropped {name} ({why})")
            if name == chain[0]:
                fallbacks.append(why)
        else:
            kept.append(name)
    if not kept:
        kept, relaxed = _substitutes(
            policy, allowed, needs, context_tokens, prompt_tokens, completion_tokens, skip
        )
        if not kept:
            raise ModelNotAllowed("", req.tenant)
        if relaxed:
            notes.append("no allowed model fits every constraint; closest")
            fallbacks.append("no_eligible_model")
        else:
            notes.append("no chain model fits; cheapest that do")

    head = f"model {req.model} requested; " if explicit else ""
    reason = (
        f"{head}intent={c.intent} ({c.confidence:.2f}) complexity={c.complexity:.2f}"
        f" -> tier {c.tier}; " + "".join(n + "; " for n in notes) + "chain " + " > ".join(kept)
    )
    return Decision(
        intent=c.intent,
        tier=tier,
        chain=tuple(kept),
        reason=reason,
        estimated_cost_usd=cost_usd(policy.models[kept[0]], prompt_tokens, completion_tokens),
        confidence=c.confidence,
        baseline=policy.baseline_model,
        complexity=c.complexity,
        fallbacks=tuple(fallbacks),
    )
