"""`make run`'s handling of the caller's env: which TOLLGATE_* go where, ports, the
dev key, the upstream choice."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.run import (
    UsageError,
    check_upstream,
    choose_ports,
    keyed_providers,
    split_settings,
    tollgate_settings,
    uses_dev_key,
)
from tools.stack import Ports

ALL = ("simulator", "router", "cache", "orchestrator")


def test_only_tollgate_settings_and_empty_counts_as_unset() -> None:
    env = {"TOLLGATE_CACHE_BACKEND": "redis", "TOLLGATE_LOG_LEVEL": "", "HOME": "/root"}
    assert tollgate_settings(env) == {"TOLLGATE_CACHE_BACKEND": "redis"}


def test_each_service_gets_its_own_prefix_and_the_shared_settings() -> None:
    env = {
        "TOLLGATE_ORCHESTRATOR_API_KEYS": "team-a:sk-secret",
        "TOLLGATE_CACHE_BACKEND": "redis",
        "TOLLGATE_LOG_LEVEL": "DEBUG",
        "TOLLGATE_CONFIG": "/etc/tollgate.yaml",
        "TOLLGATE_OPERATOR_NAMESPACE": "x",
        "TOLLGATE_HTTP_PORT": "9000",
        "PATH": "/bin",
    }
    p = split_settings(env, ALL)
    shared = {"TOLLGATE_LOG_LEVEL": "DEBUG", "TOLLGATE_CONFIG": "/etc/tollgate.yaml"}
    assert p.per_service["orchestrator"] == {
        "TOLLGATE_ORCHESTRATOR_API_KEYS": "team-a:sk-secret",
        **shared,
    }
    assert p.per_service["cache"] == {"TOLLGATE_CACHE_BACKEND": "redis", **shared}
    assert p.per_service["router"] == shared  # the API keys never reach other processes
    assert p.applied == (
        "TOLLGATE_CACHE_BACKEND",
        "TOLLGATE_CONFIG",
        "TOLLGATE_HTTP_PORT",  # make run's own knob: applied, not passed on
        "TOLLGATE_LOG_LEVEL",
        "TOLLGATE_ORCHESTRATOR_API_KEYS",
    )
    assert p.ignored == ("TOLLGATE_OPERATOR_NAMESPACE",)


def test_simulator_settings_are_ignored_without_a_simulator() -> None:
    p = split_settings({"TOLLGATE_SIM_LATENCY_SCALE": "0"}, ("router", "cache", "orchestrator"))
    assert p.ignored == ("TOLLGATE_SIM_LATENCY_SCALE",) and "simulator" not in p.per_service


def test_ports_default_and_move_with_the_service_settings() -> None:
    assert choose_ports({}) == Ports.defaults()
    ports = choose_ports(
        {"TOLLGATE_ORCHESTRATOR_HTTP_PORT": "9000", "TOLLGATE_CACHE_GRPC_PORT": "6000"}
    )
    assert (ports.http, ports.cache, ports.router) == (9000, 6000, 50051)


def test_the_older_http_port_knob_and_which_one_wins() -> None:
    assert choose_ports({"TOLLGATE_HTTP_PORT": "9001"}).http == 9001
    both = {"TOLLGATE_HTTP_PORT": "9001", "TOLLGATE_ORCHESTRATOR_HTTP_PORT": "9002"}
    assert choose_ports(both).http == 9002


def test_free_ports_are_distinct_and_off_the_defaults_except_those_set() -> None:
    ports = choose_ports({"TOLLGATE_RUN_PORTS": "free", "TOLLGATE_ROUTER_GRPC_PORT": "6001"})
    values = list(vars(ports).values())
    assert ports.router == 6001 and len(set(values)) == len(values)
    assert not set(values) & {8080, 8090, 9101, 9102, 50052, 50053}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TOLLGATE_SIM_PORT": "abc"}, "TOLLGATE_SIM_PORT='abc': not a port"),
        ({"TOLLGATE_SIM_PORT": "0"}, "not a port"),
        ({"TOLLGATE_RUN_PORTS": "random"}, "use 'default' or 'free'"),
        (
            {"TOLLGATE_SIM_PORT": "7000", "TOLLGATE_CACHE_METRICS_PORT": "7000"},
            "TOLLGATE_SIM_PORT and TOLLGATE_CACHE_METRICS_PORT: both 7000",
        ),
    ],
)
def test_bad_ports_are_refused_by_name(env: dict[str, str], message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        choose_ports(env)


def test_dev_key_only_without_keys_anywhere(tmp_path: Path) -> None:
    assert uses_dev_key({})
    assert not uses_dev_key({"TOLLGATE_ORCHESTRATOR_API_KEYS": "a:sk-1"})
    assert not uses_dev_key({"TOLLGATE_ORCHESTRATOR_API_KEYS_FILE": "/keys.yaml"})
    assert uses_dev_key({"TOLLGATE_ORCHESTRATOR_API_KEYS": ""})  # empty: unset
    config = tmp_path / "tollgate.yaml"
    config.write_text("orchestrator: {api_keys: 'a:sk-1'}\n")
    assert not uses_dev_key({"TOLLGATE_CONFIG": str(config)})
    config.write_text("cache: {backend: memory}\n")
    assert uses_dev_key({"TOLLGATE_CONFIG": str(config)})


def test_upstream_choices() -> None:
    check_upstream("simulator", {})
    check_upstream("openai", {"OPENAI_API_KEY": "sk-1"})
    with pytest.raises(UsageError, match=r"accepted: simulator .*; openai "):
        check_upstream("anthropic", {})
    with pytest.raises(UsageError, match=r"OPENAI_API_KEY=sk-\.\.\. make run UPSTREAM=openai"):
        check_upstream("openai", {"OPENAI_API_KEY": ""})
    with pytest.raises(UsageError, match="TOLLGATE_ORCHESTRATOR_UPSTREAM_BASE_URL"):
        check_upstream(
            "openai",
            {"OPENAI_API_KEY": "sk-1", "TOLLGATE_ORCHESTRATOR_UPSTREAM_BASE_URL": "http://x/v1"},
        )


def test_upstream_providers_needs_one_vendors_key_and_names_them(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "providers:\n"
        "  openai: {base_url: 'https://api.openai.com/v1', api_key_env: OPENAI_API_KEY}\n"
        "  anthropic: {type: anthropic, base_url: 'https://api.anthropic.com/v1',"
        " api_key_env: ANTHROPIC_API_KEY}\n"
    )
    env = {"TOLLGATE_ORCHESTRATOR_POLICY_FILE": str(policy)}
    with pytest.raises(UsageError, match="set one of ANTHROPIC_API_KEY, OPENAI_API_KEY"):
        check_upstream("providers", env)
    check_upstream("providers", {**env, "ANTHROPIC_API_KEY": "sk-ant"})
    assert keyed_providers({**env, "ANTHROPIC_API_KEY": "sk-ant"}) == ["anthropic"]


def test_the_launchers_dev_key_is_the_orchestrators() -> None:
    from tollgate_orchestrator.config import DEV_KEY as ORCHESTRATOR_DEV_KEY
    from tools.stack import DEV_KEY

    assert DEV_KEY == ORCHESTRATOR_DEV_KEY
