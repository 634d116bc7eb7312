"""Chat Completions over an upstream that speaks only Anthropic Messages, and back. Pure.

The way back of ``messages_chat`` (a chat or Responses client, a Claude model): its pure
helpers are reused where the direction allows (``tool_input`` for tool arguments).

The request (what Messages cannot do is refused with a 400 naming it, never dropped
unseen, except what only tunes delivery: ``seed``, ``prediction``, ``verbosity``,
``store``, ``prompt_cache_key``, OpenAI's ``metadata`` tags):

- ``system``/``developer`` messages → ``system`` text blocks, in order (Messages has one
  system prompt, so one sent mid-conversation moves to the top);
- user text and ``image_url`` parts → text and image blocks (a ``data:`` URL → a base64
  source, http(s) → a url source); a PDF ``file`` part by ``file_data`` → a document;
  a part's ``cache_control`` (Anthropic's, as LiteLLM accepts it on chat) is kept, so
  prompt caching works through chat;
- assistant content and ``tool_calls`` → text and ``tool_use`` blocks (input: the parsed
  arguments); ``tool`` messages → ``tool_result`` blocks in a user turn; consecutive turns
  of one role are merged, as Messages wants user and assistant to alternate;
- function tools → ``{name, description, input_schema}``; ``tool_choice`` auto/none/
  required (``any``)/a named function (``tool``); ``parallel_tool_calls: false`` →
  ``disable_parallel_tool_use``;
- ``stop`` → ``stop_sequences``; ``max_tokens``/``max_completion_tokens`` (the smaller)
  → ``max_tokens``, which Messages requires (``DEFAULT_MAX_TOKENS`` without one);
  ``temperature`` above 1 → 400 (Anthropic's range is 0..1); ``user`` (else
  ``safety_identifier``) → ``metadata.user_id``; ``service_tier`` auto → auto, default →
  standard_only (others are OpenAI's billing tiers: dropped);
- ``reasoning_effort`` → ``thinking: enabled`` with ``BUDGETS``' budget (minimal/none:
  no thinking). OpenAI counts reasoning inside the completion cap, and Anthropic's
  ``max_tokens`` holds the thinking too: with a cap, thinking leaves the answer
  ``MIN_BUDGET`` of it (none below ``2 * MIN_BUDGET``): never more than the client
  capped. Thinking samples at temperature 1 (Anthropic refuses other values, as
  OpenAI's reasoning models do), so ``temperature`` and ``top_p`` are not sent with it;
  a forced tool choice cannot think: 400;
- ``response_format``: ``json_schema`` → ``output_config.format`` (Anthropic's
  structured outputs: the schema is enforced, as ``strict`` asks); ``json_object`` → a
  system instruction, because Messages has no schema-less JSON mode (its format needs
  a schema, and a bare ``{"type": "object"}`` there would only allow ``{}``), and an
  instruction is what Anthropic documents for JSON without a schema. Honest, not
  guaranteed: the answer is not checked;
- ``n`` > 1, ``logprobs``/``top_logprobs``, ``logit_bias``, non-zero penalties, audio,
  web search, legacy ``functions`` → 400 naming the field.

The answer: a ``Message`` → a ``chat.completion`` (text blocks joined as the content,
``tool_use`` → ``tool_calls`` with JSON-string arguments, ``thinking`` →
``message.reasoning_content``, as DeepSeek, vLLM and LiteLLM name it). Stop reasons in
``FINISH_REASONS``. Usage through ``accounting.Usage``, so cache reads and 5-minute and
1-hour writes reach chat's ``prompt_tokens_details`` and are priced as such.

The stream: Messages events → ``chat.completion.chunk`` payloads; the usage chunk
(``choices: []``) always, the chat wire drops it for a client that did not ask
(``stream_options.include_usage``); then ``[DONE]``. An ``error`` event → an OpenAI
error payload, which ends the chat stream.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import orjson

from tollgate_orchestrator.dialects.chat import chat_usage
from tollgate_orchestrator.dialects.messages import usage_of
from tollgate_orchestrator.dialects.registry import register
from tollgate_orchestrator.errors import ApiError
from tollgate_orchestrator.sse import DONE
from tollgate_orchestrator.translate.messages_chat import tool_input
from tollgate_orchestrator.types import CHAT_API, MESSAGES_API, LlmRequest

DEFAULT_MAX_TOKENS = 4096  # Messages requires max_tokens; chat does not
MAX_TEMPERATURE = 1.0  # Anthropic's range is 0..1, OpenAI's 0..2
# reasoning_effort → thinking.budget_tokens (Anthropic's minimum is 1,024).
MIN_BUDGET = 1024
BUDGETS = {"low": 2048, "medium": 8192, "high": 24576, "xhigh": 24576}
NO_THINKING = frozenset({"minimal", "none"})
JSON_INSTRUCTION = (
    "Respond with a single valid JSON object and nothing else: no prose, no code fences."
)
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",  # a server tool paused: nothing more a chat client can do
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
SERVICE_TIERS = {"auto": "auto", "default": "standard_only"}
# Refused when set (and not to a no-op: 0, false, {}): the answer would change unseen.
_REFUSED = {
    "presence_penalty": "presence penalty",
    "frequency_penalty": "frequency penalty",
    "logprobs": "log probabilities",
    "top_logprobs": "log probabilities",
    "logit_bias": "token biases",
    "audio": "audio output",
    "web_search_options": "OpenAI's web search",
    "functions": "legacy functions (send tools)",
    "function_call": "legacy functions (send tool_choice)",
}


def _obj(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _refuse(param: str, message: str, code: str = "unsupported_parameter") -> ApiError:
    return ApiError(400, message, param=param, code=code, reason="invalid")


def _unsupported(param: str, what: str) -> ApiError:
    return _refuse(param, f"This model's upstream speaks Anthropic Messages, which has no {what}.")


# --- the request ----------------------------------------------------------------------------


def _keep_cache(part: dict[str, Any], block: dict[str, Any]) -> dict[str, Any]:
    if isinstance(part.get("cache_control"), dict):
        block["cache_control"] = part["cache_control"]
    return block


def _image(url: str, where: str) -> dict[str, Any]:
    if url.startswith("data:"):
        head, sep, data = url[5:].partition(",")
        media_type, _, encoding = head.partition(";")
        if not sep or encoding != "base64" or not media_type.startswith("image/"):
            raise _refuse(where, "An image data: URL must be base64 image data.", "invalid_value")
        source = {"type": "base64", "media_type": media_type, "data": data}
    elif url.startswith(("https://", "http://")):
        source = {"type": "url", "url": url}
    else:
        raise _refuse(where, "An image URL must be https, http or a data: URL.", "invalid_value")
    return {"type": "image", "source": source}


def _file(part: dict[str, Any], where: str) -> dict[str, Any]:
    f = _obj(part.get("file"))
    data = f.get("file_data")
    prefix = "data:application/pdf;base64,"
    if not isinstance(data, str) or not data.startswith(prefix):
        raise _refuse(
            f"{where}.file",
            "Anthropic Messages takes a file here only as a PDF in file_data (a data: URL).",
            "unsupported_content",
        )
    block: dict[str, Any] = {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": data[len(prefix) :]},
    }
    if isinstance(f.get("filename"), str) and f["filename"]:
        block["title"] = f["filename"]
    return block


def _blocks(content: Any, where: str, role: str) -> list[dict[str, Any]]:
    """Chat content (a string or parts) as Messages content blocks; empty text dropped
    (Anthropic refuses empty text blocks)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    out: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        kind, here = part["type"], f"{where}[{j}]"
        if kind in ("text", "refusal"):
            text = part.get(kind) if kind == "refusal" else part["text"]
            if isinstance(text, str) and text:
                out.append(_keep_cache(part, {"type": "text", "text": text}))
        elif kind == "image_url" and role == "user":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str):
                raise _refuse(f"{here}.image_url.url", "An image needs a URL.", "invalid_value")
            out.append(_keep_cache(part, _image(url, f"{here}.image_url.url")))
        elif kind == "file" and role == "user":
            out.append(_keep_cache(part, _file(part, here)))
        else:
            raise _refuse(
                f"{here}.type",
                f"A `{kind}` part cannot reach an Anthropic Messages upstream.",
                "unsupported_content",
            )
    return out


