"""Azure OpenAI: its two URL schemes and its key header. Pure.

- The v1 API (``api_version`` empty): ``base_url`` is ``https://{res}.openai.azure.com/openai/v1/``
  and requests go to the wire's own path, the deployment name as ``model``: plain OpenAI.
- The classic API (``api_version`` set): ``base_url`` is ``https://{res}.openai.azure.com/``;
  chat and embeddings go to ``openai/deployments/{deployment}/{path}?api-version=X`` (the
  upstream model is the deployment), everything else, Responses included, to
  ``openai/{path}?api-version=X`` (as ``openai.AzureOpenAI`` does, lib/azure.py). A base URL
  that already ends in ``/openai`` is taken as the same root.

Auth: the key in ``api-key`` by default; ``auth: bearer`` sends it as
``Authorization: Bearer`` (an Entra ID token, usually from ``api_key_file``, which a
sidecar refreshes and the transport re-reads). Azure's answers are OpenAI's (plus
content-filter fields, passed through), so there is no fixup.
"""

from __future__ import annotations

from urllib.parse import quote

from tollgate_common.policy import Provider as ProviderEntry
from tollgate_orchestrator.dialects import Translation, Wire
from tollgate_orchestrator.providers.vendors import auth_header, register_vendor, sdk_headers
from tollgate_orchestrator.types import CHAT_API, EMBEDDINGS_API

DEPLOYMENT_APIS = frozenset({CHAT_API, EMBEDDINGS_API})  # under /deployments/{id}/


def classic_path(base_url: str, api_version: str, wire: Wire, deployment: str) -> str:
    """A classic-API path relative to ``base_url`` (the resource's root)."""
    root = "" if base_url.rstrip("/").endswith("/openai") else "openai/"
    query = "?api-version=" + quote(api_version, safe="")
    if wire.api in DEPLOYMENT_APIS:
        return f"{root}deployments/{quote(deployment, safe='')}/{wire.path}{query}"
    return f"{root}{wire.path}{query}"


class AzureVendor:
    type = "azure"

    def __init__(self) -> None:
        self._headers = sdk_headers()

    def headers(self, entry: ProviderEntry, key: str) -> dict[str, str]:
        return {**self._headers, **auth_header(entry.auth or "api-key", key)}

    def path(self, entry: ProviderEntry, wire: Wire, upstream_model: str) -> str:
        if not entry.api_version:
            return wire.path
        return classic_path(entry.base_url, entry.api_version, wire, upstream_model)

    def fixup(self) -> Translation | None:
        return None


AZURE = register_vendor(AzureVendor())
