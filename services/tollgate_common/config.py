"""Settings: environment variables over an optional YAML file, validated once at start.

Each service subclasses ``ServiceSettings`` with its own env prefix
(``TOLLGATE_ROUTER_``, ...). ``load_settings`` turns validation failures into a
``ConfigError`` whose message names every bad field, so a typo stops the process
with one readable line instead of a traceback.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

CONFIG_FILE_ENV = "TOLLGATE_CONFIG"


class ConfigError(Exception):
    """A configuration value is missing or wrong; the message names the field."""


class ServiceSettings(BaseSettings):
    """Fields every service has. Listeners bind loopback unless told otherwise
    (the chart sets ``host: 0.0.0.0``)."""

    model_config = SettingsConfigDict(extra="forbid", validate_default=True)

    log_level: str = "INFO"
    host: str = "127.0.0.1"
    grpc_tls_cert: Path | None = None  # server certificate (PEM); TLS when set with the key
    grpc_tls_key: Path | None = None
    grpc_tls_client_ca: Path | None = None  # CA for client certs: mutual TLS when set
    # Control-plane identity (tollgate_common.grpc.auth, docs/security.md H-1..H-3).
    # Server: YAML mapping caller name -> sha256 hex of its token (or a list of them,
    # during a rotation). Client: this process's own token, one line.
    grpc_callers_file: Path | None = None
    grpc_token_file: Path | None = None
    # For in-process tests only: the gRPC server checks no caller identity at all.
    grpc_allow_unauthenticated: bool = False
    grpc_reflection: bool = False  # server reflection (schemas for grpcurl); off by default
    # Bounds on one gRPC server (L-11): calls in flight beyond this get RESOURCE_EXHAUSTED;
    # connections are closed (GOAWAY, then the grace) after this age, so clients rebalance.
    grpc_max_concurrent_rpcs: int = Field(default=2048, ge=1)
    grpc_max_connection_age_seconds: float = Field(default=1800.0, gt=0)
    grpc_max_connection_age_grace_seconds: float = Field(default=300.0, gt=0)
    # Shutdown (tollgate_common.service.shutdown): NOT_SERVING, then drain_seconds for
    # endpoints to be removed, then grace_seconds for in-flight calls to finish.
    drain_seconds: float = Field(default=0.0, ge=0)
    grace_seconds: float = 10.0

    @model_validator(mode="after")
    def _check_grpc_tls(self) -> ServiceSettings:
        # Partial TLS settings used to serve plaintext without a word (M-6).
        prefix = str(self.model_config.get("env_prefix", ""))

        def env(*names: str) -> str:
            return ", ".join(f"{prefix}{n.upper()}" for n in names)

        if (self.grpc_tls_cert is None) != (self.grpc_tls_key is None):
            raise ValueError(
                "grpc_tls_cert, grpc_tls_key: set both or neither "
                f"(env {env('grpc_tls_cert', 'grpc_tls_key')})"
            )
        if self.grpc_tls_client_ca is not None and self.grpc_tls_cert is None:
            raise ValueError(
                "grpc_tls_client_ca: requires grpc_tls_cert and grpc_tls_key "
                f"(env {env('grpc_tls_client_ca', 'grpc_tls_cert', 'grpc_tls_key')})"
            )
        return self


S = TypeVar("S", bound=BaseSettings)


def format_validation_error(exc: ValidationError, prefix: str = "") -> str:
    parts = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(root)"
        if prefix and err["loc"] and isinstance(err["loc"][0], str):
            field = f"{field} (env {prefix}{str(err['loc'][0]).upper()})"
        msg = str(err["msg"]).removeprefix("Value error, ")
        parts.append(msg if field == "(root)" else f"{field}: {msg}")
    return "; ".join(parts)


def _yaml_section(path: Path, section: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{CONFIG_FILE_ENV}={path}: cannot read: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{CONFIG_FILE_ENV}={path}: expected a mapping at the top level")
    sub = data.get(section, {})
    if not isinstance(sub, dict):
        raise ConfigError(f"{CONFIG_FILE_ENV}={path}: '{section}' must be a mapping")
    return sub


def load_settings(cls: type[S], section: str, **overrides: Any) -> S:
    """Build ``cls`` from the YAML file's ``section`` (if any), then env, then overrides.

    Env wins over the file because that is what Kubernetes users set last.
    """
    file_values: dict[str, Any] = {}
    config_path = os.environ.get(CONFIG_FILE_ENV)
    if config_path:
        file_values = _yaml_section(Path(config_path), section)
    prefix = str(cls.model_config.get("env_prefix", ""))
    env_names = {k[len(prefix) :].lower() for k in os.environ if prefix and k.startswith(prefix)}
    # Values from env are applied by pydantic-settings itself; file values only
    # fill what env does not set.
    init = {k: v for k, v in file_values.items() if k not in env_names}
    # One shared knob for every service; the prefixed one wins.
    shared_level = os.environ.get("TOLLGATE_LOG_LEVEL")
    if shared_level and "log_level" in cls.model_fields and "log_level" not in env_names:
        init.setdefault("log_level", shared_level)
    init.update(overrides)
    try:
        return cls(**init)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, prefix)) from exc
