"""Operator settings: env parsing and errors that name the field."""

from __future__ import annotations

import pytest

from tollgate_common.config import ConfigError, load_settings
from tollgate_operator.config import OperatorSettings, split_addresses


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOLLGATE_CONFIG", raising=False)


def test_defaults_match_the_documented_ports() -> None:
    s = load_settings(OperatorSettings, "operator")
    assert (s.health_port, s.metrics_port) == (8081, 9104)
    assert (s.router_grpc_port, s.orchestrator_grpc_port) == (50051, 50053)
    assert s.policy_name == "default" and s.rule_labels == {}


def test_env_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOLLGATE_OPERATOR_NAMESPACE", "llm")
    monkeypatch.setenv("TOLLGATE_OPERATOR_RULE_LABELS", '{"release": "kps"}')
    monkeypatch.setenv("TOLLGATE_OPERATOR_ROUTER_ADDRESSES", "127.0.0.1:1, [::1]:2")
    s = load_settings(OperatorSettings, "operator")
    assert s.resolved_namespace() == "llm"
    assert s.rule_labels == {"release": "kps"}
    assert split_addresses(s.router_addresses) == ["127.0.0.1:1", "[::1]:2"]


@pytest.mark.parametrize(
    ("env", "value", "field"),
    [
        ("RULE_LABELS", '{"bad-name": "x"}', "rule_labels"),
        ("RULE_LABELS", "not json", "rule_labels"),
        ("ROUTER_ADDRESSES", "localhost", "router_addresses"),
        ("HEALTH_PORT", "0", "health_port"),
        ("PUSH_TIMEOUT_SECONDS", "-1", "push_timeout_seconds"),
    ],
)
def test_bad_values_name_the_field(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, field: str
) -> None:
    monkeypatch.setenv(f"TOLLGATE_OPERATOR_{env}", value)
    with pytest.raises(ConfigError, match=field):
        load_settings(OperatorSettings, "operator")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TOLLGATE_OPERATOR_HEALTH_PORT": "x"}, "health_port"),
        ({"TOLLGATE_OPERATOR_NAMESPACE": ""}, "namespace: not set"),
    ],
)
def test_bad_configuration_exits_2_naming_the_field(env: dict[str, str], message: str) -> None:
    import subprocess
    import sys

    from tollgate_operator.config import SA_NAMESPACE_FILE
    from tools.stack import ROOT, base_env

    if "NAMESPACE" in str(env) and SA_NAMESPACE_FILE.exists():
        pytest.skip("running in a pod: the service account names the namespace")
    proc = subprocess.run(
        [sys.executable, "-m", "tollgate_operator"],
        env=base_env(env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert message in proc.stderr
