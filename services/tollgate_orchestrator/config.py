"""Orchestrator settings (env prefix ``TOLLGATE_ORCHESTRATOR_``) and API key loading.

Everything is validated once at start; a bad value stops the process with a
message naming the field, never the secret it holds.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from tollgate_common.budgets import DEFAULT_ACTION, Action, Period, validate_budget
from tollgate_common.config import ConfigError, ServiceSettings
from tollgate_common.policy import DEFAULT_POLICY_FILE

log = logging.getLogger(__name__)

DEV_TENANT = "dev"
DEV_KEY = "sk-tollgate-dev-key-for-local-use-only"
# API keys shorter than this are refused at start (L-9): a key is the only secret a tenant
# holds, and 32 characters of a random alphabet are beyond guessing through the API.
MIN_KEY_CHARS = 32


class BudgetSpec(BaseModel):
    """A USD budget for one tenant and period; the rules are ``tollgate_common.budgets``'."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tenant: str
    period: Period
    limit_usd: float
    action: Action = DEFAULT_ACTION
    thresholds: tuple[float, ...] = ()
    source: str = "config"

    @model_validator(mode="after")
    def _check(self) -> BudgetSpec:
        problems = validate_budget(
            self.tenant, self.period, self.limit_usd, self.action, self.thresholds
        )
        if problems:
            raise ValueError("; ".join(problems))
        return self


class OrchestratorSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="TOLLGATE_ORCHESTRATOR_", extra="forbid", validate_default=True
    )

    http_port: int = Field(default=8080, ge=0, le=65535)
    grpc_port: int = Field(default=50053, ge=0, le=65535)
    router_addr: str = "127.0.0.1:50051"
    cache_addr: str = "127.0.0.1:50052"
    # Peers are asked with short deadlines: a slow peer degrades, it never stalls a request.
    # TLS to the router and cache: the CA that signed their certificates, and for mutual
    # TLS this client's certificate and key (PEM files, e.g. mounted from a Secret).
    peer_tls_ca: Path | None = None
    peer_tls_cert: Path | None = None
    peer_tls_key: Path | None = None
    router_timeout_seconds: float = Field(default=0.25, gt=0, le=10)
    cache_timeout_seconds: float = Field(default=0.1, gt=0, le=10)
    policy_file: Path = DEFAULT_POLICY_FILE
    # Every provider goes to this base URL when set (make run and the tests: the simulator).
    upstream_base_url: str | None = Field(default=None, pattern=r"^https?://")
    # The key sent to upstream_base_url; provider keys never go there.
    upstream_api_key: SecretStr | None = None
    # Hosts that may receive a key over plain http:// (loopback always may).
    upstream_insecure_hosts: Annotated[frozenset[str], NoDecode] = frozenset()
    # Per attempt; for streams it bounds each wait for the next chunk (an idle timeout).
    upstream_timeout_seconds: float = Field(default=60.0, gt=0)
    upstream_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    # One deadline for the whole request before its first byte: attempts, backoff, fallbacks.
    request_deadline_seconds: float = Field(default=120.0, gt=0)
    retry_max_attempts: int = Field(default=2, ge=1, le=10)  # per model, first try included
    retry_total_attempts: int = Field(default=4, ge=1, le=20)  # across the whole chain
    retry_base_backoff_seconds: float = Field(default=0.1, ge=0)
    retry_max_backoff_seconds: float = Field(default=2.0, ge=0)
    # A longer Retry-After is not waited for: the request falls back at once.
    retry_after_cap_seconds: float = Field(default=10.0, ge=0)
    # Retries in flight may not exceed this share of requests in flight (Envoy's budget).
    retry_budget_ratio: float = Field(default=0.2, ge=0, le=1)
    retry_budget_min: int = Field(default=3, ge=0)
    breaker_consecutive_failures: int = Field(default=5, ge=1)
    breaker_failure_ratio: float = Field(default=0.5, gt=0, le=1)
    breaker_window_seconds: float = Field(default=30.0, gt=0)
    breaker_min_requests: int = Field(default=10, ge=1)
    breaker_cooldown_seconds: float = Field(default=10.0, gt=0)
    # Keys: "tenant:key,tenant2:key2" from env, or a YAML mapping tenant -> key (or list
    # of keys) in a file mounted from a Secret. Neither: the dev key, for local use only.
    api_keys: Annotated[SecretStr | None, NoDecode] = None
    api_keys_file: Path | None = None
    budgets: list[BudgetSpec] = []
    # The Redis holding the budget counters, shared by every replica: the only Redis the
    # orchestrator talks to. Its own Redis (not the cache's), with maxmemory-policy
    # noeviction: an evicting Redis is refused at start (H-6). Unset: per-replica counters.
    budget_redis_url: SecretStr | None = None
    budget_redis_timeout_seconds: float = Field(default=0.2, gt=0, le=5)
    # The old name of budget_redis_url; set, it stops the process with a message (never
    # silently per-replica budgets after an upgrade).
    redis_url: SecretStr | None = Field(default=None, exclude=True)
    # A tenant with a budget whose budget cannot be checked (store down, full, erroring):
    # refused with a 429 (fail closed), or "allow"ed uncounted and counted as unchecked.
    budget_unchecked_policy: Literal["allow", "refuse"] = "refuse"
    # Completion tokens assumed by the budget estimate when the request sets no max_tokens.
    budget_default_completion_tokens: int = Field(default=512, ge=1)
    max_concurrency: int = Field(default=256, ge=1)
    # A tenant may hold at most this share of max_concurrency (at least one slot).
    tenant_concurrency_share: float = Field(default=0.5, gt=0, le=1)
    # The HTTP edge (H-5): request line, header section and count caps, and timeouts for
    # a request head and body that do not arrive (slowloris). Idle keep-alive: 30 s.
    max_url_bytes: int = Field(default=8192, ge=256, le=1024 * 1024)
    max_header_bytes: int = Field(default=32768, ge=1024, le=1024 * 1024)
    max_header_count: int = Field(default=100, ge=8, le=1000)
    header_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    body_timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    keep_alive_timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    # Streams: a whole stream's duration, and the longest wait for a data payload
    # (SSE comments and keep-alive lines are not progress).
    stream_max_seconds: float = Field(default=900.0, gt=0, le=86400)
    stream_idle_seconds: float = Field(default=60.0, gt=0, le=3600)
    # Upstream answers: a whole body, and one SSE line.
    upstream_max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024, le=1024**3)
    sse_max_line_bytes: int = Field(default=1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    # Prometheus on its own port (M-4); 0 picks a free one. /metrics on the API port
    # only when asked: it names tenants and their spend.
    metrics_port: int = Field(default=9103, ge=0, le=65535)
    metrics_on_api_port: bool = False
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_messages: int = Field(default=2048, ge=1)
    max_tokens_cap: int = Field(default=131_072, ge=1)
    max_n: int = Field(default=8, ge=1)
    cache_opt_in_header: str = Field(default="x-tollgate-cache-opt-in", min_length=1)
    # The key that signs cache entries (at least 32 bytes), shared by every replica; unset:
    # a random key per process, so entries verify only on the replica that stored them.
    cache_signing_key_file: Path | None = None
    # Stored Responses (``store``: previous_response_id, GET/DELETE /v1/responses/{id}):
    # kept per tenant for this long, at most this many per tenant, in this process's
    # memory, or in this Redis when set (shared by every replica; its own or the cache's).
    responses_ttl_seconds: int = Field(default=30 * 86400, ge=60, le=400 * 86400)
    responses_max_per_tenant: int = Field(default=10_000, ge=1, le=10_000_000)
    responses_max_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    responses_redis_url: SecretStr | None = None
    # Seconds between readiness going false and the listeners closing (endpoint removal).
    probe_interval_seconds: float = Field(default=5.0, gt=0)

    @field_validator("upstream_insecure_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: Any) -> Any:
        if isinstance(value, str):
            return frozenset(h.strip().lower() for h in value.split(",") if h.strip())
        return value

    @field_validator("cache_opt_in_header")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.lower()

    @model_validator(mode="after")
    def _check(self) -> OrchestratorSettings:
        seen: set[tuple[str, str]] = set()
        for i, b in enumerate(self.budgets):
            if (b.tenant, b.period) in seen:
                raise ValueError(f"budgets[{i}]: a second {b.period} budget for {b.tenant!r}")
            seen.add((b.tenant, b.period))
        if (self.peer_tls_cert is None) != (self.peer_tls_key is None):
            raise ValueError("peer_tls_cert: set together with peer_tls_key")
        if self.peer_tls_cert is not None and self.peer_tls_ca is None:
            raise ValueError("peer_tls_ca: required when a client certificate is set")
        if self.retry_max_backoff_seconds < self.retry_base_backoff_seconds:
            raise ValueError("retry_max_backoff_seconds: below retry_base_backoff_seconds")
        if self.api_keys is not None:
            parse_key_pairs(self.api_keys.get_secret_value())  # fail at start, not per request
        if self.redis_url is not None:
            raise ValueError(
                "redis_url: renamed to budget_redis_url (env "
                "TOLLGATE_ORCHESTRATOR_BUDGET_REDIS_URL); give budgets their own Redis with "
                "maxmemory-policy noeviction, not the cache's"
            )
        return self


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def parse_key_pairs(text: str) -> list[tuple[str, str]]:
    """``tenant:key,tenant2:key2`` -> pairs. Errors name the entry, never the key."""
    pairs = []
    for i, item in enumerate(p.strip() for p in text.split(",")):
        if not item:
            continue
        tenant, sep, key = item.partition(":")
        tenant, key = tenant.strip(), key.strip()
        if not sep or not tenant or not key:
            raise ValueError(f"api_keys: entry {i} is not 'tenant:key'")
        if len(key) < MIN_KEY_CHARS:
            raise ValueError(
                f"api_keys: entry {i} ({tenant!r}): the key is shorter than "
                f"{MIN_KEY_CHARS} characters"
            )
        pairs.append((tenant, key))
    if not pairs:
        raise ValueError("api_keys: set but empty")
    return pairs


def _file_pairs(path: Path) -> list[tuple[str, str]]:
    try:
        data: Any = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"api_keys_file={path}: cannot read: {type(exc).__name__}") from exc
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"api_keys_file={path}: expected a mapping tenant -> key")
    pairs = []
    for tenant, value in data.items():
        keys = value if isinstance(value, list) else [value]
        for key in keys:
            if not isinstance(key, str) or not key.strip():
                raise ConfigError(f"api_keys_file={path}: {tenant}: key must be a string")
            if len(key.strip()) < MIN_KEY_CHARS:
                raise ConfigError(
                    f"api_keys_file={path}: {tenant}: a key is shorter than "
                    f"{MIN_KEY_CHARS} characters"
                )
            pairs.append((str(tenant), key.strip()))
    return pairs


def load_keys(settings: OrchestratorSettings) -> tuple[dict[bytes, str], bool]:
    """API keys as {sha256 digest: tenant}, and whether the dev key is in use."""
    pairs: list[tuple[str, str]] = []
    if settings.api_keys is not None:
        try:
            pairs += parse_key_pairs(settings.api_keys.get_secret_value())
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
    if settings.api_keys_file is not None:
        pairs += _file_pairs(settings.api_keys_file)
    dev = not pairs
    if dev:
        pairs = [(DEV_TENANT, DEV_KEY)]
    keys: dict[bytes, str] = {}
    for tenant, key in pairs:
        d = digest(key)
        if d in keys and keys[d] != tenant:
            raise ConfigError(f"api_keys: one key is configured for {keys[d]!r} and {tenant!r}")
        keys[d] = tenant
    return keys, dev
