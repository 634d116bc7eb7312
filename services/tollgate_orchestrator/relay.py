"""The stream relay: forward an upstream stream as it comes, account for it once it ends.

Payloads are forwarded untouched and parsed only (by the wire format's parser) for
usage and, when the answer will be cached, to assemble it. After the first byte a
stream cannot be retried: a failure ends it with an error event. ``finish`` runs
from the admission's close, once, however the stream ended: it closes the
upstream (a client that left stops the spending), estimates a stream that ended
without usage, and records everything.

A stream is bounded (the upstream raises ``StreamStalled``): past its total duration
or without a data payload for too long it ends with the wire's error event and the
outcome ``timeout``; an SSE line over the cap (``LineTooLong``) ends it as a protocol
error. Either way the partial usage is accounted as for any other failed stream.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator, Callable

import httpx2

from tollgate_common import tracing
from tollgate_orchestrator import spans
from tollgate_orchestrator.accounting import Accounting, Call, Usage
from tollgate_orchestrator.dialects.base import StreamParser, Wire
from tollgate_orchestrator.retry import PROTOCOL, TIMEOUT
from tollgate_orchestrator.sse import LineTooLong, StreamStalled
from tollgate_orchestrator.types import Target, UpstreamStream

log = logging.getLogger(__name__)

OUTCOMES = {"completed": "success", "error": "partial", "timeout": "partial"}  # else cancelled
_STALLED = {
    "duration": "The stream ran past the gateway's limit on its duration; it is incomplete.",
    "idle": "The upstream sent nothing for too long; the answer is incomplete.",
}


class Relay:
    def __init__(
        self,
        *,
        call: Call,
        target: Target,
        upstream: UpstreamStream,
        wire: Wire,
        parser: StreamParser,
        accounting: Accounting,
        store: Callable[[Target, bytes, Usage], None] | None,
        attempt_started: float,
        opened: float,
    ) -> None:
        self.call = call
        self.target = target
        self.upstream = upstream
        self.wire = wire
        self.parser = parser
        self.accounting = accounting
        self._store = store
        self.attempt_started = attempt_started
        self.opened = opened
        self.outcome = "client_disconnect"
        # The last payloads, for the attempt span's finish reasons (a sampled stream only).
        span = call.span
        self.tail: deque[bytes] | None = (
            deque(maxlen=3) if span is not None and span.is_recording() else None
        )

    def _price(self, usage: Usage) -> float:
        cost = usage.cost(self.target)
        self.call.adm.cost = cost
        return cost

    async def events(self) -> AsyncIterator[bytes]:
        feed = self.parser.feed
        try:
            for payload in self.upstream.first:
                ev = feed(payload, self._price)
                if ev is not None:
                    yield ev
            end = None
            done_event = self.wire.done_event
            tail = self.tail
            async for payload in self.upstream:
                if tail is not None:
                    tail.append(payload)
                end = self.wire.end_of(payload)
                if end is not None and done_event:
                    break  # a marker (chat's [DONE]): the relay sends its own
                ev = feed(payload, self._price)
                if ev is not None:
                    yield ev
                if end is not None:
                    break  # a terminal event the client needs, forwarded above
            if end == "done":
                self.outcome = "completed"
                if done_event:
                    yield done_event
            elif end == "error" and not done_event:
                self.outcome = "error"  # the upstream's own error event went through
                self._failed(PROTOCOL)
                self._price(self._usage())
            else:
                self.outcome = "error"
                yield self._error()
        except StreamStalled as exc:
            self.outcome = "timeout"
            yield self._error(_STALLED.get(exc.reason, _STALLED["idle"]), "upstream_timeout")
        except (httpx2.HTTPError, OSError, TimeoutError, LineTooLong):
            self.outcome = "error"
            yield self._error()

    def _error(
        self,
        message: str = "The upstream stream failed after it started; the answer is incomplete.",
        code: str = "upstream_stream_error",
    ) -> bytes:
        self._failed(TIMEOUT if code == "upstream_timeout" else PROTOCOL)
        return self.parser.error(message, code, self._price(self._usage()))

    def _failed(self, error_class: str) -> None:
        m, t = self.accounting.metrics, self.target
        m.upstream_error(t.provider, t.name, error_class)

    def _usage(self) -> Usage:
        """The stream's usage, or an estimate when it ended without one."""
        p = self.parser
        if p.usage is None:
            p.usage = Usage(prompt=self.call.req.est_prompt_tokens, completion=p.chunks)
        return p.usage

    async def finish(self) -> None:
        call, target = self.call, self.target
        m, clock = self.accounting.metrics, self.accounting.clock
        try:
            await self.upstream.aclose()
        except Exception:  # closing a broken connection may raise; it is closed either way
            log.debug("upstream close failed", exc_info=True)
        elapsed = clock() - self.opened
        call.upstream_seconds += elapsed
        span = call.span
        m.upstream_duration(m.provider(target.provider), m.model(target.name)).observe(
            self.opened - self.attempt_started + elapsed, tracing.exemplar(span)
        )
        usage = self._usage()
        m.streams(self.outcome).inc()
        outcome = OUTCOMES.get(self.outcome, "cancelled")
        cost = self.accounting.answered(call, target, usage, outcome)
        if span is not None:
            call.span = None
            spans.attempt_answered(span, target, usage, cost, outcome, tail=self.tail or ())
        if self.outcome == "completed" and self._store is not None:
            body = self.parser.assembled()
            if body is not None:
                self._store(target, body, usage)
