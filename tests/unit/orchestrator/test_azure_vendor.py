"""Azure OpenAI's URLs and auth (providers/azure.py)."""

from __future__ import annotations

import httpx2
import pytest

from tollgate_common.policy import Provider
from tollgate_orchestrator.dialects import WIRES
from tollgate_orchestrator.providers import azure  # noqa: F401  (registers the vendor)
from tollgate_orchestrator.providers.vendors import VENDORS
from tollgate_orchestrator.types import CHAT_API, EMBEDDINGS_API, RESPONSES_API

V1 = "https://res.openai.azure.com/openai/v1/"
ROOT = "https://res.openai.azure.com/"


def url(entry: Provider, api: str, model: str = "gpt4o-prod") -> str:
    path = VENDORS["azure"].path(entry, WIRES[api], model)
    return str(httpx2.URL(entry.base_url).join(path))


def test_v1_api_uses_the_wires_own_path() -> None:
    entry = Provider(type="azure", base_url=V1)
    assert url(entry, CHAT_API) == V1 + "chat/completions"
    assert url(entry, RESPONSES_API) == V1 + "responses"
    assert url(entry, EMBEDDINGS_API) == V1 + "embeddings"


@pytest.mark.parametrize("base", [ROOT, "https://res.openai.azure.com/openai/", ROOT[:-1]])
def test_classic_api_uses_deployments_and_api_version(base: str) -> None:
    entry = Provider(type="azure", base_url=base, api_version="2024-10-21")
    q = "?api-version=2024-10-21"
    assert url(entry, CHAT_API) == ROOT + "openai/deployments/gpt4o-prod/chat/completions" + q
    assert url(entry, EMBEDDINGS_API, "emb") == ROOT + "openai/deployments/emb/embeddings" + q
    assert url(entry, RESPONSES_API) == ROOT + "openai/responses" + q


def test_classic_deployment_names_are_quoted() -> None:
    entry = Provider(type="azure", base_url=ROOT, api_version="2025-04-01-preview")
    assert "/deployments/a%2Fb%3Fc/" in url(entry, CHAT_API, "a/b?c")


def test_api_key_header_by_default_and_bearer_for_entra() -> None:
    v = VENDORS["azure"]
    headers = v.headers(Provider(type="azure", base_url=V1), "k1")
    assert headers["api-key"] == "k1" and "Authorization" not in headers
    assert "User-Agent" in headers or "user-agent" in {k.lower() for k in headers}
    entra = v.headers(Provider(type="azure", base_url=V1, auth="bearer"), "tok")
    assert entra["Authorization"] == "Bearer tok" and "api-key" not in entra
    assert "api-key" not in v.headers(Provider(type="azure", base_url=V1), "")
    assert v.fixup() is None
