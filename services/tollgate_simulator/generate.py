"""Deterministic generation: one answer and its usage, whatever API asked for it.

Every API module (``chat``, ``responses``, ``messages``) parses its body into a
``Prompt``: the conversation as chat-shaped messages (for the seed and the "asks for
a tool" test), its token counts, the callable function tools, the output cap and the
output format. ``generate`` turns a prompt into an ``Answer``, which each module only
renders in its own wire format. So the same conversation gets the same text and tool
calls through every API, and the same usage where the prompt counts the same (tool
declarations are counted as each API spells them); a translating gateway can thus be
checked against a native upstream.

Everything here is a pure function of the prompt. The text is drawn from a fixed
vocabulary by a hash of the conversation (its roles, texts and tool calls, not its
wire spelling). One generated word is one completion token and one streamed chunk;
prompt tokens follow the usual ~4 characters per token plus OpenAI's per-message
overhead, so cost figures computed from this usage look like real ones.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from tollgate_simulator.config import is_reasoning_model

_WORDS = (
    "the of and to in is that for it as with was on be by this are from at or an have "
    "not they which one you had but all were when we there can been has more if will "
    "would so what about out up into than them only other its time new some could these "
    "two may first then do any like my now over such our man me even most made after also "
    "did many before must through back years where much your way well down should because "
    "each just those people how too little state good very make world still own see men "
    "work long get here between both life being under never day same another know while "
    "last might us great old year off come since against go came right used take three "
    "model token cache route cost budget answer request stream latency upstream gateway "
    "metric policy tenant prompt response service cluster signal plan value simple clear"
)
_VOCAB = tuple(_WORDS.split())
_CAPITALS = tuple(w.capitalize() for w in _VOCAB)
_SPACED = tuple(" " + w for w in _VOCAB)
_CITIES = ("Paris", "Berlin", "Tokyo", "Lima", "Oslo", "Cairo", "Austin", "Seoul")
_SENTENCE = 12  # words per sentence
EFFORTS = {"none": 0, "minimal": 0, "low": 1, "medium": 2, "high": 4, "xhigh": 6, "max": 8}
_ASKS_FOR_TOOL = re.compile(r"\b(call|calls|tool|tools|function|invoke|use)\b", re.IGNORECASE)
_CACHE_MIN, _CACHE_STEP = 1024, 128  # OpenAI prompt caching: >= 1024 tokens, 128-token steps


class RequestError(Exception):
    """A client error; each API renders it in its own error shape."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        type_: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type_


def missing(name: str) -> RequestError:
    return RequestError(
        400, f"Missing required parameter: '{name}'.", name, "missing_required_parameter"
    )


def invalid(name: str, expected: str) -> RequestError:
    return RequestError(400, f"Invalid '{name}': expected {expected}.", name, "invalid_type")


