"""The two protocols a wire format implements: ``Dialect`` toward clients, ``Wire`` toward
upstreams. Pure.

A ``Dialect`` parses a client's body into an ``LlmRequest`` whose ``api`` names the
``Wire`` its body is written in, and renders the pipeline's answer (in that wire
format) back into its own. A dialect whose format *is* an upstream API (Chat
Completions today) renders by passing through; one that is not translates both ways.
The pipeline only ever speaks ``Wire``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

from tollgate_orchestrator.accounting import Usage
from tollgate_orchestrator.errors import ApiError
from tollgate_orchestrator.types import LlmRequest
from tollgate_orchestrator.validation import Limits


class StreamParser(Protocol):
    """Reads one upstream stream's payloads: usage, content chunks, the whole answer."""

    usage: Usage | None
    chunks: int  # content chunks seen: the estimate of a stream that ended without usage

    def feed(self, payload: bytes, price: Callable[[Usage], float]) -> bytes | None:
        """The event to send for one payload, or None to drop it."""

    def assembled(self) -> bytes | None:
        """The whole answer in this wire format, for the cache (None: not assembled)."""


class Wire(Protocol):
    """One upstream API's wire format, as the pipeline and provider adapters use it."""

    api: str  # e.g. "openai.chat"
    path: str  # the upstream path under the provider's base URL
    done_event: bytes

    def payload(self, req: LlmRequest, upstream_model: str) -> bytes: ...

    def cache_key(self, model: str, req: LlmRequest, tenant: str) -> str:
        """The key of the answer to ``req`` from ``model``: every field that changes it."""

    def answer(self, raw: bytes) -> Usage | None:
        """The usage of a whole answer; None when ``raw`` is not an answer of this API."""

    def parser(self, req: LlmRequest, assemble: bool) -> StreamParser: ...

    def end_of(self, payload: bytes) -> str | None:
        """ "done" or "error" when this payload ends the stream, else None."""

    def first_content(self, payload: bytes) -> bool:
        """Whether this payload carries content: until then a stream can still fall back."""

    def replay(self, stored: bytes, include_usage: bool) -> list[bytes] | None:
        """A cached whole answer as stream events; None when it cannot be replayed."""

    def stream_error(self, message: str, code: str, cost_usd: float) -> bytes: ...


class Dialect(Protocol):
    """One client API served over HTTP."""

    name: str  # short and bounded: it names the route in logs and docs
    summary: str  # the OpenAPI operation's summary
    path: str  # e.g. "/v1/chat/completions"
    api: str  # the ``Wire`` its requests are written in

    def parse(self, raw: bytes, limits: Limits) -> LlmRequest:
        """The client's body as a request; raises ``ApiError`` naming the bad field."""

    def render(self, body: bytes) -> bytes:
        """A whole answer of ``api`` in this dialect."""

    def render_stream(self, events: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """The stream events of ``api`` in this dialect."""

    def error_body(self, err: ApiError) -> bytes: ...

    def openapi(self, limits: Limits) -> dict[str, Any]:
        """The operation's OpenAPI fragment (request schema, responses)."""
