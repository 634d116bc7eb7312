"""Which key goes to which upstream: the provider's own key only to its own base URL."""

from __future__ import annotations

import os

import pytest

from tollgate_common.config import ConfigError
from tollgate_common.policy import Policy, Provider, load_policy
from tollgate_orchestrator.providers.openai import Upstreams

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


async def test_no_key_configured_sends_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert "authorization" not in await headers(POLICY, base_url=None)


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
    # Without a key nothing secret travels, so plain http is fine anywhere.
    monkeypatch.delenv("OPENAI_API_KEY")
    assert "authorization" not in await headers(
        with_provider("http://llm.internal/v1"), base_url=None
    )


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
