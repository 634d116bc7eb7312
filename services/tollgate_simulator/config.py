"""Simulator settings and the per-model latency table.

Latency is ``fixed_ms`` before the first token plus ``per_token_ms`` for every
generated token (reasoning tokens included), times ``latency_scale``; scale 0 makes
every answer instant, which is what the benchmarks use as their baseline.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from tollgate_common.config import ConfigError, ServiceSettings, format_validation_error


class SimSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="TOLLGATE_SIM_", extra="forbid", validate_default=True
    )

    port: int = Field(default=8090, ge=1, le=65535)
    # Multiplies every model latency; 0 = no sleeps at all. Fault delays are not scaled.
    latency_scale: float = Field(default=1.0, ge=0)
    # YAML mapping model name (or "*") -> {fixed_ms, per_token_ms}; overrides the built-ins.
    latency_file: Path | None = None
    # When set, only these models exist: others get 404 model_not_found.
    # Env takes a JSON list or a comma-separated string.
    models: Annotated[list[str] | None, NoDecode] = None
    max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    # When set, /v1 requests need "Authorization: Bearer <key>" (401 otherwise).
    api_key: SecretStr | None = None

    @field_validator("models", mode="before")
    @classmethod
    def _split_models(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    return orjson.loads(text)
                except orjson.JSONDecodeError as exc:
                    raise ValueError(f"not a JSON list: {exc}") from exc
            return [m.strip() for m in text.split(",") if m.strip()]
        return value


class LatencyProfile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    fixed_ms: float = Field(ge=0)
    per_token_ms: float = Field(ge=0)


_REASONING = re.compile(r"^(o\d|gpt-5)")

# Built-in profiles, first match wins: small models are fast, large ones slower.
_BUILTIN: tuple[tuple[re.Pattern[str], LatencyProfile], ...] = (
    (re.compile(r"nano"), LatencyProfile(fixed_ms=20, per_token_ms=0.5)),
    (re.compile(r"mini|small|haiku|flash"), LatencyProfile(fixed_ms=30, per_token_ms=1)),
    (_REASONING, LatencyProfile(fixed_ms=80, per_token_ms=2)),
    (re.compile(r"^(gpt-4|claude|opus|large)"), LatencyProfile(fixed_ms=60, per_token_ms=2)),
)
DEFAULT_PROFILE = LatencyProfile(fixed_ms=30, per_token_ms=1)


def is_reasoning_model(model: str) -> bool:
    """OpenAI's reasoning families (o1, o3, o4-mini, gpt-5*) report reasoning tokens."""
    return _REASONING.match(model) is not None


class LatencyTable:
    """Looks up a model's profile: the file's exact entry, the file's "*", then built-ins."""

    def __init__(self, overrides: dict[str, LatencyProfile] | None = None) -> None:
        self._overrides = dict(overrides or {})
        self._memo: dict[str, LatencyProfile] = {}

    def profile(self, model: str) -> LatencyProfile:
        hit = self._memo.get(model)
        if hit is not None:
            return hit
        found = self._overrides.get(model) or self._overrides.get("*")
        if found is None:
            found = next((p for rx, p in _BUILTIN if rx.search(model)), DEFAULT_PROFILE)
        if len(self._memo) < 4096:  # model names come from clients: bound the memo
            self._memo[model] = found
        return found


def load_latency_file(path: Path) -> dict[str, LatencyProfile]:
    """Parse the latency YAML; errors name the file and the model entry."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"latency_file={path}: cannot read: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"latency_file={path}: expected a mapping of model -> profile")
    out: dict[str, LatencyProfile] = {}
    for model, entry in data.items():
        try:
            out[str(model)] = LatencyProfile.model_validate(entry)
        except ValidationError as exc:
            raise ConfigError(
                f"latency_file={path}: {model}: {format_validation_error(exc)}"
            ) from exc
    return out
