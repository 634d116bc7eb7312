"""The routing policy: model catalog with prices, intent x tier -> model chains, tenants.

Shared by the router (which decides), the orchestrator (which falls back to the
default model and prices usage when the router is down) and the operator (which
validates RoutingPolicy resources before pushing them). ``parse_policy`` either
returns a fully checked ``Policy`` or raises ``PolicyError`` naming the field.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tollgate_common.config import format_validation_error

INTENTS = ("code", "math", "summarization", "extraction", "translation", "creative", "chat")
TIERS = ("small", "medium", "large")
Capability = Literal["tools", "json", "vision", "reasoning", "streaming"]
# The client APIs an upstream may speak natively (a request in another is translated).
Api = Literal["chat", "responses", "embeddings", "messages"]
ModelKind = Literal["chat", "embedding"]

DATA_DIR = Path(__file__).parent / "data"
DEFAULT_POLICY_FILE = DATA_DIR / "default-policy.yaml"
PRICE_TABLE_FILE = DATA_DIR / "prices.yaml"


class PolicyError(ValueError):
    """A policy document is invalid; the message names the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Provider(_Strict):
    base_url: str = Field(pattern=r"^https?://")
    api_key_env: str = ""  # env var holding the key; empty means no key
    # What the server speaks natively. OpenAI serves all three; most OpenAI-compatible
    # servers (vLLM, Ollama) only chat and embeddings: Responses is then translated to chat.
    apis: tuple[Api, ...] = Field(default=("chat", "responses", "embeddings"), min_length=1)


class ModelEntry(_Strict):
    provider: str
    upstream_model: str = ""  # defaults to the catalog name
    input_per_mtok: float | None = Field(default=None, ge=0)
    cached_input_per_mtok: float | None = Field(default=None, ge=0)
    output_per_mtok: float | None = Field(default=None, ge=0)
    # Input tokens written to the provider's prompt cache; unset: 1.25x the input price
    # (OpenAI's and Anthropic's 5-minute write price).
    cache_write_per_mtok: float | None = Field(default=None, ge=0)
    context_window: int = Field(default=128_000, gt=0)
    capabilities: tuple[Capability, ...] = ("tools", "json", "streaming")
    kind: ModelKind = "chat"  # embedding models serve /v1/embeddings only
    # The length of an embedding model's vectors: a fallback must make vectors as long.
    dimensions: int | None = Field(default=None, gt=0)


class TenantPolicy(_Strict):
    routes: dict[str, dict[str, list[str]]] = {}
    allowed_models: list[str] | None = None
    max_tier: Literal["small", "medium", "large"] | None = None


class CachePolicy(_Strict):
    """Read by the orchestrator: ``enabled: false`` stops lookups and stores, ``ttl_seconds``
    is sent with every store (unset: the cache service's ``default_ttl_seconds``)."""

    enabled: bool = True
    ttl_seconds: int | None = Field(default=None, ge=1, le=2_592_000)


class EmbeddingPolicy(_Strict):
    """Embedding models are chosen by name (vectors of two models do not mix): ``auto``
    means ``default_model``, and a model falls back only to its listed ``fallbacks``."""

    default_model: str | None = None
    fallbacks: dict[str, list[str]] = {}


class Policy(_Strict):
    version: str = ""
    providers: dict[str, Provider]
    models: dict[str, ModelEntry] = Field(min_length=1)
    routes: dict[str, dict[str, list[str]]]
    default_model: str
    baseline_model: str
    tenants: dict[str, TenantPolicy] = {}
    cache: CachePolicy = CachePolicy()
    embeddings: EmbeddingPolicy = EmbeddingPolicy()

    @model_validator(mode="after")
    def _check_references(self) -> Policy:
        errors: list[str] = []
        for name, m in self.models.items():
            if m.provider not in self.providers:
                errors.append(f"models.{name}.provider: unknown provider {m.provider!r}")
            for field in ("input_per_mtok", "cached_input_per_mtok", "output_per_mtok"):
                if getattr(m, field) is None:
                    errors.append(f"models.{name}.{field}: missing, and not in the price table")
        for field in ("default_model", "baseline_model"):
            if getattr(self, field) not in self.models:
                errors.append(f"{field}: unknown model {getattr(self, field)!r}")
        errors += _check_routes("routes", self.routes, self.models, require_all=True)
        for tname, t in self.tenants.items():
            errors += _check_routes(f"tenants.{tname}.routes", t.routes, self.models, False)
            for i, model in enumerate(t.allowed_models or []):
                if model not in self.models:
                    errors.append(f"tenants.{tname}.allowed_models[{i}]: unknown model {model!r}")
        errors += _check_kinds(self)
        if errors:
            raise ValueError("; ".join(errors))
        return self

    def chain(self, intent: str, tier: str, tenant: str = "") -> list[str]:
        t = self.tenants.get(tenant)
        if t is not None and intent in t.routes and tier in t.routes[intent]:
            return t.routes[intent][tier]
        return self.routes[intent][tier]


