"""Google Gemini through its OpenAI-compatible endpoint, with its quirks repaired. Pure.

Why the compatible endpoint (``https://generativelanguage.googleapis.com/v1beta/openai/``)
and not ``generateContent``: it speaks chat and embeddings, so the whole pipeline (usage,
cache, replay, translations from Responses and Messages) works unchanged; what it gets
wrong is small and local, and repaired here as a chat -> chat ``fixup`` leg next to the
upstream (``providers/dispatch``). Auth is the key as a bearer, as Google documents.

The request: fields that only mean something at OpenAI (``store``, ``metadata``, ...)
are dropped, because Gemini refuses every unknown field with a 400 ("Unknown name
\\"store\\": Cannot find field", liliMozi/openhanako#394, ed-donner/agents#45,
leookun/cursor-byok#112) and none of them changes the answer. ``extra_content`` on
assistant tool calls (Gemini 3's thought signatures) goes back as the client sent it.

The answer (api-surface §2.2):

- ``finish_reason: "stop"`` alongside tool calls -> ``tool_calls`` (FootprintAI/
  Containarium#819); in a stream the call and the STOP come in separate chunks
  (envoyproxy/ai-gateway#2399), and STOP may be stamped on several chunks
  (songquanpeng/one-api#1408): so a stream's finish reasons are held back and sent once
  per choice, as the last chunk before the usage, with ``tool_calls`` when the choice
  made a call;
- a streamed tool call without ``index`` gets one (a call with an id or a name is a new
  call, a bare argument fragment continues the last one), and a call without an id gets
  ``call_`` + a hash of (completion id, choice, call index): the same id in a stream and
  in the whole answer, so a cached replay and a retry agree;
- usage on content chunks (Gemini puts it on the last one, not in a ``choices: []``
  chunk) is taken off them and sent as OpenAI's own usage chunk at the end, so the
  relay prices it and shows it only to a client that asked for it;
- ``extra_content`` and every other field Gemini adds stay as they are.

Errors: Gemini wraps its error object in a one-element list
(``[{"error": {"code": 400, "message": ..., "status": "INVALID_ARGUMENT"}}]``); that is
the transport's to read (see the diff in the issue #15 report for ``providers/openai``).
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import orjson

from tollgate_common.policy import Provider as ProviderEntry
from tollgate_orchestrator.dialects import Translation, Wire
from tollgate_orchestrator.providers.vendors import auth_header, register_vendor, sdk_headers
from tollgate_orchestrator.sse import DONE
from tollgate_orchestrator.types import CHAT_API, LlmRequest

# OpenAI-account features Gemini refuses as unknown fields; none changes the answer.
DROPPED_FIELDS = (
    "store",
    "metadata",
    "prompt_cache_key",
    "safety_identifier",
    "user",
    "service_tier",
)
_CHUNK_HEAD = ("id", "object", "created", "model", "system_fingerprint")


def tool_call_id(completion_id: object, choice: int, call: int) -> str:
    """A stable id for a call the upstream sent without one."""
    seed = f"{completion_id}\0{choice}\0{call}".encode()
    return "call_" + hashlib.sha256(seed).hexdigest()[:24]


def _index(value: object, default: int) -> int:
    return (
        value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default
    )


def _empty(choice: object) -> bool:
    return isinstance(choice, dict) and not choice.get("delta") and not choice.get("logprobs")


def fix_completion(completion: dict[str, Any]) -> bool:
    """Repair a whole chat completion in place; whether anything changed."""
    changed = False
    choices = completion.get("choices")
    for pos, choice in enumerate(choices if isinstance(choices, list) else ()):
        if not isinstance(choice, dict):
            continue
        message = choice.get("message")
        calls = message.get("tool_calls") if isinstance(message, dict) else None
        if not isinstance(calls, list) or not calls:
            continue
        i = _index(choice.get("index"), pos)
        for j, call in enumerate(calls):
            if not isinstance(call, dict):
                continue
            if not call.get("id"):
                call["id"] = tool_call_id(completion.get("id"), i, j)
                changed = True
            if "type" not in call:
                call["type"] = "function"
                changed = True
        if choice.get("finish_reason") == "stop":
            choice["finish_reason"] = "tool_calls"
            changed = True
    return changed


@dataclasses.dataclass(slots=True)
class _Choice:
    """What a stream has said so far about one choice."""

    finish: str | None = None
    made_call: bool = False
    next_call: int = 0  # the index the next new call gets
    last_call: int = -1
    ids: dict[str, int] = dataclasses.field(default_factory=dict)
    started: set[int] = dataclasses.field(default_factory=set)  # call indexes seen


class GeminiStream:
    """One stream's repair: chat chunks in, chat chunks out (``[DONE]`` last)."""

    def __init__(self) -> None:
        self._choices: dict[int, _Choice] = {}
        self._head: dict[str, Any] = {"object": "chat.completion.chunk"}
        self._usage: dict[str, Any] | None = None

    def feed(self, payload: bytes) -> list[bytes]:
        if payload == DONE:
            return [*self._closing(), DONE]
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return [payload]  # not ours to judge
        if not isinstance(chunk, dict) or "error" in chunk:
            return [payload]  # an error event ends the stream as it is
        self._head.update({k: chunk[k] for k in _CHUNK_HEAD if k in chunk})
        changed = False
        if "usage" in chunk:
            usage = chunk.pop("usage")
            changed = True
            if isinstance(usage, dict):
                self._usage = usage  # cumulative where repeated: the last one counts
        choices = chunk.get("choices")
        if not choices:
            # A ``choices: []`` usage chunk is sent again at the end; anything else passes.
            return [] if changed else [payload]
        if isinstance(choices, list):
            for pos, choice in enumerate(choices):
                if isinstance(choice, dict) and self._fix_choice(chunk, pos, choice):
                    changed = True
            if changed and all(_empty(c) for c in choices):
                return []  # it carried only a finish or usage, both sent at the end
        return [orjson.dumps(chunk)] if changed else [payload]

    def _fix_choice(self, chunk: dict[str, Any], pos: int, choice: dict[str, Any]) -> bool:
        changed = False
        if not isinstance(choice.get("index"), int):
            choice["index"] = pos
            changed = True
        i = _index(choice["index"], pos)
        state = self._choices.setdefault(i, _Choice())
        delta = choice.get("delta")
        calls = delta.get("tool_calls") if isinstance(delta, dict) else None
        if isinstance(calls, list):
            for call in calls:
                if isinstance(call, dict) and self._fix_call(chunk, i, state, call):
                    changed = True
        if choice.get("finish_reason") is not None:
            state.finish = str(choice["finish_reason"])
            choice["finish_reason"] = None
            changed = True
        return changed

    def _fix_call(
        self, chunk: dict[str, Any], i: int, state: _Choice, call: dict[str, Any]
    ) -> bool:
        state.made_call = True
        changed = False
        call_id = call.get("id")
        fn = call.get("function")
        named = isinstance(fn, dict) and bool(fn.get("name"))
        idx = call.get("index")
        if not isinstance(idx, int) or isinstance(idx, bool):
            if isinstance(call_id, str) and call_id in state.ids:
                idx = state.ids[call_id]
            elif call_id or named or state.last_call < 0:
                idx = state.next_call  # a new call
            else:
                idx = state.last_call  # an argument fragment of the last call
            call["index"] = idx
            changed = True
        state.next_call = max(state.next_call, idx + 1)
        state.last_call = idx
        if idx not in state.started:  # the call's first delta carries its id and type
            state.started.add(idx)
            if not call_id:
                call["id"] = call_id = tool_call_id(chunk.get("id"), i, idx)
                changed = True
            if "type" not in call:
                call["type"] = "function"
                changed = True
        if isinstance(call_id, str):
            state.ids[call_id] = idx
        return changed

    def _closing(self) -> list[bytes]:
        """The held finish reasons, one chunk per choice, then the usage chunk."""
        out = []
        for i in sorted(self._choices):
            state = self._choices[i]
            if state.finish is None:
                continue  # never make up an end the upstream did not send
            finish = "tool_calls" if state.finish == "stop" and state.made_call else state.finish
            choice = {"index": i, "delta": {}, "logprobs": None, "finish_reason": finish}
            out.append(orjson.dumps({**self._head, "choices": [choice]}))
        if self._usage is not None:
            out.append(orjson.dumps({**self._head, "choices": [], "usage": self._usage}))
        return out


