"""OpenAI Chat Completions: the request as a ``Prompt``, the answer as a completion or
as ``chat.completion.chunk`` events ending in ``[DONE]``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from tollgate_simulator.generate import (
    EFFORTS,
    Answer,
    Function,
    Prompt,
    RequestError,
    generate,
    invalid,
    is_int,
    load_object,
    missing,
    prompt_usage,
    split,
)

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
FINGERPRINT = "fp_tollgate_sim"
DONE = b"data: [DONE]\n\n"


@dataclass(slots=True)  # not frozen: see generate.Prompt
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

    def reply(self, id_: str, created: int) -> ChatReply:
        return ChatReply(self, answer(self), id_, created)


def parse_request(body: bytes) -> ChatRequest:
    """Validate the fields the simulator uses; the rest of the OpenAI schema is ignored."""
    data = load_object(body)
    model = data.get("model")
    if model is None:
        raise missing("model")
    if not isinstance(model, str) or not model:
        raise invalid("model", "a non-empty string")
    messages = data.get("messages")
    if messages is None:
        raise missing("messages")
    if not isinstance(messages, list):
        raise invalid("messages", "an array")
    if not messages:
        raise RequestError(
            400,
            "Invalid 'messages': empty array. Expected at least one.",
            "messages",
            "empty_array",
        )
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise invalid(f"messages[{i}]", "an object")
        if msg.get("role") not in _ROLES:
            raise RequestError(
                400,
                f"Invalid 'messages[{i}].role': expected one of {', '.join(sorted(_ROLES))}.",
                f"messages[{i}].role",
                "invalid_value",
            )
    stream = data.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise invalid("stream", "a boolean")
    options = data.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise invalid("stream_options", "an object")
    include_usage = bool(options and options.get("include_usage"))
    max_tokens = None
    for name in ("max_completion_tokens", "max_tokens"):  # the newer name wins
        value = data.get(name)
        if value is None:
            continue
        if not is_int(value) or value < 1:
            raise RequestError(
                400, f"Invalid '{name}': expected an integer >= 1.", name, "invalid_value"
            )
        max_tokens = value
        break
    tools = data.get("tools")
    if tools is not None and (
        not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools)
    ):
        raise invalid("tools", "an array of objects")
    response_format = data.get("response_format")
    if response_format is not None and not isinstance(response_format, dict):
        raise invalid("response_format", "an object")
    effort = data.get("reasoning_effort")
    if effort is not None and effort not in EFFORTS:
        raise RequestError(
            400,
            f"Invalid 'reasoning_effort': expected one of {', '.join(EFFORTS)}.",
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


def _functions(tools: list[dict[str, Any]] | None) -> tuple[Function, ...]:
    out = []
    for tool in tools or ():
        fn = tool.get("function")
        if tool.get("type", "function") == "function" and isinstance(fn, dict):
            name = fn.get("name")
            if isinstance(name, str) and name:
                out.append(Function(name, fn.get("parameters")))
    return tuple(out)


def to_prompt(req: ChatRequest) -> Prompt:
    prompt_tokens, cached = prompt_usage(req.messages, req.tools)
    choice = req.tool_choice
    forced = None
    if isinstance(choice, dict):
        fn = choice.get("function")
        forced = fn.get("name") if isinstance(fn, dict) else None
        forced = forced if isinstance(forced, str) else ""  # forced, but no such name
    fmt = req.response_format or {}
    kind = fmt.get("type")
    spec = fmt.get("json_schema")
    return Prompt(
        model=req.model,
        messages=req.messages,
        prompt_tokens=prompt_tokens,
        cached_tokens=cached,
        functions=_functions(req.tools),
        tool_choice=choice if choice in ("none", "required") else "auto",
        forced=forced,
        parallel_tool_calls=req.parallel_tool_calls,
        max_tokens=req.max_tokens,
        json_format=kind if kind in ("json_object", "json_schema") else None,
        json_schema=spec.get("schema") if isinstance(spec, dict) else None,
        reasoning_effort=req.reasoning_effort,
    )


def answer(req: ChatRequest) -> Answer:
    return generate(to_prompt(req))


# --- wire shapes ------------------------------------------------------------------------


def chat_usage(answer: Answer) -> dict[str, Any]:
    return {
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "total_tokens": answer.prompt_tokens + answer.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": answer.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": answer.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


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
            "usage": chat_usage(answer),
            "service_tier": "default",
            "system_fingerprint": FINGERPRINT,
        }
    )


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
            for part in split(call.arguments, 16):
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
        usage = b',"choices":[],"usage":' + orjson.dumps(chat_usage(answer)) + b"}\n\n"
        chunk_head = head[: head.index(b',"choices":')]
        events.append((b"data: " + chunk_head + usage, 0))
    events.append((DONE, 0))
    return events


@dataclass(slots=True)
class ChatReply:
    req: ChatRequest
    answer: Answer
    id_: str
    created: int
    preamble: int = 0

    @property
    def tokens(self) -> int:
        return self.answer.completion_tokens

    @property
    def think_tokens(self) -> int:
        return self.answer.reasoning_tokens

    @property
    def closing(self) -> int:
        return 2 + int(self.req.include_usage)  # finish chunk, [usage chunk,] [DONE]

    def body(self) -> bytes:
        return completion_body(self.answer, self.id_, self.created, self.req.model)

    def events(self) -> list[tuple[bytes, int]]:
        return sse_events(
            self.answer, self.id_, self.created, self.req.model, self.req.include_usage
        )
