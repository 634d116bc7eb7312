"""Settings of the router service (env prefix ``TOLLGATE_ROUTER_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from tollgate_common.config import ServiceSettings
from tollgate_common.policy import PRICE_TABLE_FILE


class RouterSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="TOLLGATE_ROUTER_", extra="forbid", validate_default=True
    )

    grpc_port: int = Field(50051, ge=0, le=65535)
    metrics_port: int = Field(9101, ge=0, le=65535)
    # None: the policy shipped with tollgate (tollgate_common/data/default-policy.yaml).
    policy_file: Path | None = None
    # Where the operator's ConfigMap is mounted. When this file exists and is valid
    # it wins over policy_file; a missing file is normal.
    policy_override_file: Path | None = None
    price_table_file: Path = PRICE_TABLE_FILE
    policy_poll_seconds: float = Field(2.0, gt=0, le=3600)
