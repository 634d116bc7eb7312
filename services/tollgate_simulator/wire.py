"""What the HTTP app needs from an API module: a parsed call, and its reply to render.

Each API module (chat, responses, messages, embeddings) parses a body into a ``Call``;
the app counts it, applies faults, then asks it for a ``Reply`` and serves the reply
whole or as a paced stream. Pacing and faults live in the app, once for every API.
"""

from __future__ import annotations

from typing import Protocol


class Reply(Protocol):
    @property
    def tokens(self) -> int:
        """Every generated token, reasoning included: paces a whole answer."""

    @property
    def think_tokens(self) -> int:
        """Tokens thought before the first stream event (on top of the fixed latency)."""

    @property
    def preamble(self) -> int:
        """Stream events before the first content event: a broken stream sends them all."""

    @property
    def closing(self) -> int:
        """Final stream events that make a clean end: a broken stream never sends them."""

    def body(self) -> bytes:
        """The whole answer (JSON)."""

    def events(self) -> list[tuple[bytes, int]]:
        """The stream as framed SSE events, each with the tokens it carries."""


class Call(Protocol):
    @property
    def model(self) -> str: ...

    @property
    def stream(self) -> bool: ...

    def reply(self, id_: str, created: int) -> Reply:
        """Generate the answer; ``id_`` is unique per call, ``created`` a Unix time."""


def named_event(kind: str, data: bytes) -> bytes:
    """One SSE event with an ``event:`` line, as Responses and Messages stream them."""
    return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"
