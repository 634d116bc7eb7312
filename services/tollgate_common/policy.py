"""The routing policy: model catalog with prices, intent x tier -> model chains, tenants.

Shared by the router (which decides), the orchestrator (which falls back to the
default model and prices usage when the router is down) and the operator (which
validates RoutingPolicy resources before pushing them). ``parse_policy`` either
returns a fully checked ``Policy`` or raises ``PolicyError`` naming the field.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from tollgate_common.config import format_validation_error
from tollgate_common.prices import PRICE_TABLES_DIR, Prices, PriceTableError, load_prices

INTENTS = ("code", "math", "summarization", "extraction", "translation", "creative", "chat")
TIERS = ("small", "medium", "large")
Capability = Literal["tools", "json", "vision", "reasoning", "streaming"]
# The client APIs an upstream may speak natively (a request in another is translated).
Api = Literal["chat", "responses", "embeddings", "messages"]
ModelKind = Literal["chat", "embedding"]
# The adapter that speaks to a provider (docs/providers.md): its auth, URLs and quirks.
ProviderType = Literal["openai", "anthropic", "azure", "gemini", "compatible"]
# How the key is sent: ``Authorization: Bearer``, Azure's ``api-key``, Anthropic's ``x-api-key``.
AuthScheme = Literal["bearer", "api-key", "x-api-key"]
# What each type speaks natively when the entry does not say (``apis``).
TYPE_APIS: dict[str, tuple[Api, ...]] = {
    "openai": ("chat", "responses", "embeddings"),
    "anthropic": ("messages",),
    "azure": ("chat", "responses", "embeddings"),
    "gemini": ("chat", "embeddings"),
    "compatible": ("chat", "embeddings"),
}

DATA_DIR = Path(__file__).parent / "data"
DEFAULT_POLICY_FILE = DATA_DIR / "default-policy.yaml"
# The shipped price tables: every ``prices-<provider>.yaml`` in the directory (a file
# path names one table). The name predates the split into one table per provider.
PRICE_TABLE_FILE = PRICE_TABLES_DIR
PRICE_FIELDS = ("input_per_mtok", "cached_input_per_mtok", "output_per_mtok")


class PolicyError(ValueError):
    """A policy document is invalid; the message names the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Provider(_Strict):
    type: ProviderType = "openai"
    base_url: str = Field(pattern=r"^https?://")
    api_key_env: str = ""  # env var holding the key; empty (and no file) means no key
    # A file holding the key or a bearer token (an Entra token a sidecar refreshes); it is
    # read again when it changes. Wins over ``api_key_env``.
    api_key_file: str = ""
    auth: AuthScheme | None = None  # None: the type's own scheme
    # Azure's classic deployments API (``/openai/deployments/{model}/...?api-version=``);
    # empty means the v1 API (``base_url`` ending in ``/openai/v1/``).
    api_version: str = Field(default="", max_length=40, pattern=r"^[0-9A-Za-z.-]*$")
    # What the server speaks natively; unset: the type's own (``TYPE_APIS``). A request in
    # another API is translated (Responses to chat for vLLM, chat to Messages for Anthropic).
    apis: tuple[Api, ...] = Field(default=TYPE_APIS["openai"], min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _type_apis(cls, data: Any) -> Any:
        if isinstance(data, dict) and "apis" not in data and data.get("type") in TYPE_APIS:
            return {**data, "apis": TYPE_APIS[data["type"]]}
        return data

    @property
    def needs_key(self) -> bool:
        """Whether this provider is configured to take a key (a local server may not)."""
        return bool(self.api_key_env or self.api_key_file)


class ModelEntry(_Strict):
    provider: str
    upstream_model: str = ""  # defaults to the catalog name
    input_per_mtok: float | None = Field(default=None, ge=0)
    cached_input_per_mtok: float | None = Field(default=None, ge=0)
    output_per_mtok: float | None = Field(default=None, ge=0)
    # Input tokens written to the provider's prompt cache; unset: 1.25x the input price
    # (OpenAI's and Anthropic's 5-minute write price).
    cache_write_per_mtok: float | None = Field(default=None, ge=0)
    # Anthropic's 1-hour cache writes; unset: 2x the input price (Anthropic's list price).
    cache_write_1h_per_mtok: float | None = Field(default=None, ge=0)
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
    # (provider, as_of) of each price table loaded when this policy was parsed: set by
    # ``parse_policy``, never by the document (``tollgate_price_table_info``).
    _price_tables: tuple[tuple[str, str], ...] = PrivateAttr(default=())

    @property
    def price_tables(self) -> tuple[tuple[str, str], ...]:
        return self._price_tables

    @model_validator(mode="after")
    def _check_references(self) -> Policy:
        errors: list[str] = []
        for name, m in self.models.items():
            if m.provider not in self.providers:
                errors.append(f"models.{name}.provider: unknown provider {m.provider!r}")
            for field in PRICE_FIELDS:
                if getattr(m, field) is None:
                    errors.append(
                        f"models.{name}.{field}: no price: not in a price table and not set "
                        "here (a free, local model sets it to 0)"
                    )
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


def load_price_table(path: Path = PRICE_TABLE_FILE) -> Prices:
    """The price tables under ``path`` (a directory of ``prices-*.yaml``) or the one file
    it names, merged (``tollgate_common.prices``); ``PolicyError`` names the bad file."""
    try:
        return load_prices(path)
    except PriceTableError as exc:
        raise PolicyError(str(exc)) from exc


def parse_policy(text: str, prices: Mapping[str, Mapping[str, Any]] | None = None) -> Policy:
    """Parse and check a YAML policy. Prices missing from a model entry come from
    ``prices`` (by default the shipped, dated price tables), field by field; a model
    priced by neither is refused, naming the model and the field. The version is the
    document's own, or a content hash."""
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
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(format_validation_error(exc)) from exc
    if isinstance(prices, Prices):
        policy._price_tables = prices.versions
    return policy


def load_policy(path: Path = DEFAULT_POLICY_FILE, price_table: Path = PRICE_TABLE_FILE) -> Policy:
    try:
        text = path.read_text()
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read: {exc}") from exc
    return parse_policy(text, load_price_table(price_table))


CACHE_WRITE_MULTIPLIER = 1.25  # a cache write's price over the input price, when unset
CACHE_WRITE_1H_MULTIPLIER = 2.0  # a 1-hour cache write's, when unset


def cost_usd(
    model: ModelEntry,
    prompt_tokens: int,
    completion_tokens: int,
    cached_prompt_tokens: int = 0,
    cache_write_tokens: int = 0,
    cache_write_1h_tokens: int = 0,
) -> float:
    """Usage x price. Cached and cache-write prompt tokens are part of prompt_tokens
    (OpenAI's convention) and are billed at their own rates instead of the input rate;
    ``cache_write_1h_tokens`` are the part of the writes kept for an hour."""
    cached = min(cached_prompt_tokens, prompt_tokens)
    written = min(cache_write_tokens, prompt_tokens - cached)
    long = min(cache_write_1h_tokens, written)
    input_price = model.input_per_mtok or 0.0
    write_price = model.cache_write_per_mtok
    if write_price is None:
        write_price = input_price * CACHE_WRITE_MULTIPLIER
    long_price = model.cache_write_1h_per_mtok
    if long_price is None:
        long_price = input_price * CACHE_WRITE_1H_MULTIPLIER
    return (
        (prompt_tokens - cached - written) * input_price
        + cached * (model.cached_input_per_mtok or 0.0)
        + (written - long) * write_price
        + long * long_price
        + completion_tokens * (model.output_per_mtok or 0.0)
    ) / 1_000_000