def _tool_use(call: dict[str, Any], where: str) -> dict[str, Any]:
    fn = _obj(call.get("function"))
    name, call_id = fn.get("name"), call.get("id")
    if not isinstance(name, str) or not isinstance(call_id, str):
        raise _refuse(where, "A tool call needs an id and a function name.", "invalid_value")
    return {
        "type": "tool_use",
        "id": call_id,
        "name": name,
        "input": tool_input(fn.get("arguments")),
    }


def _tool_result(msg: dict[str, Any], where: str) -> dict[str, Any]:
    content = msg.get("content")
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": msg["tool_call_id"]}
    if isinstance(content, str):
        block["content"] = content
    else:
        parts = _blocks(content, f"{where}.content", "user")
        if parts:
            block["content"] = parts
    return block


def _turns(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(system blocks, alternating turns)."""
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for i, msg in enumerate(messages):
        role, where = msg["role"], f"messages[{i}]"
        if role in ("system", "developer"):
            system.extend(_blocks(msg.get("content"), f"{where}.content", "system"))
            continue
        if role == "function":
            raise _unsupported(f"{where}.role", "legacy function messages (send tool messages)")
        if role == "tool":
            blocks, role = [_tool_result(msg, where)], "user"
        elif role == "assistant":
            blocks = _blocks(msg.get("content"), f"{where}.content", role)
            calls = msg.get("tool_calls") or []
            for j, call in enumerate(calls if isinstance(calls, list) else []):
                blocks.append(_tool_use(call, f"{where}.tool_calls[{j}]"))
        else:
            blocks = _blocks(msg.get("content"), f"{where}.content", "user")
        if not blocks:
            continue  # an empty turn: nothing Messages would take
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return system, turns


def _tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for tool in tools:
        fn = tool["function"]
        params = fn.get("parameters")
        schema = params if isinstance(params, dict) else {"type": "object", "properties": {}}
        t: dict[str, Any] = {"name": fn["name"], "input_schema": schema}
        if isinstance(fn.get("description"), str):
            t["description"] = fn["description"]
        if fn.get("strict") is True:
            t["strict"] = True
        out.append(t)
    return out


def _tool_choice(choice: Any, parallel: object) -> dict[str, Any] | None:
    if isinstance(choice, dict):
        fn = _obj(choice.get("function"))
        if not isinstance(fn.get("name"), str):
            raise _refuse(
                "tool_choice", "A named tool choice needs function.name.", "invalid_value"
            )
        out: dict[str, Any] = {"type": "tool", "name": fn["name"]}
    elif choice in (None, "auto", "none", "required"):
        kind = {"required": "any", "none": "none"}.get(choice or "auto", "auto")
        out = {"type": kind}
        if choice is None and parallel is not False:
            return None  # Anthropic's default, auto, with parallel calls
    else:
        raise _refuse("tool_choice", "Must be none, auto, required or a function.", "invalid_value")
    if parallel is False and out["type"] != "none":
        out["disable_parallel_tool_use"] = True
    return out


def _max_tokens(body: dict[str, Any]) -> int | None:
    caps = [body[k] for k in ("max_tokens", "max_completion_tokens") if body.get(k) is not None]
    return min(caps) if caps else None


def _refusals(body: dict[str, Any]) -> None:
    n = body.get("n")
    if n is not None and n != 1:
        raise _refuse("n", "Anthropic Messages answers with one choice: `n` must be 1.")
    for name, what in _REFUSED.items():
        if body.get(name):
            raise _unsupported(name, what)
    modalities = body.get("modalities")
    if isinstance(modalities, list) and any(m != "text" for m in modalities):
        raise _unsupported("modalities", "output but text")
    temperature = body.get("temperature")
    if temperature is not None and temperature > MAX_TEMPERATURE:
        raise _refuse(
            "temperature",
            f"This model's upstream (Anthropic Messages) takes a temperature between 0 and "
            f"{MAX_TEMPERATURE:g}; {temperature:g} given.",
            "invalid_value",
        )


def _thinking(out: dict[str, Any], body: dict[str, Any], cap: int | None) -> None:
    effort = body.get("reasoning_effort")
    if effort is None or effort in NO_THINKING:
        return
    budget = BUDGETS.get(effort)
    if budget is None:
        raise _refuse("reasoning_effort", f"Unknown reasoning_effort {effort!r}.", "invalid_value")
    choice = out.get("tool_choice")
    if choice is not None and choice["type"] in ("any", "tool"):
        raise _refuse(
            "tool_choice",
            "Anthropic models cannot think with a forced tool choice: send auto or none, "
            "or no reasoning_effort.",
        )
    if cap is None:
        out["max_tokens"] = budget + DEFAULT_MAX_TOKENS
    elif cap < 2 * MIN_BUDGET:
        return  # no room to think and answer within the client's cap: answer without
    else:
        # OpenAI counts reasoning inside the cap, and so must we: the client's cap is what
        # its budget was reserved for. Thinking leaves the answer MIN_BUDGET of it.
        budget = min(budget, cap - MIN_BUDGET)
    out["thinking"] = {"type": "enabled", "budget_tokens": budget}
    out.pop("temperature", None)
    out.pop("top_p", None)


def messages_body(body: dict[str, Any]) -> dict[str, Any]:
    """A checked chat body as a Messages body; raises ``ApiError`` (400)."""
    _refusals(body)
    system, turns = _turns(body["messages"])
    rf = body.get("response_format")
    kind = rf.get("type") if isinstance(rf, dict) else None
    if kind == "json_object":
        system.append({"type": "text", "text": JSON_INSTRUCTION})
    out: dict[str, Any] = {"model": body["model"], "messages": turns}
    if system:
        out["system"] = system
    cap = _max_tokens(body)
    out["max_tokens"] = cap if cap is not None else DEFAULT_MAX_TOKENS
    tools = _tools(body.get("tools") or [])
    if tools:
        out["tools"] = tools
        choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
        if choice is not None:
            out["tool_choice"] = choice
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            out[name] = body[name]
    user = body.get("user") or body.get("safety_identifier")
    if isinstance(user, str) and user:
        out["metadata"] = {"user_id": user}
    tier = body.get("service_tier")
    if tier in SERVICE_TIERS:
        out["service_tier"] = SERVICE_TIERS[tier]
    if kind == "json_schema":
        schema = rf.get("json_schema") if isinstance(rf, dict) else None
        if not isinstance(schema, dict) or not isinstance(schema.get("schema"), dict):
            raise _refuse(
                "response_format.json_schema.schema", "A JSON schema is required.", "invalid_value"
            )
        out["output_config"] = {"format": {"type": "json_schema", "schema": schema["schema"]}}
    _thinking(out, body, cap)
    return out


# --- the answer -----------------------------------------------------------------------------


def finish_reason(stop: object) -> str:
    return FINISH_REASONS.get(stop, "stop") if isinstance(stop, str) else "stop"


def completion_id(message_id: object) -> str:
    raw = message_id if isinstance(message_id, str) and message_id else "msg_unknown"
    return "chatcmpl-" + raw.removeprefix("msg_")


def _arguments(value: object) -> str:
    return orjson.dumps(value if isinstance(value, dict) else {}).decode()


def completion(message: dict[str, Any], model: str) -> dict[str, Any]:
    texts: list[str] = []
    thinking: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in message["content"]:
        kind = block["type"]
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "thinking" and isinstance(block.get("thinking"), str):
            thinking.append(block["thinking"])
        elif kind == "tool_use":
            fn = {"name": str(block.get("name", "")), "arguments": _arguments(block.get("input"))}
            calls.append({"id": str(block.get("id", "")), "type": "function", "function": fn})
    msg: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not calls else None,
        "refusal": None,
    }
    if thinking:
        msg["reasoning_content"] = "".join(thinking)
    if calls:
        msg["tool_calls"] = calls
    choice = {
        "index": 0,
        "message": msg,
        "logprobs": None,
        "finish_reason": finish_reason(message.get("stop_reason")),
    }
    name = message.get("model")
    return {
        "id": completion_id(message.get("id")),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": name if isinstance(name, str) and name else model,
        "choices": [choice],
        "usage": chat_usage(usage_of(message.get("usage"))),
    }


def _message(raw: bytes) -> dict[str, Any] | None:
    try:
        message = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(message, dict) or message.get("type") != "message":
        return None
    content = message.get("content")
    if not isinstance(content, list) or not all(
        isinstance(b, dict) and isinstance(b.get("type"), str) for b in content
    ):
        return None
    return message


# --- the stream -----------------------------------------------------------------------------


class MessagesToChatStream:
    """Messages events in (data payloads), chat chunks out, ``[DONE]`` last."""

    def __init__(self, model: str) -> None:
        self.head: dict[str, Any] = {
            "id": completion_id(None),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }
        self.usage: dict[str, Any] = {}  # message_start's, then message_delta's over it
        self.tools: dict[int, int] = {}  # content block index → tool call index
        self.stop: object = None
        self.ended = False

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return orjson.dumps({**self.head, "choices": [choice]})

    def feed(self, payload: bytes) -> list[bytes]:
        if self.ended:
            return []
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return []  # nothing a chat client could read
        if not isinstance(event, dict):
            return []
        kind = event.get("type")
        if kind == "message_start":
            return self._start(event.get("message"))
        if kind == "content_block_start":
            return self._block(event)
        if kind == "content_block_delta":
            return self._delta(event)
        if kind == "message_delta":
            delta, usage = event.get("delta"), event.get("usage")
            if isinstance(delta, dict) and delta.get("stop_reason") is not None:
                self.stop = delta["stop_reason"]
            if isinstance(usage, dict):
                self.usage.update(usage)  # cumulative: the last counts
            return []
        if kind == "message_stop":
            return self._end()
        if kind == "error":
            self.ended = True
            err = _obj(event.get("error"))
            message = err.get("message") if isinstance(err.get("message"), str) else ""
            body = {
                "message": message or "The upstream stream failed.",
                "type": "server_error",
                "param": None,
                "code": err.get("type") if isinstance(err.get("type"), str) else None,
            }
            return [orjson.dumps({"error": body})]
        return []  # ping, content_block_stop, signature and citation deltas

    def _start(self, message: object) -> list[bytes]:
        if isinstance(message, dict):
            self.head["id"] = completion_id(message.get("id"))
            if isinstance(message.get("model"), str) and message["model"]:
                self.head["model"] = message["model"]
            if isinstance(message.get("usage"), dict):
                self.usage = dict(message["usage"])
        return [self._chunk({"role": "assistant", "content": ""})]

    def _block(self, event: dict[str, Any]) -> list[bytes]:
        block, index = event.get("content_block"), event.get("index")
        if not isinstance(block, dict) or not isinstance(index, int):
            return []
        if block.get("type") == "tool_use":
            k = self.tools[index] = len(self.tools)
            fn = {"name": str(block.get("name", "")), "arguments": ""}
            call = {"index": k, "id": str(block.get("id", "")), "type": "function", "function": fn}
            return [self._chunk({"tool_calls": [call]})]
        if block.get("type") == "text" and block.get("text"):
            return [self._chunk({"content": block["text"]})]
        return []

    def _delta(self, event: dict[str, Any]) -> list[bytes]:
        delta = event.get("delta")
        if not isinstance(delta, dict):
            return []
        kind = delta.get("type")
        if kind == "text_delta" and isinstance(delta.get("text"), str):
            return [self._chunk({"content": delta["text"]})]
        if kind == "thinking_delta" and isinstance(delta.get("thinking"), str):
            return [self._chunk({"reasoning_content": delta["thinking"]})]
        if kind == "input_json_delta" and event.get("index") in self.tools:
            args = delta.get("partial_json")
            if isinstance(args, str) and args:
                call = {"index": self.tools[event["index"]], "function": {"arguments": args}}
                return [self._chunk({"tool_calls": [call]})]
        return []

    def _end(self) -> list[bytes]:
        self.ended = True
        usage = {**self.head, "choices": [], "usage": chat_usage(usage_of(self.usage))}
        return [self._chunk({}, finish_reason(self.stop)), orjson.dumps(usage), DONE]


class ChatToMessages:
    source = CHAT_API
    target = MESSAGES_API

    def request(self, req: LlmRequest) -> LlmRequest:
        return dataclasses.replace(req, body=messages_body(req.body), api=MESSAGES_API)

    def answer(self, raw: bytes, req: LlmRequest) -> bytes | None:
        message = _message(raw)
        return orjson.dumps(completion(message, req.model)) if message is not None else None

    def stream(self, req: LlmRequest) -> MessagesToChatStream:
        return MessagesToChatStream(req.model)


TRANSLATION = ChatToMessages()
register(translation=TRANSLATION)
