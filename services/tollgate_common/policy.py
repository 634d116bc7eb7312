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


class ModelEntry(_Strict):
    provider: str
    upstream_model: str = ""  # defaults to the catalog name
    input_per_mtok: float | None = Field(default=None, ge=0)
    cached_input_per_mtok: float | None = Field(default=None, ge=0)
    output_per_mtok: float | None = Field(default=None, ge=0)
    context_window: int = Field(default=128_000, gt=0)
    capabilities: tuple[Capability, ...] = ("tools", "json", "streaming")


class TenantPolicy(_Strict):
    routes: dict[str, dict[str, list[str]]] = {}
    allowed_models: list[str] | None = None
    max_tier: Literal["small", "medium", "large"] | None = None


class CachePolicy(_Strict):
    """Read by the orchestrator: ``enabled: false`` stops lookups and stores, ``ttl_seconds``
    is sent with every store (unset: the cache service's ``default_ttl_seconds``)."""

    enabled: bool = True
    ttl_seconds: int | None = Field(default=None, ge=1, le=2_592_000)


class Policy(_Strict):
    version: str = ""
    providers: dict[str, Provider]
    models: dict[str, ModelEntry] = Field(min_length=1)
    routes: dict[str, dict[str, list[str]]]
    default_model: str
    baseline_model: str
    tenants: dict[str, TenantPolicy] = {}
    cache: CachePolicy = CachePolicy()

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


def cost_usd(
    model: ModelEntry, prompt_tokens: int, completion_tokens: int, cached_prompt_tokens: int = 0
) -> float:
    """Usage x price. Cached prompt tokens are part of prompt_tokens (OpenAI's
    convention) and are billed at the cached rate instead of the input rate."""
    cached = min(cached_prompt_tokens, prompt_tokens)
    return (
        (prompt_tokens - cached) * (model.input_per_mtok or 0.0)
        + cached * (model.cached_input_per_mtok or 0.0)
        + completion_tokens * (model.output_per_mtok or 0.0)
    ) / 1_000_000
