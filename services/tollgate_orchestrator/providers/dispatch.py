"""Native or translated, per attempt: the one place that decides how a request reaches a model.

A provider speaks the APIs its policy entry lists (``apis``). A request in one of them
goes as it is; otherwise a registered ``Translation`` to an API the provider speaks
carries it there and brings the answer back in the request's own wire format, so the
pipeline, the relay, the cache and accounting never see the difference. Decided per
attempt because a chain may fall back across providers that speak different APIs.

A request reaches an API in at most two legs, through chat (Responses to Anthropic goes
Responses -> chat -> Messages), and a vendor's ``fixup`` (Gemini's chat quirks) is one
more chat -> chat leg next to the upstream. Answers and streams come back through the
legs in reverse, each with the request it was given.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from tollgate_orchestrator.accounting import Usage
from tollgate_orchestrator.dialects import TRANSLATIONS, WIRES, StreamTranslator, Translation
from tollgate_orchestrator.errors import ApiError
from tollgate_orchestrator.providers.openai import Upstreams
from tollgate_orchestrator.retry import PROTOCOL, UNSUPPORTED, AttemptFailed, Failure
from tollgate_orchestrator.translate import chat_messages, messages_chat, responses_chat
from tollgate_orchestrator.types import API_LABELS, CHAT_API, LlmRequest, Target, UpstreamStream

Legs = tuple[Translation, ...]

# imported for their registrations
TRANSLATION_MODULES = (chat_messages, messages_chat, responses_chat)


class TranslatedStream:
    """An upstream stream in the target API, read as payloads of the request's API."""

    def __init__(self, inner: UpstreamStream, translators: Sequence[StreamTranslator]) -> None:
        self._inner = inner
        self._translators = tuple(reversed(translators))  # the upstream's side first
        self.first = [out for p in inner.first for out in self._feed(p)]

    def _feed(self, payload: bytes) -> list[bytes]:
        out = [payload]
        for t in self._translators:
            out = [q for p in out for q in t.feed(p)]
        return out

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._payloads()

    async def _payloads(self) -> AsyncIterator[bytes]:
        feed = self._feed
        async for payload in self._inner:
            for out in feed(payload):
                yield out

    async def aclose(self) -> None:
        await self._inner.aclose()


def _refusal(err: ApiError) -> AttemptFailed:
    """What the target API cannot carry: another model may; else it goes back as a 400."""
    body = {"message": err.message, "type": err.type, "param": err.param, "code": err.code}
    return AttemptFailed(Failure(UNSUPPORTED, err.status, body=body))


def _route(source: str, apis: frozenset[str]) -> Legs | None:
    """The translations from ``source`` to an API in ``apis``: none, one, or two via chat."""
    if source in apis:
        return ()
    # Chat first: every translation here goes through it, and every server speaks it.
    order = sorted(apis, key=lambda a: a != CHAT_API)
    for api in order:
        t = TRANSLATIONS.get((source, api))
        if t is not None:
            return (t,)
    to_chat = TRANSLATIONS.get((source, CHAT_API))
    if to_chat is not None:
        for api in order:
            t = TRANSLATIONS.get((CHAT_API, api))
            if t is not None:
                return (to_chat, t)
    return None


class Dispatch:
    def __init__(self, upstreams: Upstreams) -> None:
        self.upstreams = upstreams

    def legs(self, target: Target, req: LlmRequest) -> Legs:
        """The translations for one attempt (empty: native). Raises ``AttemptFailed``
        (400) when none reaches an API the provider speaks."""
        legs = _route(req.api, self.upstreams.apis(target.provider))
        if legs is None:
            label = API_LABELS.get(req.api, req.api)
            msg = f"The provider of model `{target.name}` cannot serve the {label} API."
            raise AttemptFailed(Failure(UNSUPPORTED, 400, body={"message": msg, "param": "model"}))
        fixup = self.upstreams.fixup(target.provider)
        if fixup is not None and (legs[-1].target if legs else req.api) == CHAT_API:
            legs = (*legs, fixup)
        return legs

    def _requests(self, legs: Legs, req: LlmRequest) -> list[LlmRequest]:
        """The request as each leg is given it, then as the upstream is sent it."""
        reqs = [req]
        try:
            for t in legs:
                reqs.append(t.request(reqs[-1]))
        except ApiError as err:
            raise _refusal(err) from None
        return reqs

    async def complete(self, target: Target, req: LlmRequest, budget: float) -> tuple[bytes, Usage]:
        legs = self.legs(target, req)
        if not legs:
            return await self.upstreams.complete(target, req, budget)
        reqs = self._requests(legs, req)
        raw, usage = await self.upstreams.complete(target, reqs[-1], budget)
        out = raw
        for t, r in zip(reversed(legs), reversed(reqs[:-1]), strict=True):
            back = t.answer(out, r)
            if back is None:
                raise AttemptFailed(Failure(PROTOCOL))
            out = back
        # The usage the client sees in its own format is the usage accounted.
        return out, WIRES[req.api].answer(out) or usage

    async def stream(self, target: Target, req: LlmRequest, budget: float) -> UpstreamStream:
        legs = self.legs(target, req)
        if not legs:
            return await self.upstreams.stream(target, req, budget)
        reqs = self._requests(legs, req)
        inner = await self.upstreams.stream(target, reqs[-1], budget)
        return TranslatedStream(inner, [t.stream(r) for t, r in zip(legs, reqs, strict=False)])
