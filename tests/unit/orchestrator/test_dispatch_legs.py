"""How a request reaches an API: native, one translation, two through chat, a vendor's fixup.

Fake translations tag what passes through them, so each test sees the order of the legs,
that each answer goes back through the leg with the request it was given, and that
streams are fed from the upstream's side outward.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
import pytest

from tollgate_common.policy import load_policy
from tollgate_orchestrator.accounting import Usage
from tollgate_orchestrator.dialects import TRANSLATIONS, StreamTranslator, Translation
from tollgate_orchestrator.providers.dispatch import Dispatch
from tollgate_orchestrator.retry import UNSUPPORTED, AttemptFailed
from tollgate_orchestrator.types import CHAT_API, RESPONSES_API, LlmRequest, Target

# The source is a real API (its wire reads usage); the fakes stand in for its translations.
SRC, DST = RESPONSES_API, "test.target"
POLICY = load_policy()
TARGET = Target("gpt-4o", "p", "gpt-4o", POLICY.models["gpt-4o"])


class Tag:
    """A translation that appends its name to the body's ``via`` and to every answer."""

    def __init__(self, source: str, target: str, name: str) -> None:
        self.source, self.target, self.name = source, target, name

    def request(self, req: LlmRequest) -> LlmRequest:
        via = [*req.body.get("via", []), self.name]
        return dataclasses.replace(req, body={**req.body, "via": via}, api=self.target)

    def answer(self, raw: bytes, req: LlmRequest) -> bytes | None:
        seen = orjson.loads(raw)
        # Each leg gets back the request it was given, not the upstream's.
        return orjson.dumps([*seen, f"{self.name}<{req.api}"])

    def stream(self, req: LlmRequest) -> StreamTranslator:
        name = self.name

        class Feed:
            def feed(self, payload: bytes) -> list[bytes]:
                return [payload + f"|{name}".encode()]

        return Feed()


class Stream:
    def __init__(self, first: list[bytes], rest: list[bytes]) -> None:
        self.first = first
        self._rest = rest

    def __aiter__(self) -> AsyncIterator[bytes]:
        async def gen() -> AsyncIterator[bytes]:
            for p in self._rest:
                yield p

        return gen()

    async def aclose(self) -> None:
        pass


class FakeUpstreams:
    def __init__(self, apis: set[str], fixup: Translation | None = None) -> None:
        self._apis = frozenset(apis)
        self._fixup = fixup
        self.sent: list[LlmRequest] = []

    def apis(self, provider: str) -> frozenset[str]:
        return self._apis

    def fixup(self, provider: str) -> Translation | None:
        return self._fixup

    async def complete(self, target: Target, req: LlmRequest, budget: float) -> tuple[bytes, Usage]:
        self.sent.append(req)
        return b"[]", Usage(prompt=1)

    async def stream(self, target: Target, req: LlmRequest, budget: float) -> Stream:
        self.sent.append(req)
        return Stream([b"a"], [b"b"])


def request(api: str) -> LlmRequest:
    return LlmRequest({}, "auto", False, False, None, 1, False, False, "", "", 1, 0, api=api)


@pytest.fixture
def translations() -> Iterator[None]:
    added = {
        (SRC, CHAT_API): Tag(SRC, CHAT_API, "to_chat"),
        (CHAT_API, DST): Tag(CHAT_API, DST, "from_chat"),
    }
    saved = {k: TRANSLATIONS[k] for k in added if k in TRANSLATIONS}
    TRANSLATIONS.update(added)
    yield
    for k in added:
        TRANSLATIONS.pop(k, None)
    TRANSLATIONS.update(saved)


def dispatch(apis: set[str], fixup: Translation | None = None) -> tuple[Dispatch, FakeUpstreams]:
    up = FakeUpstreams(apis, fixup)
    return Dispatch(up), up  # type: ignore[arg-type]


async def test_native_goes_as_it_is(translations: None) -> None:
    d, up = dispatch({SRC})
    raw, usage = await d.complete(TARGET, request(SRC), 1.0)
    assert raw == b"[]" and usage.prompt == 1
    assert up.sent[0].body == {}


async def test_two_legs_through_chat_and_back_in_reverse(translations: None) -> None:
    d, up = dispatch({DST})
    raw, _ = await d.complete(TARGET, request(SRC), 1.0)
    assert up.sent[0].api == DST
    assert up.sent[0].body["via"] == ["to_chat", "from_chat"]
    # from_chat answers first, for the chat request it was given; then to_chat, for ours.
    assert orjson.loads(raw) == [f"from_chat<{CHAT_API}", f"to_chat<{SRC}"]


async def test_a_vendor_fixup_is_the_leg_next_to_a_chat_upstream(translations: None) -> None:
    d, up = dispatch({CHAT_API}, fixup=Tag(CHAT_API, CHAT_API, "fixup"))
    await d.complete(TARGET, request(SRC), 1.0)
    assert up.sent[0].body["via"] == ["to_chat", "fixup"]
    stream = await d.stream(TARGET, request(SRC), 1.0)
    # The upstream's payloads go through the fixup first, then back to the source API.
    assert stream.first == [b"a|fixup|to_chat"]
    assert [p async for p in stream] == [b"b|fixup|to_chat"]


async def test_no_fixup_on_a_leg_that_is_not_chat(translations: None) -> None:
    d, up = dispatch({DST}, fixup=Tag(CHAT_API, CHAT_API, "fixup"))
    await d.complete(TARGET, request(SRC), 1.0)
    assert up.sent[0].body["via"] == ["to_chat", "from_chat"]


async def test_no_route_is_a_400_naming_the_model(translations: None) -> None:
    d, _ = dispatch({"test.elsewhere"})
    with pytest.raises(AttemptFailed) as info:
        await d.complete(TARGET, request(SRC), 1.0)
    f = info.value.failure
    assert f.error_class == UNSUPPORTED and f.status == 400
    body: Any = f.body
    assert body["param"] == "model" and "gpt-4o" in body["message"]
