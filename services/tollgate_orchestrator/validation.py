"""Parse and check a chat completions request body (the chat dialect's input): pure, no I/O.

Every failure is a 400 whose ``param`` names the field (``messages[1].role``,
``tools[0].function.name``, ...). Fields OpenAI does not define are dropped, as
"ignored" has to mean they never reach an upstream that would refuse them.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, TypeGuard

import orjson

from tollgate_common.cachekey import ANSWER_FIELDS
from tollgate_orchestrator.errors import ApiError, bad_request
from tollgate_orchestrator.types import LlmRequest

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
# Request fields forwarded upstream: the ones that change the answer, plus these.
KNOWN_FIELDS = frozenset(
    {
        *ANSWER_FIELDS,
        "model",
        "stream",
        "stream_options",
        "user",
        "metadata",
        "store",
        "service_tier",
        "safety_identifier",
        "prompt_cache_key",
        "web_search_options",
    }
)
TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_RESPONSE_FORMATS = frozenset({"text", "json_object", "json_schema"})
_TOOL_CHOICES = frozenset({"none", "auto", "required"})
_INTEGER_FIELDS = ("max_tokens", "max_completion_tokens", "n", "seed", "top_logprobs")
FEATURE_TEXT_CHARS = 2000  # the router's classifier sees this much of a message, no more
MAX_MODEL_CHARS = 256
# The budget estimate of what is not message text (M-1): OpenAI bills tools, tool calls,
# schemas and non-text parts as prompt tokens too. JSON is counted at ~4 characters per
# token, like text. An image is OpenAI's high-detail cost of a 1024x1024 image (85 + 4
# tiles x 170), or the fixed low-detail 85; a file sent by id has no size here, so it is
# guessed at a few pages of text. Other parts (audio, inline files) count their JSON size.
IMAGE_TOKENS = 765
IMAGE_LOW_DETAIL_TOKENS = 85
FILE_ID_TOKENS = 4096


def json_tokens(value: Any) -> int:
    try:
        return len(orjson.dumps(value)) // 4
    except (TypeError, orjson.JSONEncodeError):  # checked JSON only; never on a parsed body
        return 0


def _part_tokens(part: dict[str, Any]) -> int:
    """Tokens of one non-text content part."""
    kind = part["type"]
    if kind == "image_url":
        image = part.get("image_url")
        low = isinstance(image, dict) and image.get("detail") == "low"
        return IMAGE_LOW_DETAIL_TOKENS if low else IMAGE_TOKENS
    if kind == "file":
        file = part.get("file")
        if isinstance(file, dict) and file.get("file_data") is None:
            return FILE_ID_TOKENS
    return json_tokens(part)


def _extra_tokens(msg: dict[str, Any]) -> int:
    """Tokens of a message beyond its text: non-text parts, tool calls, name, refusal."""
    n = 0
    content = msg.get("content")
    if isinstance(content, list):
        n += sum(_part_tokens(p) for p in content if p["type"] != "text")
    for name in ("tool_calls", "function_call"):
        if msg.get(name) is not None:
            n += json_tokens(msg[name])
    for name in ("name", "refusal"):
        if isinstance(msg.get(name), str):
            n += len(msg[name]) // 4 + 1
    return n


@dataclass(frozen=True, slots=True)
class Limits:
    max_messages: int = 2048
    max_tokens_cap: int = 131_072
    max_n: int = 8


def is_int(v: object) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def one_of(v: object, options: Collection[str]) -> bool:
    """``v`` is one of ``options``: a list or a dict from a client is not (nor hashable)."""
    return isinstance(v, str) and v in options


def is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


MAX_JSON_DEPTH = 64  # orjson parses 1024 levels but serialises only 255 (M-9)


def _too_deep(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, dict):
            children: Any = v.values()
        elif isinstance(v, list):
            children = v
        else:
            continue
        if depth > limit:
            return True
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


def decode_json(raw: bytes) -> Any:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            raise bad_request(None, "The request body is not valid UTF-8.") from None
        raise bad_request(
            None, f"We could not parse the JSON body of your request: {exc.msg}."
        ) from None
    if _too_deep(data):
        raise bad_request(None, f"The JSON body nests deeper than {MAX_JSON_DEPTH} levels.")
    return data


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def _check_content(where: str, role: str, msg: dict[str, Any]) -> None:
    content = msg.get("content")
    if content is None:
        if role in ("assistant", "function") or msg.get("tool_calls") or msg.get("function_call"):
            return
        raise bad_request(f"{where}.content", f"'{where}.content' is required for role {role}.")
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise bad_request(f"{where}.content", f"'{where}.content' must be a string or an array.")
    for j, part in enumerate(content):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise bad_request(
                f"{where}.content[{j}]", f"'{where}.content[{j}]' must be an object with a type."
            )
        if part["type"] == "text" and not isinstance(part.get("text"), str):
            raise bad_request(
                f"{where}.content[{j}].text", f"'{where}.content[{j}].text' must be a string."
            )


def _has_image(content: Any) -> bool:
    return isinstance(content, list) and any(p["type"] == "image_url" for p in content)


def _check_messages(value: Any, limits: Limits) -> tuple[str, str, int, int, int, bool]:
    """(last user text, system text, turns, prompt chars, tokens beyond the text, whether
    a message carries an image)."""
    if value is None:
        raise bad_request("messages", "Missing required parameter: 'messages'.")
    if not isinstance(value, list):
        raise bad_request("messages", "'messages' must be an array.")
    if not value:
        raise bad_request("messages", "'messages' must contain at least one message.")
    if len(value) > limits.max_messages:
        raise bad_request(
            "messages", f"'messages' has {len(value)} items; at most {limits.max_messages}."
        )
    last_user = ""
    system: list[str] = []
    chars = extra = 0
    images = False
    for i, msg in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise bad_request(where, f"'{where}' must be an object.")
        role = msg.get("role")
        if not isinstance(role, str) or role not in ROLES:
            raise bad_request(
                f"{where}.role",
                f"'{where}.role' must be one of {', '.join(sorted(ROLES))}.",
            )
        _check_content(where, role, msg)
        if role == "tool" and not isinstance(msg.get("tool_call_id"), str):
            raise bad_request(f"{where}.tool_call_id", f"'{where}.tool_call_id' is required.")
        text = _text_of(msg.get("content"))
        chars += len(text)
        extra += _extra_tokens(msg)
        images = images or _has_image(msg.get("content"))  # parts were checked above
        if role == "user":
            last_user = text
        elif role in ("system", "developer") and sum(map(len, system)) < FEATURE_TEXT_CHARS:
            system.append(text)
    sys_text = "\n".join(system)[:FEATURE_TEXT_CHARS]
    return last_user[-FEATURE_TEXT_CHARS:], sys_text, len(value), chars, extra, images


def _check_tools(value: Any) -> bool:
    if value is None:
        return False
    if not isinstance(value, list):
        raise bad_request("tools", "'tools' must be an array.")
    for i, tool in enumerate(value):
        where = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise bad_request(where, f"'{where}' must be an object.")
        if tool.get("type") != "function":
            raise bad_request(f"{where}.type", f"'{where}.type' must be 'function'.")
        fn = tool.get("function")
        if not isinstance(fn, dict):
            raise bad_request(f"{where}.function", f"'{where}.function' must be an object.")
        name = fn.get("name")
        if not isinstance(name, str) or not TOOL_NAME.match(name):
            raise bad_request(
                f"{where}.function.name",
                f"'{where}.function.name' must be 1-64 letters, digits, '_' or '-'.",
            )
        if fn.get("description") is not None and not isinstance(fn["description"], str):
            raise bad_request(
                f"{where}.function.description", f"'{where}.function.description' must be a string."
            )
        if fn.get("parameters") is not None and not isinstance(fn["parameters"], dict):
            raise bad_request(
                f"{where}.function.parameters", f"'{where}.function.parameters' must be an object."
            )
    return bool(value)


def _number(body: dict[str, Any], name: str, lo: float, hi: float) -> None:
    v = body.get(name)
    if v is None:
        return
    if not is_number(v) or not lo <= v <= hi:
        raise bad_request(name, f"'{name}' must be a number between {lo:g} and {hi:g}.")


def _max_tokens(body: dict[str, Any], limits: Limits) -> int | None:
    result = None
    for name in ("max_tokens", "max_completion_tokens"):
        v = body.get(name)
        if v is None:
            continue
        if not is_int(v) or v < 1:
            raise bad_request(name, f"'{name}' must be a positive integer.")
        if v > limits.max_tokens_cap:
            raise bad_request(name, f"'{name}' is {v}; at most {limits.max_tokens_cap}.")
        result = v if result is None else min(result, v)
    return result


def _check_misc(body: dict[str, Any], limits: Limits) -> int:
    n = body.get("n")
    if n is not None and (not is_int(n) or not 1 <= n <= limits.max_n):
        raise bad_request("n", f"'n' must be an integer between 1 and {limits.max_n}.")
    seed = body.get("seed")
    if seed is not None and not is_int(seed):
        raise bad_request("seed", "'seed' must be an integer.")
    stop = body.get("stop")
    stop_ok = stop is None or isinstance(stop, str)
    if not stop_ok and isinstance(stop, list) and len(stop) <= 4:
        stop_ok = all(isinstance(s, str) for s in stop)
    if not stop_ok:
        raise bad_request("stop", "'stop' must be a string or an array of up to 4 strings.")
    rf = body.get("response_format")
    if rf is not None and (not isinstance(rf, dict) or rf.get("type") not in _RESPONSE_FORMATS):
        raise bad_request(
            "response_format", "'response_format.type' must be text, json_object or json_schema."
        )
    tc = body.get("tool_choice")
    if tc is not None and not (isinstance(tc, dict) or tc in _TOOL_CHOICES):
        raise bad_request("tool_choice", "'tool_choice' must be none, auto, required or an object.")
    for name in ("user", "safety_identifier", "prompt_cache_key", "service_tier"):
        if body.get(name) is not None and not isinstance(body[name], str):
            raise bad_request(name, f"'{name}' must be a string.")
    for name in ("metadata", "logit_bias"):
        if body.get(name) is not None and not isinstance(body[name], dict):
            raise bad_request(name, f"'{name}' must be an object.")
    for name in ("logprobs", "parallel_tool_calls", "store"):
        if body.get(name) is not None and not isinstance(body[name], bool):
            raise bad_request(name, f"'{name}' must be a boolean.")
    top_logprobs = body.get("top_logprobs")
    if top_logprobs is not None and (not is_int(top_logprobs) or not 0 <= top_logprobs <= 20):
        raise bad_request("top_logprobs", "'top_logprobs' must be an integer between 0 and 20.")
    return n if n is not None else 1


def parse_chat_request(data: Any, limits: Limits) -> LlmRequest:
    """Check a decoded body; raises ``ApiError`` (400) naming the first bad field."""
    if not isinstance(data, dict):
        raise bad_request(None, "The request body must be a JSON object.")
    for name in _INTEGER_FIELDS:
        v = data.get(name)
        # JSON has one number type, and JSON Schema (our OpenAPI) counts 8.0 as the
        # integer 8: accept it, and forward it as 8 to upstreams that want an int.
        if isinstance(v, float) and v.is_integer() and abs(v) < 2**63:
            data[name] = int(v)
    model = data.get("model")
    if model is None:
        raise bad_request("model", "Missing required parameter: 'model'.")
    if not isinstance(model, str) or not model.strip() or len(model) > MAX_MODEL_CHARS:
        raise bad_request("model", "'model' must be a non-empty string.")
    last_user, system, turns, chars, extra, images = _check_messages(data.get("messages"), limits)
    stream = data.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise bad_request("stream", "'stream' must be a boolean.")
    opts = data.get("stream_options")
    include_usage = False
    if opts is not None:
        if not isinstance(opts, dict):
            raise bad_request("stream_options", "'stream_options' must be an object.")
        iu = opts.get("include_usage")
        if iu is not None and not isinstance(iu, bool):
            raise bad_request(
                "stream_options.include_usage", "'stream_options.include_usage' must be a boolean."
            )
        include_usage = bool(iu)
    _number(data, "temperature", 0, 2)
    _number(data, "top_p", 0, 1)
    _number(data, "presence_penalty", -2, 2)
    _number(data, "frequency_penalty", -2, 2)
    max_tokens = _max_tokens(data, limits)
    has_tools = _check_tools(data.get("tools"))
    n = _check_misc(data, limits)
    rf = data.get("response_format")
    body = {k: v for k, v in data.items() if k in KNOWN_FIELDS}
    # Definitions the upstream bills as prompt: tool schemas (and the legacy functions),
    # the tool choice, a JSON schema.
    for name in ("tools", "functions", "tool_choice"):
        if body.get(name) is not None:
            extra += json_tokens(body[name])
    if isinstance(rf, dict) and rf.get("type") == "json_schema":
        extra += json_tokens(rf)
    return LlmRequest(
        body=body,
        model=model.strip(),
        stream=bool(stream),
        include_usage=include_usage,
        max_tokens=max_tokens,
        n=n,
        has_tools=has_tools,
        json_mode=isinstance(rf, dict) and rf.get("type") in ("json_object", "json_schema"),
        last_user_text=last_user,
        system_text=system,
        turns=turns,
        prompt_chars=chars,
        est_extra_tokens=extra,
        has_images=images,
    )


def parse_body(raw: bytes, limits: Limits) -> LlmRequest:
    return parse_chat_request(decode_json(raw), limits)


__all__ = ["ApiError", "Limits", "decode_json", "parse_body", "parse_chat_request"]
