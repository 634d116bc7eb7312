"""API keys (hashed, tenant from key, 401s alike) and the settings that carry them."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tollgate_common.config import ConfigError, load_settings
from tollgate_orchestrator.auth import KeyRing
from tollgate_orchestrator.config import (
    DEV_KEY,
    OrchestratorSettings,
    digest,
    load_keys,
    parse_key_pairs,
)
from tollgate_orchestrator.errors import ApiError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for k in list(os.environ):
        if k.startswith("TOLLGATE_"):
            monkeypatch.delenv(k)


def test_keyring_maps_keys_to_tenants_and_refuses_others() -> None:
    ring = KeyRing({digest("sk-a"): "team-a", digest("sk-b"): "team-b"})
    assert ring.tenant_for("Bearer sk-a") == "team-a"
    assert ring.tenant_for("bearer  sk-b ") == "team-b"
    bodies = set()
    for header in (None, "", "Bearer", "Basic sk-a", "Bearer sk-c", "Bearer sk-a-longer"):
        with pytest.raises(ApiError) as info:
            ring.tenant_for(header)
        err = info.value
        assert err.status == 401 and err.code == "invalid_api_key"
        assert err.headers["x-should-retry"] == "false"
        bodies.add(orjson.loads(err.body())["error"]["code"])
    assert bodies == {"invalid_api_key"}


def test_dev_key_when_nothing_is_configured() -> None:
    s = load_settings(OrchestratorSettings, "orchestrator")
    keys, dev = load_keys(s)
    assert dev and keys == {digest(DEV_KEY): "dev"}


def test_keys_from_env_and_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    f = tmp_path / "keys.yaml"
    f.write_text("team-c: sk-c\nteam-d: [sk-d1, sk-d2]\n")
    monkeypatch.setenv("TOLLGATE_ORCHESTRATOR_API_KEYS", "team-a:sk-a, team-b:sk-b")
    monkeypatch.setenv("TOLLGATE_ORCHESTRATOR_API_KEYS_FILE", str(f))
    keys, dev = load_keys(load_settings(OrchestratorSettings, "orchestrator"))
    assert not dev
    assert sorted(keys.values()) == ["team-a", "team-b", "team-c", "team-d", "team-d"]
    assert all(len(k) == 32 for k in keys)  # only digests are held


def test_bad_keys_name_the_entry_never_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOLLGATE_ORCHESTRATOR_API_KEYS", "team-a:sk-secret-1,sk-secret-2")
    with pytest.raises(ConfigError) as info:
        load_settings(OrchestratorSettings, "orchestrator")
    assert "entry 1" in str(info.value)
    assert "sk-secret" not in str(info.value)
    with pytest.raises(ValueError, match="empty"):
        parse_key_pairs(" , ")


def test_budgets_from_the_config_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "orchestrator:\n  budgets:\n"
        "    - {tenant: a, period: day, limit_usd: 5}\n"
        "    - {tenant: a, period: month, limit_usd: 50, action: downgrade}\n"
    )
    monkeypatch.setenv("TOLLGATE_CONFIG", str(cfg))
    s = load_settings(OrchestratorSettings, "orchestrator")
    assert [(b.period, b.limit_usd, b.action) for b in s.budgets] == [
        ("day", 5.0, "reject"),
        ("month", 50.0, "downgrade"),
    ]


@pytest.mark.parametrize(
    ("env", "value", "field"),
    [
        ("BUDGETS", '[{"tenant": "a", "period": "week", "limit_usd": 1}]', "budgets"),
        ("BUDGETS", '[{"tenant": "a", "period": "day", "limit_usd": -1}]', "limit_usd"),
        (
            "BUDGETS",
            '[{"tenant":"a","period":"day","limit_usd":1},'
            '{"tenant":"a","period":"day","limit_usd":2}]',
            "budgets[1]",
        ),
        ("BUDGET_UNCHECKED_POLICY", "maybe", "budget_unchecked_policy"),
        ("MAX_BODY_BYTES", "10", "max_body_bytes"),
        ("UPSTREAM_BASE_URL", "ftp://x", "upstream_base_url"),
        ("RETRY_MAX_BACKOFF_SECONDS", "0.01", "retry_max_backoff_seconds"),
    ],
)
def test_bad_settings_name_the_field(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, field: str
) -> None:
    monkeypatch.setenv(f"TOLLGATE_ORCHESTRATOR_{env}", value)
    with pytest.raises(ConfigError, match=field.replace("[", r"\[").replace("]", r"\]")):
        load_settings(OrchestratorSettings, "orchestrator")