class GeminiFixup:
    """The chat -> chat leg next to a Gemini upstream."""

    source = CHAT_API
    target = CHAT_API

    def request(self, req: LlmRequest) -> LlmRequest:
        if not any(f in req.body for f in DROPPED_FIELDS):
            return req
        body = {k: v for k, v in req.body.items() if k not in DROPPED_FIELDS}
        return dataclasses.replace(req, body=body)

    def answer(self, raw: bytes, req: LlmRequest) -> bytes | None:
        try:
            completion = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(completion, dict) or not isinstance(completion.get("choices"), list):
            return None
        return orjson.dumps(completion) if fix_completion(completion) else raw

    def stream(self, req: LlmRequest) -> GeminiStream:
        return GeminiStream()


class GeminiVendor:
    type = "gemini"

    def __init__(self) -> None:
        self._headers = sdk_headers()
        self._fixup = GeminiFixup()

    def headers(self, entry: ProviderEntry, key: str) -> dict[str, str]:
        return {**self._headers, **auth_header(entry.auth or "bearer", key)}

    def path(self, entry: ProviderEntry, wire: Wire, upstream_model: str) -> str:
        return wire.path  # base_url is the compatible endpoint's root

    def fixup(self) -> Translation | None:
        return self._fixup


GEMINI = register_vendor(GeminiVendor())
