"""Responses over Chat Completions, for upstreams that speak only chat. Pure.

The request's input items become chat messages: ``instructions`` a system message
first, message items with their parts (``input_image`` as ``image_url``, ``input_file``
as ``file``), function calls the assistant's ``tool_calls`` (consecutive ones in one
message) and their outputs ``tool`` messages. Function tools, ``tool_choice``,
``text.format`` (``response_format``), ``max_output_tokens`` and ``reasoning.effort``
map to their chat names. The answer comes back as a Response, a stream as the
Responses events (``responses_from_chat``).

Refused with a 400 that names them, never dropped silently, because the answer would
change: hosted tools (a chat model cannot run web_search, file_search, mcp, namespace
...), item types chat has no message for, images by ``file_id`` and files by URL,
``background``, stored ``prompt`` templates and ``conversation``s, and an
``item_reference`` (the session resolves those from its store before the pipeline: one
that reaches here is not there). Dropped: reasoning items (encrypted for the model
that wrote them: a chat upstream cannot verify them, and OpenAI would refuse them from
another account), ``store``, ``previous_response_id`` (the session has put the
conversation in ``input``), ``include``, ``truncation``, ``top_logprobs`` and the other
Responses-only knobs, which change nothing a chat upstream could honour.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson

from tollgate_orchestrator.dialects.registry import register
from tollgate_orchestrator.errors import ApiError, bad_request
from tollgate_orchestrator.translate import chat_completion
from tollgate_orchestrator.translate.responses_from_chat import ChatStreamAsResponses, response_of
from tollgate_orchestrator.types import CHAT_API, RESPONSES_API, LlmRequest

# Copied to chat as they are.
_KEPT = (
    "temperature",
    "top_p",
    "metadata",
    "user",
    "safety_identifier",
    "prompt_cache_key",
    "prompt_cache_retention",
    "service_tier",
)
# Refused: a chat upstream cannot do what they ask.
_REFUSED = {
    "background": "background responses need the response store and polling",
    "prompt": "stored prompt templates live at OpenAI",
    "conversation": "conversations live at OpenAI",
}


def _unsupported(param: str, message: str, code: str = "unsupported_parameter") -> ApiError:
    return ApiError(
        400,
        f"This model's upstream speaks Chat Completions, which {message}.",
        param=param,
        code=code,
        reason="invalid",
    )


# --- the request --------------------------------------------------------------------------


def _parts(where: str, content: Any) -> str | list[dict[str, Any]]:
    """A user, system or developer message's content as chat content."""
    if isinstance(content, str):
        return content
    out: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        kind = part["type"]
        if kind in ("input_text", "output_text"):
            out.append({"type": "text", "text": part["text"]})
        elif kind == "refusal":
            out.append({"type": "text", "text": part["refusal"]})
        elif kind == "input_image":
            if not isinstance(part.get("image_url"), str):
                raise _unsupported(f"{where}[{j}].file_id", "takes images by URL, not by file_id")
            image = {"url": part["image_url"]}
            if part.get("detail") in ("low", "high", "auto"):
                image["detail"] = part["detail"]
            out.append({"type": "image_url", "image_url": image})
        elif kind == "input_file":
            file = {k: part[k] for k in ("file_id", "file_data", "filename") if part.get(k)}
            if "file_id" not in file and "file_data" not in file:
                raise _unsupported(
                    f"{where}[{j}].file_url", "takes files by id or data, not by URL"
                )
            out.append({"type": "file", "file": file})
        else:  # a part of a stored turn the dialect never saw
            raise _unsupported(f"{where}[{j}].type", f"has no content part for {kind}")
    return out


def _assistant(content: Any) -> dict[str, Any]:
    """An assistant message item: its text, and its refusal in chat's own field."""
    msg: dict[str, Any] = {"role": "assistant", "content": None}
    if isinstance(content, str):
        msg["content"] = content
        return msg
    texts = [p["text"] for p in content if p["type"] in ("output_text", "input_text")]
    refusals = [p["refusal"] for p in content if p["type"] == "refusal"]
    if texts:
        msg["content"] = "".join(texts)
    if refusals:
        msg["refusal"] = "".join(refusals)
    return msg


