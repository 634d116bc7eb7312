"""Settings load from env over a YAML file, and bad values name their field."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic_settings import SettingsConfigDict

from tollgate_common.config import ConfigError, ServiceSettings, load_settings


class DemoSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TOLLGATE_DEMO_", extra="forbid")
    grpc_port: int = 50999
    ratio: float = 0.5


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOLLGATE_CONFIG", raising=False)
    s = load_settings(DemoSettings, "demo")
    assert s.grpc_port == 50999
    assert s.host == "127.0.0.1"


def test_env_overrides_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("demo:\n  grpc_port: 1234\n  ratio: 0.25\n")
    monkeypatch.setenv("TOLLGATE_CONFIG", str(cfg))
    monkeypatch.setenv("TOLLGATE_DEMO_GRPC_PORT", "4321")
    s = load_settings(DemoSettings, "demo")
    assert s.grpc_port == 4321
    assert s.ratio == 0.25


def test_bad_env_value_names_field_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOLLGATE_CONFIG", raising=False)
    monkeypatch.setenv("TOLLGATE_DEMO_GRPC_PORT", "not-a-port")
    with pytest.raises(ConfigError, match=r"grpc_port.*TOLLGATE_DEMO_GRPC_PORT"):
        load_settings(DemoSettings, "demo")


def test_unknown_key_in_file_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("demo:\n  grpc_prot: 1\n")
    monkeypatch.setenv("TOLLGATE_CONFIG", str(cfg))
    with pytest.raises(ConfigError, match="grpc_prot"):
        load_settings(DemoSettings, "demo")


def test_unreadable_file_is_a_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TOLLGATE_CONFIG", str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(DemoSettings, "demo")
