"""Deterministic chat completions: the answer, its usage and its wire shapes.

Everything here is a pure function of the request body. The text is drawn from a
fixed vocabulary by a PRNG seeded with a hash of the messages, so the same prompt
always gets the same answer and the same usage. One generated word is one
completion token and one streamed chunk; prompt tokens follow the usual
~4 characters per token plus OpenAI's per-message overhead, so cost figures computed
from this usage look like real ones.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass
from typing import Any

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
_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_EFFORT = {"none": 0, "minimal": 0, "low": 1, "medium": 2, "high": 4, "xhigh": 6}
_ASKS_FOR_TOOL = re.compile(r"\b(call|calls|tool|tools|function|invoke|use)\b", re.IGNORECASE)
_CACHE_MIN, _CACHE_STEP = 1024, 128  # OpenAI prompt caching: >= 1024 tokens, 128-token steps
FINGERPRINT = "fp_tollgate_sim"


class RequestError(Exception):
    """A client error, answered with an OpenAI error body."""

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


@dataclass(frozen=True, slots=True)
class ChatRequest:
    model: str
    messages: list[dict[str, Any]]
    stream: bool = False
    include_usage: bool = False
    max_tokens: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool = True
    response_format: dict[str, Any] | None = None
    reasoning_effort: str | None = None


def _missing(name: str) -> RequestError:
    return RequestError(
        400, f"Missing required parameter: '{name}'.", name, "missing_required_parameter"
    )


def _invalid(name: str, expected: str) -> RequestError:
    return RequestError(400, f"Invalid '{name}': expected {expected}.", name, "invalid_type")


def parse_request(body: bytes) -> ChatRequest:
    """Validate the fields the simulator uses; the rest of the OpenAI schema is ignored."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise RequestError(
            400,
            "We could not parse the JSON body of your request. The body must be valid JSON.",
        ) from None
    if not isinstance(data, dict):
        raise RequestError(400, "The request body must be a JSON object.")
    model = data.get("model")
    if model is None:
        raise _missing("model")
    if not isinstance(model, str) or not model:
        raise _invalid("model", "a non-empty string")
    messages = data.get("messages")
    if messages is None:
        raise _missing("messages")
    if not isinstance(messages, list):
        raise _invalid("messages", "an array")
    if not messages:
        raise RequestError(
            400,
            "Invalid 'messages': empty array. Expected at least one.",
            "messages",
            "empty_array",
        )
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise _invalid(f"messages[{i}]", "an object")
        if msg.get("role") not in _ROLES:
            raise RequestError(
                400,
                f"Invalid 'messages[{i}].role': expected one of {', '.join(sorted(_ROLES))}.",
                f"messages[{i}].role",
                "invalid_value",
            )
    stream = data.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _invalid("stream", "a boolean")
    options = data.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise _invalid("stream_options", "an object")
    include_usage = bool(options and options.get("include_usage"))
    max_tokens = None
    for name in ("max_completion_tokens", "max_tokens"):  # the newer name wins
        value = data.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RequestError(
                400, f"Invalid '{name}': expected an integer >= 1.", name, "invalid_value"
            )
        max_tokens = value
        break
    tools = data.get("tools")
    if tools is not None and (
        not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools)
    ):
        raise _invalid("tools", "an array of objects")
    response_format = data.get("response_format")
    if response_format is not None and not isinstance(response_format, dict):
        raise _invalid("response_format", "an object")
    effort = data.get("reasoning_effort")
    if effort is not None and effort not in _EFFORT:
        raise RequestError(
            400,
            f"Invalid 'reasoning_effort': expected one of {', '.join(_EFFORT)}.",
            "reasoning_effort",
            "invalid_value",
        )
    return ChatRequest(
        model=model,
        messages=messages,
        stream=bool(stream),
        include_usage=include_usage,
        max_tokens=max_tokens,
        tools=tools or None,
        tool_choice=data.get("tool_choice"),
        parallel_tool_calls=data.get("parallel_tool_calls") is not False,
        response_format=response_format,
        reasoning_effort=effort,
    )


# --- token estimates -------------------------------------------------------------------


def text_tokens(text: str) -> int:
    return (len(text) + 3) // 4


def _content_tokens(content: Any) -> int:
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
    n = 3 + _content_tokens(msg.get("content"))
    if msg.get("name"):
        n += 1
    if msg.get("tool_calls"):
        n += text_tokens(orjson.dumps(msg["tool_calls"]).decode())
    return n


