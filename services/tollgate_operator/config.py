"""The operator's settings (env prefix ``TOLLGATE_OPERATOR_``)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from tollgate_common.config import ServiceSettings

SA_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
_LABEL_NAME = r"^[a-zA-Z_][a-zA-Z0-9_]*$"


class OperatorSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TOLLGATE_OPERATOR_", extra="forbid")

    # The namespace watched and written to; empty means the pod's own (service account file).
    namespace: str = ""
    router_service: str = "tollgate-router"
    router_grpc_port: int = Field(default=50051, ge=1, le=65535)
    orchestrator_service: str = "tollgate-orchestrator"
    orchestrator_grpc_port: int = Field(default=50053, ge=1, le=65535)
    # The ConfigMap (key policy.yaml) that routers load at start.
    policy_configmap: str = "tollgate-policy-override"
    # Only the RoutingPolicy of this name is applied: routers hold one policy.
    policy_name: str = "default"
    # The ConfigMap (key policy.yaml) with the routers' base policy: pushed back at once
    # when the RoutingPolicy is deleted. Empty: routers revert when their mounted
    # override file disappears (the kubelet's ConfigMap sync, about a minute).
    base_policy_configmap: str = ""
    # Labels put on every generated PrometheusRule, e.g. {"release": "kube-prometheus-stack"}.
    rule_labels: Annotated[dict[str, str], NoDecode] = {}
    health_port: int = Field(default=8081, ge=1, le=65535)
    metrics_port: int = Field(default=9104, ge=1, le=65535)
    # Deadline of one UpdatePolicy/UpdateBudgets call.
    push_timeout_seconds: float = Field(default=5.0, gt=0)
    # Every live object is re-pushed this often, so restarted pods converge.
    resync_seconds: float = Field(default=60.0, gt=0)
    # Explicit host:port lists (comma separated). When set, EndpointSlice discovery
    # is skipped for that target: for tests and for running outside a cluster.
    router_addresses: str = ""
    orchestrator_addresses: str = ""
    # Pushes to TLS routers and orchestrators (M-6): the CA that signed their
    # certificates; with a client certificate and key as well, mutual TLS (the
    # certificate's CN or a DNS SAN must be ``operator``). The caller token the pushes
    # send is ``grpc_token_file`` (every service's setting).
    peer_tls_ca: Path | None = None
    peer_tls_cert: Path | None = None
    peer_tls_key: Path | None = None

    @model_validator(mode="after")
    def _check_peer_tls(self) -> OperatorSettings:
        if (self.peer_tls_cert is None) != (self.peer_tls_key is None):
            raise ValueError(
                "peer_tls_cert, peer_tls_key: set both or neither "
                "(env TOLLGATE_OPERATOR_PEER_TLS_CERT, TOLLGATE_OPERATOR_PEER_TLS_KEY)"
            )
        if self.peer_tls_cert is not None and self.peer_tls_ca is None:
            raise ValueError(
                "peer_tls_ca: required when a client certificate is set "
                "(env TOLLGATE_OPERATOR_PEER_TLS_CA)"
            )
        return self

    @field_validator("rule_labels", mode="before")
    @classmethod
    def _json_object(cls, v: Any) -> Any:
        # Decoded here rather than by pydantic-settings, so bad JSON names the field.
        if isinstance(v, str):
            try:
                v = json.loads(v) if v.strip() else {}
            except ValueError as exc:
                raise ValueError(f"not a JSON object: {exc}") from exc
        return v

    @field_validator("rule_labels")
    @classmethod
    def _label_names(cls, v: dict[str, str]) -> dict[str, str]:
        bad = [k for k in v if not re.match(_LABEL_NAME, k)]
        if bad:
            raise ValueError(f"not valid Prometheus label names: {', '.join(sorted(bad))}")
        return v

    @field_validator("router_addresses", "orchestrator_addresses")
    @classmethod
    def _addresses(cls, v: str) -> str:
        for addr in split_addresses(v):
            host, sep, port = addr.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"{addr!r} is not host:port")
        return v

    def resolved_namespace(self) -> str:
        if self.namespace:
            return self.namespace
        try:
            return SA_NAMESPACE_FILE.read_text().strip()
        except OSError:
            return ""


def split_addresses(value: str) -> list[str]:
    return [a.strip() for a in value.split(",") if a.strip()]
