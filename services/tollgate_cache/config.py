"""Settings of the cache service (env prefix ``TOLLGATE_CACHE_``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from tollgate_common.config import ServiceSettings

MIB = 1024 * 1024
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


class CacheSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="TOLLGATE_CACHE_", extra="forbid", validate_default=True
    )

    grpc_port: int = Field(default=50052, ge=0, le=65535)
    metrics_port: int = Field(default=9102, ge=0, le=65535)
    backend: Literal["memory", "redis"] = "memory"
    # A secret: the URL may carry a password, and a SecretStr never shows in a repr or a log.
    redis_url: SecretStr | None = None
    max_bytes: int = Field(default=256 * MIB, gt=0)
    max_entry_bytes: int = Field(default=1 * MIB, gt=0)
    default_ttl_seconds: int = Field(default=3600, gt=0)
    # The longest any entry lives, whatever TTL a Store asks for (L-6): 30 days.
    max_ttl_seconds: int = Field(default=2_592_000, gt=0)
    # Bounds one Redis call. Keep it below the callers' deadline (the orchestrator's
    # cache_timeout_seconds) to have the breaker see a frozen Redis: a call its caller
    # cancels first is released, not counted (tollgate_common.breaker.guard).
    redis_timeout_seconds: float = Field(default=0.2, gt=0, le=30)
    breaker_failures: int = Field(default=3, ge=1)
    breaker_reset_seconds: float = Field(default=5.0, gt=0)
    hit_rate_window: int = Field(default=1000, ge=1)
    # Memory: the TTL sweep; Redis: the entries/bytes refresh.
    maintenance_interval_seconds: float = Field(default=5.0, gt=0)

    @model_validator(mode="after")
    def _check(self) -> CacheSettings:
        if self.backend == "redis":
            url = self.redis_url.get_secret_value() if self.redis_url else ""
            if not url:
                raise ValueError(
                    "redis_url: required when backend is redis (env TOLLGATE_CACHE_REDIS_URL)"
                )
            if not url.startswith(REDIS_SCHEMES):
                raise ValueError(
                    "redis_url: must start with redis://, rediss:// or unix:// "
                    "(env TOLLGATE_CACHE_REDIS_URL)"
                )
        if self.max_entry_bytes > self.max_bytes:
            raise ValueError(
                "max_entry_bytes: must not exceed max_bytes (env TOLLGATE_CACHE_MAX_ENTRY_BYTES)"
            )
        return self