def prompt_usage(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
) -> tuple[int, int]:
    """(prompt_tokens, cached_tokens).

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


# --- the answer ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Answer:
    pieces: list[str]  # content, one token per piece (empty for tool calls)
    tool_calls: list[ToolCall]
    finish_reason: str
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int  # includes reasoning tokens, as OpenAI counts them
    reasoning_tokens: int

    @property
    def content(self) -> str | None:
        return None if self.tool_calls else "".join(self.pieces)

    def usage(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": self.reasoning_tokens,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }


def seed_of(messages: list[dict[str, Any]]) -> int:
    canon = orjson.dumps(messages, option=orjson.OPT_SORT_KEYS)
    return int.from_bytes(hashlib.blake2b(canon, digest_size=8).digest(), "big")


def natural_length(seed: int) -> int:
    """How many tokens the model 'wants' to say: 16..128, fixed per prompt."""
    return 16 + seed % 113


def reasoning_budget(model: str, seed: int, effort: str | None) -> int:
    if not is_reasoning_model(model):
        return 0
    return 32 * (1 + (seed >> 16) % 4) * _EFFORT[effort or "medium"]


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


def _last_user_text(messages: list[dict[str, Any]]) -> str:
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


def _function_name(tool: dict[str, Any]) -> str | None:
    fn = tool.get("function")
    if tool.get("type", "function") == "function" and isinstance(fn, dict):
        name = fn.get("name")
        return name if isinstance(name, str) and name else None
    return None


def choose_tools(req: ChatRequest) -> list[dict[str, Any]]:
    """The function tools to call, or [] for a text answer.

    Called when tools are given and either tool_choice demands one or the last user
    message asks for it (names a tool, or says call/use/tool/function). A reply to a
    tool result is text, so agent loops end.
    """
    if not req.tools or req.tool_choice == "none" or req.messages[-1].get("role") == "tool":
        return []
    fns = [t for t in req.tools if _function_name(t)]
    if not fns:
        return []
    choice = req.tool_choice
    if isinstance(choice, dict):
        wanted = (
            choice.get("function", {}).get("name")
            if isinstance(choice.get("function"), dict)
            else None
        )
        return [t for t in fns if _function_name(t) == wanted][:1] or fns[:1]
    text = _last_user_text(req.messages)
    lowered = text.lower()
    named = [t for t in fns if str(_function_name(t)).lower() in lowered]
    if named:
        return named if req.parallel_tool_calls else named[:1]
    if choice == "required" or _ASKS_FOR_TOOL.search(text):
        return fns[:1]
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


def _json_content(req: ChatRequest, seed: int) -> str | None:
    fmt = req.response_format
    if not fmt:
        return None
    rng = random.Random(seed)
    if fmt.get("type") == "json_object":
        return orjson.dumps({"answer": "".join(prose(seed, 12, True))}).decode()
    if fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        return orjson.dumps(sample_value(schema or {"type": "object"}, "", rng)).decode()
    return None


def _split(text: str, size: int = 4) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def answer(req: ChatRequest) -> Answer:
    seed = seed_of(req.messages)
    prompt_tokens, cached = prompt_usage(req.messages, req.tools)
    budget = req.max_tokens if req.max_tokens is not None else 1 << 30
    reasoning = min(reasoning_budget(req.model, seed, req.reasoning_effort), budget)
    room = budget - reasoning
    tools = choose_tools(req)
    if tools:
        rng = random.Random(seed)
        calls = []
        for i, tool in enumerate(tools):
            fn = tool["function"]
            args = sample_value(fn.get("parameters") or {}, "", rng)
            calls.append(
                ToolCall(f"call_{seed:016x}{i:02d}", fn["name"], orjson.dumps(args).decode())
            )
        used = sum(8 + text_tokens(c.name + c.arguments) for c in calls)
        return Answer([], calls, "tool_calls", prompt_tokens, cached, used + reasoning, reasoning)
    json_text = _json_content(req, seed)
    if json_text is not None:
        pieces = _split(json_text)
        finished = len(pieces) <= room
        pieces = pieces[:room]
    else:
        natural = natural_length(seed)
        finished = natural <= room
        pieces = prose(seed, min(natural, room), finished)
    return Answer(
        pieces,
        [],
        "stop" if finished else "length",
        prompt_tokens,
        cached,
        len(pieces) + reasoning,
        reasoning,
    )


# --- wire shapes ------------------------------------------------------------------------


def completion_body(answer: Answer, id_: str, created: int, model: str) -> bytes:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": answer.content,
        "refusal": None,
        "annotations": [],
    }
    if answer.tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in answer.tool_calls
        ]
    return orjson.dumps(
        {
            "id": id_,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": answer.finish_reason,
                }
            ],
            "usage": answer.usage(),
            "service_tier": "default",
            "system_fingerprint": FINGERPRINT,
        }
    )


DONE = b"data: [DONE]\n\n"


def sse_events(
    answer: Answer, id_: str, created: int, model: str, include_usage: bool
) -> list[tuple[bytes, int]]:
    """The stream as (SSE event, tokens it carries); the last event is ``[DONE]``.

    Content chunks are built from a byte template so a 128-token answer costs 128
    small concatenations, not 128 dict serialisations.
    """
    head = (
        orjson.dumps(
            {
                "id": id_,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "service_tier": "default",
                "system_fingerprint": FINGERPRINT,
            }
        )[:-1]
        + b',"choices":[{"index":0,"delta":'
    )
    usage_null = b',"usage":null' if include_usage else b""
    open_ = b"data: " + head
    tail = b',"logprobs":null,"finish_reason":null}]' + usage_null + b"}\n\n"
    events: list[tuple[bytes, int]] = []
    if answer.tool_calls:
        for i, call in enumerate(answer.tool_calls):
            first: dict[str, Any] = {
                "tool_calls": [
                    {
                        "index": i,
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": ""},
                    }
                ]
            }
            if i == 0:
                first = {"role": "assistant", "content": None, **first}
            events.append((open_ + orjson.dumps(first) + tail, 1))
            for part in _split(call.arguments, 16):
                delta = {"tool_calls": [{"index": i, "function": {"arguments": part}}]}
                events.append((open_ + orjson.dumps(delta) + tail, 4))
    else:
        pieces = answer.pieces or [""]
        events.append(
            (open_ + b'{"role":"assistant","content":' + orjson.dumps(pieces[0]) + b"}" + tail, 1)
        )
        for piece in pieces[1:]:
            events.append((open_ + b'{"content":' + orjson.dumps(piece) + b"}" + tail, 1))
    finish = b'{},"logprobs":null,"finish_reason":"' + answer.finish_reason.encode() + b'"}]'
    events.append((open_ + finish + usage_null + b"}\n\n", 0))
    if include_usage:
        usage = b',"choices":[],"usage":' + orjson.dumps(answer.usage()) + b"}\n\n"
        chunk_head = head[: head.index(b',"choices":')]
        events.append((b"data: " + chunk_head + usage, 0))
    events.append((DONE, 0))
    return events
