"""What differs between vendors that share the transport: auth headers, URLs, quirks. Pure.

Every provider is reached the same way (``providers/openai.Upstreams``: one HTTP pool per
provider, a wire format's payload posted, its answer read raw and bounded); a ``Vendor``
says only what that vendor does differently: which headers carry the key and the API
version, where a wire format's requests go, and a chat->chat ``fixup`` for answers that
bend OpenAI's format (Gemini's). The policy's ``Provider.type`` picks the vendor.
"""

from __future__ import annotations

from typing import Protocol

from openai import AsyncOpenAI

from tollgate_common.policy import AuthScheme
from tollgate_common.policy import Provider as ProviderEntry
from tollgate_orchestrator.dialects import Translation, Wire


class Vendor(Protocol):
    type: str  # the policy's ``Provider.type``

    def headers(self, entry: ProviderEntry, key: str) -> dict[str, str]:
        """Auth and vendor headers for every request (no content type); ``key`` may be ""."""

    def path(self, entry: ProviderEntry, wire: Wire, upstream_model: str) -> str:
        """Where a request of ``wire`` goes, relative to the base URL (may carry a query)."""

    def fixup(self) -> Translation | None:
        """A chat->chat repair of this vendor's answers and streams, or None."""


VENDORS: dict[str, Vendor] = {}


def register_vendor(vendor: Vendor) -> Vendor:
    VENDORS[vendor.type] = vendor
    return vendor


def auth_header(scheme: AuthScheme, key: str) -> dict[str, str]:
    """The key as ``scheme`` sends it; nothing without a key."""
    if not key:
        return {}
    if scheme == "bearer":
        return {"Authorization": f"Bearer {key}"}
    return {scheme: key}


def sdk_headers(sdk: AsyncOpenAI | None = None) -> dict[str, str]:
    """The openai SDK's own headers (user agent, platform); unset options are not str."""
    client = sdk or AsyncOpenAI(api_key="unused", base_url="http://127.0.0.1/")
    return {k: v for k, v in client.default_headers.items() if isinstance(v, str)}


class OpenAIVendor:
    """OpenAI, and any server that speaks its API (vLLM, Ollama, llama.cpp, LM Studio):
    the key as a bearer when there is one, requests at the wire's own path."""

    def __init__(self, type_: str) -> None:
        self.type = type_
        self._headers = sdk_headers()

    def headers(self, entry: ProviderEntry, key: str) -> dict[str, str]:
        return {**self._headers, **auth_header(entry.auth or "bearer", key)}

    def path(self, entry: ProviderEntry, wire: Wire, upstream_model: str) -> str:
        return wire.path

    def fixup(self) -> Translation | None:
        return None


OPENAI = register_vendor(OpenAIVendor("openai"))
COMPATIBLE = register_vendor(OpenAIVendor("compatible"))