def load_object(body: bytes) -> dict[str, Any]:
    """The JSON object of a request body, or the 400 OpenAI gives for anything else."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise RequestError(
            400,
            "We could not parse the JSON body of your request. The body must be valid JSON.",
        ) from None
    if not isinstance(data, dict):
        raise RequestError(400, "The request body must be a JSON object.")
    return data


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --- token estimates -------------------------------------------------------------------


def text_tokens(text: str) -> int:
    return (len(text) + 3) // 4


def content_tokens(content: Any) -> int:
    if content is None:
        return 0
    if isinstance(content, str):
        return text_tokens(content)
    if isinstance(content, list):
        n = 0
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                n += text_tokens(part["text"])
            else:
                n += 85  # an image or audio part: OpenAI's low-detail image cost
        return n
    return text_tokens(orjson.dumps(content).decode())


def _message_tokens(msg: dict[str, Any]) -> int:
    n = 3 + content_tokens(msg.get("content"))
    if msg.get("name"):
        n += 1
    if msg.get("tool_calls"):
        n += text_tokens(orjson.dumps(msg["tool_calls"]).decode())
    return n


def prompt_usage(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
) -> tuple[int, int]:
    """(prompt_tokens, cached_tokens) of chat-shaped messages and tools.

    Cached tokens model OpenAI's prompt caching as if the static prefix (tools plus
    the leading system/developer messages) had been seen before: counted when it
    reaches 1024 tokens, in 128-token steps. Stateless, so usage stays a pure
    function of the request.
    """
    tool_tokens = text_tokens(orjson.dumps(tools).decode()) if tools else 0
    total = 3 + tool_tokens
    prefix = tool_tokens
    in_prefix = True
    for msg in messages:
        n = _message_tokens(msg)
        total += n
        if in_prefix and msg.get("role") in ("system", "developer"):
            prefix += n
        else:
            in_prefix = False
    cached = 0
    if prefix >= _CACHE_MIN:
        cached = min(_CACHE_MIN + (prefix - _CACHE_MIN) // _CACHE_STEP * _CACHE_STEP, total)
    return total, cached


# --- the prompt -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Function:
    """A function tool the model may call, whatever API declared it."""

    name: str
    parameters: Any  # JSON schema of the arguments


JsonFormat = Literal["json_object", "json_schema"]


# Per-request objects are slotted but not frozen: a frozen dataclass sets every field
# through object.__setattr__, microseconds per request on the benchmarks' baseline.
@dataclass(slots=True)
class Prompt:
    model: str
    # The conversation, chat-shaped (role, content, tool_calls): the seed and the
    # "asks for a tool" test read it; "tool" role = a tool result.
    messages: list[dict[str, Any]]
    prompt_tokens: int
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    functions: tuple[Function, ...] = ()
    tool_choice: Literal["auto", "none", "required"] = "auto"
    forced: str | None = None  # the one function tool_choice names
    parallel_tool_calls: bool = True
    max_tokens: int | None = None  # the output cap, reasoning included
    json_format: JsonFormat | None = None
    json_schema: Any = None
    reasoning_effort: str | None = None  # None: medium
    reasons: bool = True  # False: no reasoning tokens whatever the model


# --- the answer ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str  # "call_<seed><i>"; other APIs derive their ids from it
    name: str
    arguments: str  # JSON text


FinishReason = Literal["stop", "length", "tool_calls"]


@dataclass(slots=True)
class Answer:
    seed: int
    pieces: list[str]  # content, one token per piece (empty for tool calls)
    tool_calls: list[ToolCall]
    finish_reason: FinishReason
    prompt_tokens: int  # includes cached and cache-write tokens, as OpenAI counts them
    cached_tokens: int
    completion_tokens: int  # includes reasoning tokens, as OpenAI counts them
    reasoning_tokens: int
    cache_write_tokens: int = 0

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def content(self) -> str | None:
        return None if self.tool_calls else self.text


_ROLE_CLASS: dict[str | None, str] = {"developer": "system", "function": "tool"}


def _text_of(content: Any) -> str:
    if isinstance(content, list):
        return "".join(
            p["text"] if isinstance(p, dict) and isinstance(p.get("text"), str) else "\x00"
            for p in content
        )
    return "" if content is None else orjson.dumps(content).decode()


def seed_of(messages: list[dict[str, Any]]) -> int:
    """A hash of what was said: roles, texts and tool calls, not how an API spells them."""
    canon: list[Any] = []
    for msg in messages:
        role = msg.get("role")
        content = msg.get("content")
        calls = msg.get("tool_calls")
        named = []
        if calls and isinstance(calls, list):
            for c in calls:
                fn = c.get("function") if isinstance(c, dict) else None
                if isinstance(fn, dict):
                    named.append((fn.get("name"), fn.get("arguments")))
        text = content if content.__class__ is str else _text_of(content)
        canon.append((_ROLE_CLASS.get(role, role), text, named))
    digest = hashlib.blake2b(orjson.dumps(canon), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def natural_length(seed: int) -> int:
    """How many tokens the model 'wants' to say: 16..128, fixed per prompt."""
    return 16 + seed % 113


def reasoning_budget(model: str, seed: int, effort: str | None) -> int:
    if not is_reasoning_model(model):
        return 0
    return 32 * (1 + (seed >> 16) % 4) * EFFORTS[effort or "medium"]


def prose(seed: int, n: int, finished: bool) -> list[str]:
    """``n`` words as pieces (" word"), in sentences; a final period only if finished.

    Word choices come straight from a SHAKE-256 stream of the seed: one byte per word,
    several times cheaper than seeding a ``random.Random`` on the hot path.
    """
    if n <= 0:
        return []
    idx = hashlib.shake_256(seed.to_bytes(8, "big")).digest(n)
    size = len(_VOCAB)
    pieces = [_SPACED[k % size] for k in idx]
    for i in range(0, n, _SENTENCE):
        pieces[i] = (" " if i else "") + _CAPITALS[idx[i] % size]
    for i in range(_SENTENCE - 1, n, _SENTENCE):
        pieces[i] += "."
    if finished and not pieces[-1].endswith("."):
        pieces[-1] += "."
    return pieces


def last_user_text(messages: list[dict[str, Any]]) -> str:
    for msg in reversed(messages):
        if msg.get("role") == "user":
            c = msg.get("content")
            if isinstance(c, str):
                return c
            if isinstance(c, list):
                return " ".join(
                    p["text"] for p in c if isinstance(p, dict) and isinstance(p.get("text"), str)
                )
            return ""
    return ""


def choose_tools(prompt: Prompt) -> list[Function]:
    """The function tools to call, or [] for a text answer.

    Called when tools are given and either tool_choice demands one or the last user
    message asks for it (names a tool, or says call/use/tool/function). A reply to a
    tool result is text, so agent loops end.
    """
    fns = prompt.functions
    if not fns or prompt.tool_choice == "none" or not prompt.messages:
        return []
    if prompt.messages[-1].get("role") in ("tool", "function"):
        return []
    if prompt.forced is not None:
        return [f for f in fns if f.name == prompt.forced][:1] or [fns[0]]
    text = last_user_text(prompt.messages)
    lowered = text.lower()
    named = [f for f in fns if f.name.lower() in lowered]
    if named:
        return named if prompt.parallel_tool_calls else named[:1]
    if prompt.tool_choice == "required" or _ASKS_FOR_TOOL.search(text):
        return [fns[0]]
    return []


def sample_value(schema: Any, name: str, rng: random.Random, depth: int = 0) -> Any:
    """A deterministic value that fits a (simple) JSON schema."""
    if not isinstance(schema, dict):
        return rng.choice(_VOCAB)
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[rng.randrange(len(enum))]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    if kind == "integer":
        return rng.randrange(1, 100)
    if kind == "number":
        return round(rng.uniform(0, 100), 2)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "array":
        return [] if depth > 3 else [sample_value(schema.get("items"), name, rng, depth + 1)]
    if kind == "object":
        props = schema.get("properties")
        if depth > 3 or not isinstance(props, dict):
            return {}
        required = schema.get("required")
        keys = [k for k in props if k in required] if isinstance(required, list) else list(props)
        return {k: sample_value(props[k], k, rng, depth + 1) for k in keys}
    lname = name.lower()
    if any(w in lname for w in ("city", "location", "place", "town")):
        return rng.choice(_CITIES)
    return rng.choice(_VOCAB)


def _json_content(prompt: Prompt, seed: int) -> str | None:
    if prompt.json_format == "json_object":
        return orjson.dumps({"answer": "".join(prose(seed, 12, True))}).decode()
    if prompt.json_format == "json_schema":
        schema = prompt.json_schema if isinstance(prompt.json_schema, dict) else None
        rng = random.Random(seed)
        return orjson.dumps(sample_value(schema or {"type": "object"}, "", rng)).decode()
    return None


def split(text: str, size: int = 4) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def generate(prompt: Prompt) -> Answer:
    seed = seed_of(prompt.messages)
    budget = prompt.max_tokens if prompt.max_tokens is not None else 1 << 30
    thought = reasoning_budget(prompt.model, seed, prompt.reasoning_effort) if prompt.reasons else 0
    reasoning = min(thought, budget)
    room = budget - reasoning
    tools = choose_tools(prompt)
    if tools:
        rng = random.Random(seed)
        calls = []
        for i, fn in enumerate(tools):
            args = sample_value(fn.parameters or {}, "", rng)
            calls.append(ToolCall(f"call_{seed:016x}{i:02d}", fn.name, orjson.dumps(args).decode()))
        used = sum(8 + text_tokens(c.name + c.arguments) for c in calls)
        return _answer(prompt, seed, [], calls, "tool_calls", used + reasoning, reasoning)
    json_text = _json_content(prompt, seed)
    if json_text is not None:
        pieces = split(json_text)
        finished = len(pieces) <= room
        pieces = pieces[:room]
    else:
        natural = natural_length(seed)
        finished = natural <= room
        pieces = prose(seed, min(natural, room), finished)
    finish: FinishReason = "stop" if finished else "length"
    return _answer(prompt, seed, pieces, [], finish, len(pieces) + reasoning, reasoning)


def _answer(
    prompt: Prompt,
    seed: int,
    pieces: list[str],
    calls: list[ToolCall],
    finish: FinishReason,
    completion: int,
    reasoning: int,
) -> Answer:
    return Answer(
        seed=seed,
        pieces=pieces,
        tool_calls=calls,
        finish_reason=finish,
        prompt_tokens=prompt.prompt_tokens,
        cached_tokens=prompt.cached_tokens,
        completion_tokens=completion,
        reasoning_tokens=reasoning,
        cache_write_tokens=prompt.cache_write_tokens,
    )
