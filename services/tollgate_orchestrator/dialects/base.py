"""The two protocols a wire format implements: ``Dialect`` toward clients, ``Wire`` toward
upstreams. Pure.

A ``Dialect`` parses a client's body into an ``LlmRequest`` whose ``api`` names the
``Wire`` its body is written in; the pipeline answers in that wire format, which the
dialect renders (every dialect here is its own wire format, so rendering passes
through). An upstream that does not speak a request's API is reached through a
``Translation`` (``providers/dispatch.py``): the request goes out in an API the
upstream speaks and its answer comes back in the request's own, so the pipeline,
the cache and accounting only ever see the request's ``Wire``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
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

    def error(self, message: str, code: str, cost_usd: float) -> bytes:
        """The event that ends a stream that failed after it started (in this wire's
        framing, numbered where the wire numbers its events)."""


class Wire(Protocol):
    """One upstream API's wire format, as the pipeline and provider adapters use it."""

    api: str  # e.g. "openai.chat"
    path: str  # the upstream path under the provider's base URL
    # What the relay sends after the upstream's terminal payload: chat's ``[DONE]``. Empty
    # where the terminal payload is itself an event the client needs (``response.completed``,
    # ``message_stop``): then it goes through ``feed`` like any other.
    done_event: bytes
    deterministic: bool  # cacheable without temperature 0 or a seed (embeddings)

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


class StreamTranslator(Protocol):
    """One stream's translation: payloads of the upstream's API in, the request's out."""

    def feed(self, payload: bytes) -> list[bytes]:
        """The payloads (data JSON, or the wire's terminal marker) for one upstream payload."""


class Translation(Protocol):
    """From a request's API (``source``) to one an upstream speaks (``target``), and back."""

    source: str
    target: str

    def request(self, req: LlmRequest) -> LlmRequest:
        """A copy of ``req`` in ``target``'s wire format (``api`` = target). Raises
        ``ApiError`` (400, naming the field) for what the target cannot do."""

    def answer(self, raw: bytes, req: LlmRequest) -> bytes | None:
        """A whole answer of ``target`` as one of ``source``; None when ``raw`` is not one."""

    def stream(self, req: LlmRequest) -> StreamTranslator: ...


class Session(Protocol):
    """A dialect's state around the pipeline, per tenant (the Responses store)."""

    async def before(self, req: LlmRequest, tenant: str) -> LlmRequest:
        """The request with what it refers to resolved; raises ``ApiError`` (400) when
        that is not there."""

    def after(self, req: LlmRequest, tenant: str, body: bytes) -> bytes:
        """A whole answer (in the dialect's format) is being returned: keep what must be
        kept; returns the body to send (with what the session resolved named in it)."""

    def watch(
        self, req: LlmRequest, tenant: str, events: AsyncIterator[bytes]
    ) -> AsyncIterator[bytes]:
        """The stream's events (with what the session resolved named in them); keeps what
        must be kept as they pass."""


class PassThrough:
    """What a dialect that is its own wire format does: answers go out as they came, errors
    in OpenAI's shape, the key as a bearer. Dialects inherit it and override what differs."""

    def render(self, body: bytes) -> bytes:
        return body

    def render_stream(self, events: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        return events

    def error_body(self, err: ApiError) -> bytes:
        return err.body()

    def authorization(self, headers: Mapping[str, str]) -> str | None:
        return headers.get("authorization")


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

    def error_body(self, err: ApiError) -> bytes:
        """An error in this dialect's own shape (OpenAI's, Anthropic's)."""

    def authorization(self, headers: Mapping[str, str]) -> str | None:
        """The client's credential as an ``Authorization`` value (``Bearer <key>``)."""

    def openapi(self, limits: Limits) -> dict[str, Any]:
        """The operation's OpenAPI fragment (request schema, responses)."""