def _check_routes(
    where: str,
    routes: dict[str, dict[str, list[str]]],
    models: dict[str, ModelEntry],
    require_all: bool,
) -> list[str]:
    errors = []
    for intent, tiers in routes.items():
        if intent not in INTENTS:
            errors.append(
                f"{where}.{intent}: unknown intent (expected one of {', '.join(INTENTS)})"
            )
            continue
        for tier, chain in tiers.items():
            if tier not in TIERS:
                errors.append(
                    f"{where}.{intent}.{tier}: unknown tier (expected {', '.join(TIERS)})"
                )
                continue
            if not chain:
                errors.append(f"{where}.{intent}.{tier}: empty chain")
            for i, model in enumerate(chain):
                if model not in models:
                    errors.append(f"{where}.{intent}.{tier}[{i}]: unknown model {model!r}")
        if require_all:
            errors += [f"{where}.{intent}.{t}: missing" for t in TIERS if t not in tiers]
    if require_all:
        errors += [f"{where}.{i}: missing" for i in INTENTS if i not in routes]
    return errors


_A_KIND: dict[str, str] = {"chat": "a chat", "embedding": "an embedding"}


def _check_kinds(p: Policy) -> list[str]:
    """Chat routing names chat models only, embeddings embedding models only (unknown
    names are reported by the reference checks). A fallback embedding model must make
    vectors of the same length: one that does not would break the client's index."""

    def wrong(where: str, name: str, want: ModelKind) -> list[str]:
        m = p.models.get(name)
        if m is None or m.kind == want:
            return []
        return [f"{where}: {name!r} is {_A_KIND[m.kind]} model, not {_A_KIND[want]} model"]

    errors: list[str] = []
    for field in ("default_model", "baseline_model"):
        errors += wrong(field, getattr(p, field), "chat")
    chains = [("routes", p.routes)] + [
        (f"tenants.{tname}.routes", t.routes) for tname, t in p.tenants.items()
    ]
    for where, routes in chains:
        for intent, tiers in routes.items():
            for tier, chain in tiers.items():
                for i, name in enumerate(chain):
                    errors += wrong(f"{where}.{intent}.{tier}[{i}]", name, "chat")
    e = p.embeddings
    if e.default_model is not None:
        if e.default_model not in p.models:
            errors.append(f"embeddings.default_model: unknown model {e.default_model!r}")
        errors += wrong("embeddings.default_model", e.default_model, "embedding")
    for name, fallbacks in e.fallbacks.items():
        where = f"embeddings.fallbacks.{name}"
        if name not in p.models:
            errors.append(f"{where}: unknown model {name!r}")
            continue
        errors += wrong(where, name, "embedding")
        for i, fb in enumerate(fallbacks):
            if fb not in p.models:
                errors.append(f"{where}[{i}]: unknown model {fb!r}")
                continue
            errors += wrong(f"{where}[{i}]", fb, "embedding")
            dims, fb_dims = p.models[name].dimensions, p.models[fb].dimensions
            if dims is not None and fb_dims is not None and dims != fb_dims:
                errors.append(f"{where}[{i}]: {fb!r} has {fb_dims} dimensions, {name!r} {dims}")
    return errors


def load_price_table(path: Path = PRICE_TABLE_FILE) -> dict[str, dict[str, Any]]:
    data = yaml.safe_load(path.read_text()) or {}
    models = data.get("models", {})
    if not isinstance(models, dict):
        raise PolicyError(f"{path}: 'models' must be a mapping")
    return models


def parse_policy(text: str, prices: dict[str, dict[str, Any]] | None = None) -> Policy:
    """Parse and check a YAML policy. Prices missing from a model entry come from
    ``prices`` (by default the shipped, dated price table). The version is the document's own, or a
    content hash."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(f"not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise PolicyError("a policy must be a YAML mapping")
    if prices is None:
        prices = load_price_table()
    models = data.get("models")
    if isinstance(models, dict) and prices:
        merged = {}
        for name, entry in models.items():
            base = {k: v for k, v in prices.get(name, {}).items() if k in ModelEntry.model_fields}
            merged[name] = {**base, **entry} if isinstance(entry, dict) else entry
        data = {**data, "models": merged}
    if not data.get("version"):
        data = {**data, "version": hashlib.sha256(text.encode()).hexdigest()[:12]}
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(format_validation_error(exc)) from exc


def load_policy(path: Path = DEFAULT_POLICY_FILE, price_table: Path = PRICE_TABLE_FILE) -> Policy:
    try:
        text = path.read_text()
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read: {exc}") from exc
    return parse_policy(text, load_price_table(price_table))


CACHE_WRITE_MULTIPLIER = 1.25  # a cache write's price over the input price, when unset


def cost_usd(
    model: ModelEntry,
    prompt_tokens: int,
    completion_tokens: int,
    cached_prompt_tokens: int = 0,
    cache_write_tokens: int = 0,
) -> float:
    """Usage x price. Cached and cache-write prompt tokens are part of prompt_tokens
    (OpenAI's convention) and are billed at their own rates instead of the input rate."""
    cached = min(cached_prompt_tokens, prompt_tokens)
    written = min(cache_write_tokens, prompt_tokens - cached)
    input_price = model.input_per_mtok or 0.0
    write_price = model.cache_write_per_mtok
    if write_price is None:
        write_price = input_price * CACHE_WRITE_MULTIPLIER
    return (
        (prompt_tokens - cached - written) * input_price
        + cached * (model.cached_input_per_mtok or 0.0)
        + written * write_price
        + completion_tokens * (model.output_per_mtok or 0.0)
    ) / 1_000_000
