"""The pipeline's own types: what a request is and what it becomes, in no wire format. Pure.

A dialect (``dialects/``) turns its wire format into an ``LlmRequest`` and the
pipeline's ``Whole`` or ``Streamed`` back into its wire format; a provider adapter
(``providers/``) sends an ``LlmRequest`` to one upstream API. Nothing here knows HTTP,
gRPC or JSON field names beyond the request body it carries.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from tollgate.cache.v1 import cache_pb2
from tollgate_common.policy import ModelEntry

# The wire APIs: what a request body is written in and what an upstream speaks.
CHAT_API = "openai.chat"  # OpenAI Chat Completions
RESPONSES_API = "openai.responses"  # OpenAI Responses
EMBEDDINGS_API = "openai.embeddings"  # OpenAI Embeddings
MESSAGES_API = "anthropic.messages"  # Anthropic Messages
# The ``api`` label of the metrics (bounded), and a provider's ``apis`` in the policy.
API_LABELS = {
    CHAT_API: "chat",
    RESPONSES_API: "responses",
    MESSAGES_API: "messages",
    EMBEDDINGS_API: "embeddings",
}
API_OF_LABEL = {label: api for api, label in API_LABELS.items()}
# The key in ``LlmRequest.state`` where the HTTP face puts the catalog model that answered,
# for the dialect's session (two catalog names may share an upstream model).
STATE_MODEL = "tollgate.model"


@dataclass(frozen=True, slots=True)
class Target:
    """One model of a chain: where it runs and what it costs."""

    name: str
    provider: str
    upstream_model: str
    entry: ModelEntry  # prices, for tollgate_common.policy.cost_usd
    context_window: int = 128_000


@dataclass(frozen=True, slots=True)
class RouteDecision:
    intent: str
    tier: str
    chain: tuple[Target, ...]
    baseline: Target | None
    degraded: bool = False
    reason: str = ""


@dataclass(slots=True)
class LlmRequest:
    """One request as the pipeline sees it. ``body`` is in the wire format of ``api``:
    where the upstream speaks the same API it passes through, only the model replaced."""

    body: dict[str, Any]
    model: str
    stream: bool
    include_usage: bool
    max_tokens: int | None
    n: int
    has_tools: bool
    json_mode: bool
    last_user_text: str
    system_text: str
    turns: int
    prompt_chars: int
    api: str = CHAT_API
    # The prompt carries an image: the router keeps the request on vision models.
    has_images: bool = False
    # Prompt tokens beyond the message text: tools, tool calls, schemas, images, files.
    est_extra_tokens: int = 0
    # A dialect's own state, carried from parse to its session (e.g. the Responses
    # store's expanded input); never sent upstream.
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def est_prompt_tokens(self) -> int:
        # ~4 characters per token plus OpenAI's few tokens of overhead per message, plus
        # everything else the upstream bills as prompt (the budget reservation, M-1).
        return self.prompt_chars // 4 + self.est_extra_tokens + 4 * self.turns + 3


@dataclass(frozen=True, slots=True)
class Meta:
    """What the faces report about an answer (headers, gRPC fields)."""

    model: str
    intent: str
    tier: str
    cache: str  # hit | miss | bypass
    cost: float | None  # None while a stream is still running
    degraded: bool


@dataclass(slots=True)
class Whole:
    body: bytes
    meta: Meta


@dataclass(slots=True)
class Streamed:
    """Server-sent events; the admission that produced it closes when they end."""

    events: AsyncIterator[bytes]
    meta: Meta


Outcome = Whole | Streamed


@dataclass(slots=True)
class EarlyLookup:
    """A cache lookup started beside the route, for a model known before the route."""

    model: str
    key: str
    task: asyncio.Task[tuple[str, cache_pb2.Entry | None]]


class Spending(Protocol):
    """What accounting needs of a request's admission: whose it is, what it has cost."""

    tenant: str
    cost: float


class UpstreamStream(Protocol):
    """An upstream stream whose first content chunk has arrived; yields data payloads."""

    first: list[bytes]  # payloads read before the first content chunk, that one included

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class Router(Protocol):
    async def route(
        self, req: LlmRequest, tenant: str, request_id: str, downgrade: bool
    ) -> RouteDecision: ...


class Cache(Protocol):
    async def lookup(self, key: str, model: str) -> tuple[str, cache_pb2.Entry | None]: ...

    async def store(
        self,
        key: str,
        body: bytes,
        model: str,
        usage: cache_pb2.Usage,
        cost_usd: float,
        ttl_seconds: int = 0,
    ) -> bool: ...
