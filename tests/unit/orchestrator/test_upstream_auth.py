"""Which key goes to which upstream: the provider's own key only to its own base URL."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tollgate_common.config import ConfigError
from tollgate_common.policy import Policy, Provider, load_policy
from tollgate_orchestrator.providers import openai as openai_provider
from tollgate_orchestrator.providers.openai import Upstreams
from tollgate_orchestrator.retry import NOT_CONFIGURED, AttemptFailed
from tollgate_orchestrator.types import LlmRequest, Target


def chat_request() -> LlmRequest:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    return LlmRequest(body, "gpt-4o", False, False, None, 1, False, False, "hi", "", 1, 2)


POLICY = load_policy()


def with_provider(base_url: str) -> Policy:
    providers = {"openai": Provider(base_url=base_url, api_key_env="OPENAI_API_KEY")}
    return POLICY.model_copy(update={"providers": providers})


async def headers(policy: Policy, **kw: object) -> dict[str, str]:
    u = Upstreams(policy, connect_timeout=1, read_timeout=1, **kw)  # type: ignore[arg-type]
    try:
        return dict(u.client("openai").headers)  # type: ignore[union-attr]
    finally:
        await u.close()


async def test_the_provider_key_is_sent_as_bearer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-real")
    h = await headers(POLICY, base_url=None)
    assert h["authorization"] == "Bearer sk-real"
    assert h["content-type"] == "application/json"


async def test_an_override_gets_its_own_key_never_the_providers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-real")
    assert "authorization" not in await headers(POLICY, base_url="http://127.0.0.1:9/v1")
    h = await headers(POLICY, base_url="http://127.0.0.1:9/v1", base_url_key="sk-local")
    assert h["authorization"] == "Bearer sk-local"


async def test_a_provider_without_its_key_is_unavailable_and_never_called(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    u = Upstreams(POLICY, base_url=None, connect_timeout=1, read_timeout=1)
    try:
        assert "openai" in u.unavailable()
        assert u.client("openai") is None
        target = Target("gpt-4o", "openai", "gpt-4o", POLICY.models["gpt-4o"])
        with pytest.raises(AttemptFailed) as info:
            await u.complete(target, chat_request(), 1.0)
        assert info.value.failure.error_class == NOT_CONFIGURED
        assert not info.value.failure.retryable
        assert not info.value.failure.counts_against_breaker
    finally:
        await u.close()


async def test_a_keyless_provider_is_available_and_sends_no_auth(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    providers = {"vllm": Provider(type="compatible", base_url="http://llm.internal/v1")}
    policy = POLICY.model_copy(update={"providers": providers})
    u = Upstreams(policy, base_url=None, connect_timeout=1, read_timeout=1)
    try:
        assert u.unavailable() == frozenset()
        h = dict(u.client("vllm").headers)  # type: ignore[union-attr]
        assert "authorization" not in h and h["content-type"] == "application/json"
    finally:
        await u.close()


async def test_a_key_file_is_read_again_when_it_changes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("tok-1\n")
    providers = {"openai": Provider(base_url="https://api.openai.com/v1", api_key_file=str(token))}
    policy = POLICY.model_copy(update={"providers": providers})
    now = [0.0]
    monkeypatch.setattr("time.monotonic", lambda: now[0])
    u = Upstreams(policy, base_url=None, connect_timeout=1, read_timeout=1)
    try:
        p = u.client("openai")
        assert p is not None and p.headers["authorization"] == "Bearer tok-1"
        token.write_text("tok-2")
        os.utime(token, ns=(1, 10**18))  # a new mtime, whatever the clock's resolution
        p.refresh()  # not yet looked at again
        assert p.headers["authorization"] == "Bearer tok-1"
        now[0] += openai_provider.KEY_FILE_CHECK_SECONDS
        p.refresh()
        assert p.headers["authorization"] == "Bearer tok-2"
    finally:
        await u.close()


@pytest.mark.parametrize("url", ["http://llm.internal/v1", "http://10.0.0.7:8000/v1"])
async def test_a_key_over_plain_http_is_refused(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-real")
    with pytest.raises(ConfigError, match=r"providers\.openai\.base_url.*clear text") as info:
        await headers(with_provider(url), base_url=None)
    assert "sk-real" not in str(info.value)
    with pytest.raises(ConfigError, match="upstream_base_url"):
        await headers(POLICY, base_url=url, base_url_key="sk-local")


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8000/v1", "http://localhost/v1", "http://[::1]/v1"]
)
async def test_loopback_and_allowed_hosts_may_use_http(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-real")
    assert (await headers(with_provider(url), base_url=None))["authorization"] == "Bearer sk-real"
    allowed = frozenset({"llm.internal"})
    h = await headers(
        with_provider("http://llm.internal/v1"), base_url=None, insecure_hosts=allowed
    )
    assert h["authorization"] == "Bearer sk-real"
    # Without a key nothing secret travels, so plain http is fine anywhere (the provider
    # is then unavailable: no request goes out without its key).
    monkeypatch.delenv("OPENAI_API_KEY")
    policy = with_provider("http://llm.internal/v1")
    u = Upstreams(policy, base_url=None, connect_timeout=1, read_timeout=1)
    assert u.unavailable() == {"openai"}
    await u.close()


async def test_a_followed_policy_cannot_move_a_providers_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A pushed policy names models and prices; where the key goes stays this deployment's."""
    from prometheus_client import CollectorRegistry

    from tollgate_common.config import load_settings
    from tollgate_orchestrator.config import OrchestratorSettings
    from tollgate_orchestrator.wiring import Gateway

    for k in [k for k in os.environ if k.startswith("TOLLGATE_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-real")
    gw = Gateway(load_settings(OrchestratorSettings, "orchestrator"), CollectorRegistry())
    try:
        evil = with_provider("https://collector.example/v1").model_copy(update={"version": "x"})
        assert gw.catalog.apply(evil)
        client = gw.upstreams.client("openai")
        assert client is not None and client.base_url.host == "api.openai.com"
    finally:
        await gw.close()
