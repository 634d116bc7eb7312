"""CacheSettings: defaults, env prefix, and errors that name the field."""

from __future__ import annotations

import pytest

from tollgate_cache.config import CacheSettings
from tollgate_common.config import ConfigError, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOLLGATE_CONFIG", raising=False)


def test_defaults() -> None:
    s = load_settings(CacheSettings, "cache")
    assert (s.grpc_port, s.metrics_port, s.backend) == (50052, 9102, "memory")
    assert s.max_bytes == 256 * 1024 * 1024
    assert s.max_entry_bytes == 1024 * 1024
    assert s.default_ttl_seconds == 3600
    assert s.redis_timeout_seconds == 0.2
    assert (s.breaker_failures, s.breaker_reset_seconds, s.hit_rate_window) == (3, 5.0, 1000)


def test_env_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOLLGATE_CACHE_BACKEND", "redis")
    monkeypatch.setenv("TOLLGATE_CACHE_REDIS_URL", "redis://:hunter2@127.0.0.1:6379/3")
    monkeypatch.setenv("TOLLGATE_CACHE_HIT_RATE_WINDOW", "50")
    s = load_settings(CacheSettings, "cache")
    assert s.backend == "redis" and s.hit_rate_window == 50
    assert s.redis_url is not None
    assert s.redis_url.get_secret_value().endswith("/3")
    assert "hunter2" not in repr(s)  # the password never reaches a log line


def test_redis_backend_without_url_names_redis_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOLLGATE_CACHE_BACKEND", "redis")
    with pytest.raises(ConfigError, match=r"redis_url: required.*TOLLGATE_CACHE_REDIS_URL"):
        load_settings(CacheSettings, "cache")


def test_redis_url_with_a_wrong_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOLLGATE_CACHE_BACKEND", "redis")
    monkeypatch.setenv("TOLLGATE_CACHE_REDIS_URL", "http://127.0.0.1:6379")
    with pytest.raises(ConfigError, match="redis_url: must start with"):
        load_settings(CacheSettings, "cache")


@pytest.mark.parametrize(
    ("env", "value", "field"),
    [
        ("TOLLGATE_CACHE_BACKEND", "memcached", "backend"),
        ("TOLLGATE_CACHE_MAX_BYTES", "0", "max_bytes"),
        ("TOLLGATE_CACHE_REDIS_TIMEOUT_SECONDS", "-1", "redis_timeout_seconds"),
        ("TOLLGATE_CACHE_BREAKER_FAILURES", "0", "breaker_failures"),
        ("TOLLGATE_CACHE_MAX_ENTRY_BYTES", str(512 * 1024 * 1024), "max_entry_bytes"),
    ],
)
def test_bad_values_name_their_field(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, field: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError, match=field):
        load_settings(CacheSettings, "cache")
