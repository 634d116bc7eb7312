"""API keys (hashed, tenant from key, 401s alike) and the settings that carry them."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tollgate_common.config import ConfigError, load_settings
from tollgate_orchestrator.auth import KeyRing
from tollgate_orchestrator.config import (
    DEV_KEY,
    MIN_KEY_CHARS,
    OrchestratorSettings,
    digest,
    load_keys,
    parse_key_pairs,
)
from tollgate_orchestrator.errors import ApiError

PAD = "-" + "0" * 32  # makes a readable test key long enough (MIN_KEY_CHARS)


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
    f.write_text(f"team-c: sk-c{PAD}\nteam-d: [sk-d1{PAD}, sk-d2{PAD}]\n")
    monkeypatch.setenv("TOLLGATE_ORCHESTRATOR_API_KEYS", f"team-a:sk-a{PAD}, team-b:sk-b{PAD}")
    monkeypatch.setenv("TOLLGATE_ORCHESTRATOR_API_KEYS_FILE", str(f))
    keys, dev = load_keys(load_settings(OrchestratorSettings, "orchestrator"))
    assert not dev
    assert sorted(keys.values()) == ["team-a", "team-b", "team-c", "team-d", "team-d"]
    assert all(len(k) == 32 for k in keys)  # only digests are held


def test_bad_keys_name_the_entry_never_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOLLGATE_ORCHESTRATOR_API_KEYS", f"team-a:sk-secret-1{PAD},sk-secret-2")
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


def test_the_dev_key_meets_the_minimum() -> None:
    assert len(DEV_KEY) >= MIN_KEY_CHARS == 32


def test_short_keys_are_refused_at_start_naming_the_field(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    short = "k" * (MIN_KEY_CHARS - 1)
    monkeypatch.setenv("TOLLGATE_ORCHESTRATOR_API_KEYS", f"team-a:sk-a{PAD},team-b:{short}")
    with pytest.raises(ConfigError) as info:
        load_settings(OrchestratorSettings, "orchestrator")
    msg = str(info.value)
    assert "api_keys" in msg and "entry 1" in msg and "32 characters" in msg
    assert short not in msg
    monkeypatch.delenv("TOLLGATE_ORCHESTRATOR_API_KEYS")
    f = tmp_path / "keys.yaml"
    f.write_text(f"team-c: sk-c{PAD}\nteam-d: [sk-d1{PAD}, {short}]\n")
    monkeypatch.setenv("TOLLGATE_ORCHESTRATOR_API_KEYS_FILE", str(f))
    with pytest.raises(ConfigError) as info:
        load_keys(load_settings(OrchestratorSettings, "orchestrator"))
    msg = str(info.value)
    assert "api_keys_file" in msg and "team-d" in msg and "32 characters" in msg
    assert short not in msg
    f.write_text(f"team-d: {'k' * MIN_KEY_CHARS}\n")  # exactly the minimum is accepted
    assert sorted(load_keys(load_settings(OrchestratorSettings, "orchestrator"))[0].values()) == [
        "team-d"
    ]


def test_the_old_redis_url_stops_the_process_with_the_new_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An upgrade must not silently turn shared budgets into per-replica ones.
    monkeypatch.setenv("TOLLGATE_ORCHESTRATOR_REDIS_URL", "redis://:hunter2@127.0.0.1:6379/0")
    with pytest.raises(ConfigError, match="renamed to budget_redis_url") as info:
        load_settings(OrchestratorSettings, "orchestrator")
    assert "hunter2" not in str(info.value)
    monkeypatch.delenv("TOLLGATE_ORCHESTRATOR_REDIS_URL")
    monkeypatch.setenv("TOLLGATE_ORCHESTRATOR_BUDGET_REDIS_URL", "redis://127.0.0.1:6379/1")
    s = load_settings(OrchestratorSettings, "orchestrator")
    assert s.budget_redis_url is not None and s.budget_redis_url.get_secret_value().endswith("/1")


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
