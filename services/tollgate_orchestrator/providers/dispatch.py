"""Native or translated, per attempt: the one place that decides how a request reaches a model.

A provider speaks the APIs its policy entry lists (``apis``). A request in one of them
goes as it is; otherwise a registered ``Translation`` to an API the provider speaks
carries it there and brings the answer back in the request's own wire format, so the
pipeline, the relay, the cache and accounting never see the difference. Decided per
attempt because a chain may fall back across providers that speak different APIs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from tollgate_orchestrator.accounting import Usage
from tollgate_orchestrator.dialects import TRANSLATIONS, WIRES, StreamTranslator, Translation
from tollgate_orchestrator.errors import ApiError
from tollgate_orchestrator.providers.openai import Upstreams
from tollgate_orchestrator.retry import CLIENT, PROTOCOL, AttemptFailed, Failure
from tollgate_orchestrator.translate import messages_chat, responses_chat
from tollgate_orchestrator.types import API_LABELS, CHAT_API, LlmRequest, Target, UpstreamStream

TRANSLATION_MODULES = (messages_chat, responses_chat)  # imported for their registrations


class TranslatedStream:
    """An upstream stream in the target API, read as payloads of the request's API."""

    def __init__(self, inner: UpstreamStream, translator: StreamTranslator) -> None:
        self._inner = inner
        self._translator = translator
        self.first = [out for p in inner.first for out in translator.feed(p)]

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._payloads()

    async def _payloads(self) -> AsyncIterator[bytes]:
        feed = self._translator.feed
        async for payload in self._inner:
            for out in feed(payload):
                yield out

    async def aclose(self) -> None:
        await self._inner.aclose()


def _refusal(err: ApiError) -> AttemptFailed:
    """What the target API cannot carry is the request's fault: it goes back as a 400."""
    body = {"message": err.message, "type": err.type, "param": err.param, "code": err.code}
    return AttemptFailed(Failure(CLIENT, err.status, body=body))


class Dispatch:
    def __init__(self, upstreams: Upstreams) -> None:
        self.upstreams = upstreams

    def translation(self, target: Target, req: LlmRequest) -> Translation | None:
        """None when the provider speaks ``req.api``; raises ``AttemptFailed`` (400) when
        no translation reaches an API it speaks."""
        apis = self.upstreams.apis(target.provider)
        if req.api in apis:
            return None
        # Chat first: every translation here goes through it, and every server speaks it.
        for api in sorted(apis, key=lambda a: a != CHAT_API):
            t = TRANSLATIONS.get((req.api, api))
            if t is not None:
                return t
        label = API_LABELS.get(req.api, req.api)
        msg = f"The provider of model `{target.name}` cannot serve the {label} API."
        raise AttemptFailed(Failure(CLIENT, 400, body={"message": msg, "param": "model"}))

    def _translated(self, t: Translation, req: LlmRequest) -> LlmRequest:
        try:
            return t.request(req)
        except ApiError as err:
            raise _refusal(err) from None

    async def complete(self, target: Target, req: LlmRequest, budget: float) -> tuple[bytes, Usage]:
        t = self.translation(target, req)
        if t is None:
            return await self.upstreams.complete(target, req, budget)
        raw, usage = await self.upstreams.complete(target, self._translated(t, req), budget)
        out = t.answer(raw, req)
        if out is None:
            raise AttemptFailed(Failure(PROTOCOL))
        # The usage the client sees in its own format is the usage accounted.
        return out, WIRES[req.api].answer(out) or usage

    async def stream(self, target: Target, req: LlmRequest, budget: float) -> UpstreamStream:
        t = self.translation(target, req)
        if t is None:
            return await self.upstreams.stream(target, req, budget)
        inner = await self.upstreams.stream(target, self._translated(t, req), budget)
        return TranslatedStream(inner, t.stream(req))
