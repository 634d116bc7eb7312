"""Anthropic's own API (``POST /v1/messages``): its headers and where requests go. Pure.

A provider of ``type: anthropic`` speaks Messages only (``TYPE_APIS``): a Messages
request goes as it is, a chat one through ``translate/chat_messages`` and a Responses
one through chat first (``providers/dispatch``), so prompt caching, thinking and tool
use are Anthropic's own, not its OpenAI-compatible endpoint's (which ignores
``cache_control`` and thinking, api-surface §2.1).

Headers are the official SDK's (``anthropic.AsyncAnthropic``: ``anthropic-version``, its
user agent and platform headers), so the API version moves with the pinned SDK and an
upstream sees what Anthropic's own client sends. Auth: the key in ``x-api-key`` by
default, which Anthropic, its proxies and older servers all take; ``auth: bearer``
sends it as ``Authorization: Bearer`` (what the SDK itself sends since 2.x).

``base_url`` is the API root with or without ``/v1`` (``https://api.anthropic.com/v1/``
as OpenAI-style configs write it, ``https://api.anthropic.com`` as the SDK's
``base_url`` is): requests go to ``v1/messages`` under a root without it.

Errors (``{"type": "error", "error": {"type", "message"}}``) are read by the transport
like OpenAI's (it takes the ``error`` object); 529 ``overloaded_error`` is a server
error there (``retry.classify_status``), so it retries and falls back.
"""

from __future__ import annotations

from anthropic import AsyncAnthropic

from tollgate_common.policy import Provider as ProviderEntry
from tollgate_orchestrator.dialects import Translation, Wire
from tollgate_orchestrator.providers.vendors import auth_header, register_vendor
from tollgate_orchestrator.translate import chat_messages  # noqa: F401 (its registration)

# The SDK's headers that the transport sets itself, or that carry its own placeholder key.
_NOT_SDK = frozenset({"authorization", "x-api-key", "accept", "content-type"})


def anthropic_headers(sdk: AsyncAnthropic | None = None) -> dict[str, str]:
    """The anthropic SDK's own headers (``anthropic-version``, user agent, platform),
    without its auth; unset options are not str."""
    client = sdk or AsyncAnthropic(api_key="unused", base_url="http://127.0.0.1/")
    headers = {**client.default_headers, **client.auth_headers}
    return {k: v for k, v in headers.items() if isinstance(v, str) and k.lower() not in _NOT_SDK}


def messages_path(base_url: str, wire: Wire) -> str:
    """``wire.path`` under a base URL that ends in ``/v1``, else under ``v1/``."""
    return wire.path if base_url.rstrip("/").endswith("/v1") else f"v1/{wire.path}"


class AnthropicVendor:
    type = "anthropic"

    def __init__(self) -> None:
        self._headers = anthropic_headers()

    def headers(self, entry: ProviderEntry, key: str) -> dict[str, str]:
        return {**self._headers, **auth_header(entry.auth or "x-api-key", key)}

    def path(self, entry: ProviderEntry, wire: Wire, upstream_model: str) -> str:
        return messages_path(entry.base_url, wire)

    def fixup(self) -> Translation | None:
        return None


ANTHROPIC = register_vendor(AnthropicVendor())