def _tool_output(where: str, output: Any) -> str | list[dict[str, Any]]:
    if isinstance(output, str):
        return output
    parts = []
    for j, part in enumerate(output):
        if part["type"] != "input_text":
            raise _unsupported(f"{where}[{j}].type", "takes only text as a tool's output")
        parts.append({"type": "text", "text": part["text"]})
    return parts


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    msgs: list[dict[str, Any]] = []
    if body.get("instructions"):
        msgs.append({"role": "system", "content": body["instructions"]})
    items = body.get("input")
    if isinstance(items, str):
        return [*msgs, {"role": "user", "content": items}]
    for i, item in enumerate(items or ()):
        where = f"input[{i}]"
        kind = item.get("type") or ("message" if "role" in item else "item_reference")
        if kind == "message":
            role = item["role"]
            if role == "assistant":
                msgs.append(_assistant(item["content"]))
            else:  # developer is system to a chat server (many know no developer role)
                chat_role = "user" if role == "user" else "system"
                msgs.append(
                    {"role": chat_role, "content": _parts(f"{where}.content", item["content"])}
                )
        elif kind == "function_call":
            call = {
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"]},
            }
            if msgs and msgs[-1]["role"] == "assistant":
                msgs[-1].setdefault("tool_calls", []).append(call)
            else:
                msgs.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            content = _tool_output(f"{where}.output", item["output"])
            msgs.append({"role": "tool", "tool_call_id": item["call_id"], "content": content})
        elif kind == "reasoning":
            continue  # another model's reasoning: see the module docstring
        elif kind == "item_reference":
            raise bad_request(
                where,
                f"'{where}' is an item_reference, which needs the response store: "
                "the item it names is not there.",
                code="item_not_found",
            )
        else:
            raise _unsupported(f"{where}.type", f"has no message for a {kind} item")
    if not msgs:
        raise bad_request("input", "'input' has nothing a Chat Completions upstream can take.")
    return msgs


def _tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    hosted = [(i, t["type"]) for i, t in enumerate(tools) if t["type"] != "function"]
    if hosted:
        names = ", ".join(dict.fromkeys(kind for _, kind in hosted))
        raise _unsupported(
            f"tools[{hosted[0][0]}].type",
            f"cannot run hosted tools: {names}; remove them or choose a model whose "
            "provider speaks the Responses API",
            "unsupported_tool",
        )
    keys = ("name", "description", "parameters", "strict")
    return [
        {"type": "function", "function": {k: t[k] for k in keys if t.get(k) is not None}}
        for t in tools
    ]


def _function(name: Any) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name}}


def _tool_choice(tc: Any) -> Any:
    if not isinstance(tc, dict):
        return tc  # none | auto | required
    if tc["type"] == "function":
        return _function(tc.get("name"))
    if tc["type"] == "allowed_tools":
        allowed = []
        for j, t in enumerate(tc.get("tools") or ()):
            if not isinstance(t, dict) or t.get("type") != "function":
                raise _unsupported(
                    f"tool_choice.tools[{j}].type",
                    "can only allow function tools",
                    "unsupported_tool",
                )
            allowed.append(_function(t.get("name")))
        mode = tc.get("mode", "auto")
        return {"type": "allowed_tools", "allowed_tools": {"mode": mode, "tools": allowed}}
    raise _unsupported(
        "tool_choice.type", f"cannot run hosted tools: {tc['type']}", "unsupported_tool"
    )


def _response_format(fmt: dict[str, Any]) -> dict[str, Any] | None:
    if fmt["type"] == "json_schema":
        keys = ("name", "schema", "strict", "description")
        return {"type": "json_schema", "json_schema": {k: fmt[k] for k in keys if k in fmt}}
    return {"type": "json_object"} if fmt["type"] == "json_object" else None


def chat_body(body: dict[str, Any], stream: bool) -> dict[str, Any]:
    """A Responses request body (checked by the dialect) as a chat completions body."""
    for name, why in _REFUSED.items():
        if body.get(name):
            raise _unsupported(name, f"cannot serve it: {why}")
    try:
        messages = _messages(body)
    except (KeyError, TypeError, AttributeError):
        # Items the dialect did not see (a stored turn the session put back): never a 500.
        raise bad_request("input", "'input' holds an item a chat upstream cannot take.") from None
    chat: dict[str, Any] = {"model": body["model"], "messages": messages}
    if stream:
        chat["stream"] = True
    for name in _KEPT:
        if body.get(name) is not None:
            chat[name] = body[name]
    if body.get("tools"):  # chat refuses a tool choice or parallel calls without tools
        chat["tools"] = _tools(body["tools"])
        if body.get("tool_choice") is not None:
            chat["tool_choice"] = _tool_choice(body["tool_choice"])
        if body.get("parallel_tool_calls") is not None:
            chat["parallel_tool_calls"] = body["parallel_tool_calls"]
    text = body.get("text") or {}
    if isinstance(text.get("format"), dict):
        rf = _response_format(text["format"])
        if rf is not None:
            chat["response_format"] = rf
    if text.get("verbosity") is not None:
        chat["verbosity"] = text["verbosity"]
    if body.get("max_output_tokens") is not None:
        chat["max_completion_tokens"] = body["max_output_tokens"]
    effort = (body.get("reasoning") or {}).get("effort")
    if effort is not None:
        chat["reasoning_effort"] = effort
    return chat


class ResponsesToChat:
    source = RESPONSES_API
    target = CHAT_API

    def request(self, req: LlmRequest) -> LlmRequest:
        return dataclasses.replace(req, body=chat_body(req.body, req.stream), api=CHAT_API)

    def answer(self, raw: bytes, req: LlmRequest) -> bytes | None:
        completion = chat_completion(raw)
        response = None if completion is None else response_of(completion, req)
        return None if response is None else orjson.dumps(response)

    def stream(self, req: LlmRequest) -> ChatStreamAsResponses:
        return ChatStreamAsResponses(req)


TRANSLATION = ResponsesToChat()
register(translation=TRANSLATION)
