"""Gemini's chat quirks repaired by its vendor's fixup leg (providers/gemini.py)."""

from __future__ import annotations

from typing import Any

import orjson
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from tollgate_common.policy import Provider
from tollgate_orchestrator.dialects import WIRES
from tollgate_orchestrator.providers import gemini
from tollgate_orchestrator.providers.vendors import VENDORS
from tollgate_orchestrator.sse import DONE
from tollgate_orchestrator.types import CHAT_API
from tollgate_orchestrator.validation import Limits, parse_body

FIX = gemini.GeminiFixup()
SIGNATURE = {"google": {"thought_signature": "c2lnbmF0dXJl"}}


def request(**fields: Any) -> Any:
    body = {"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}], **fields}
    return parse_body(orjson.dumps(body), Limits())


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> bytes:
    choice: dict[str, Any] = {"index": 0, "delta": delta or {}, "finish_reason": finish}
    head = {
        "id": "g1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gemini-2.5-flash",
    }
    return orjson.dumps({**head, "choices": [choice], **extra})


def run(payloads: list[bytes]) -> list[bytes]:
    s = FIX.stream(request(stream=True))
    return [out for p in payloads for out in s.feed(p)]


def chunks(out: list[bytes]) -> list[dict[str, Any]]:
    assert out[-1] == DONE
    return [orjson.loads(p) for p in out[:-1]]


def assembled(out: list[bytes]) -> Any:
    state = ChatCompletionStreamState()
    for c in chunks(out):
        state.handle_chunk(ChatCompletionChunk.model_validate(c))
    return state.get_final_completion()


USAGE = {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}
CALL = {
    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
    "extra_content": SIGNATURE,
}


def test_the_vendor_is_registered_with_bearer_auth_and_the_wires_own_path() -> None:
    v = VENDORS["gemini"]
    entry = Provider(
        type="gemini", base_url="https://generativelanguage.googleapis.com/v1beta/openai/"
    )
    headers = v.headers(entry, "k1")
    assert headers["Authorization"] == "Bearer k1" and "api-key" not in headers
    assert "Authorization" not in v.headers(entry, "")
    assert v.path(entry, WIRES[CHAT_API], "gemini-2.5-flash") == "chat/completions"
    fixup = v.fixup()
    assert fixup is not None and (fixup.source, fixup.target) == (CHAT_API, CHAT_API)


def test_stream_tool_call_and_stop_in_separate_chunks_ends_in_tool_calls() -> None:
    out = run(
        [
            chunk({"role": "assistant", "tool_calls": [CALL]}),
            chunk({}, "stop", usage=USAGE),
            DONE,
        ]
    )
    got = chunks(out)
    finishes = [c["choices"][0]["finish_reason"] for c in got if c["choices"]]
    assert finishes == [None, "tool_calls"]  # one finish, last, and the right one
    assert got[-1]["choices"] == [] and got[-1]["usage"] == USAGE  # OpenAI's usage chunk
    call = got[0]["choices"][0]["delta"]["tool_calls"][0]
    assert call["index"] == 0 and call["id"].startswith("call_") and call["type"] == "function"
    assert call["extra_content"] == SIGNATURE  # thought signatures untouched
    done = assembled(out)
    assert done.choices[0].finish_reason == "tool_calls"
    assert done.choices[0].message.tool_calls[0].function.name == "get_weather"


def test_calls_without_index_get_indexes_and_fragments_continue_the_last_call() -> None:
    second = {"id": "c2", "function": {"name": "get_time", "arguments": '{"tz":'}}
    out = run(
        [
            chunk({"tool_calls": [CALL, second]}),
            chunk({"tool_calls": [{"function": {"arguments": '"CET"}'}}]}),
            chunk({}, "stop"),
            DONE,
        ]
    )
    calls = assembled(out).choices[0].message.tool_calls
    assert [(c.function.name, c.function.arguments) for c in calls] == [
        ("get_weather", '{"city":"Paris"}'),
        ("get_time", '{"tz":"CET"}'),
    ]
    assert calls[1].id == "c2"  # an id the upstream sent is kept


def test_generated_ids_are_stable_and_match_the_whole_answer() -> None:
    a = run([chunk({"tool_calls": [CALL]}), chunk({}, "stop"), DONE])
    b = run([chunk({"tool_calls": [CALL]}), chunk({}, "stop"), DONE])
    ida = assembled(a).choices[0].message.tool_calls[0].id
    assert ida == assembled(b).choices[0].message.tool_calls[0].id
    whole = completion({"role": "assistant", "content": None, "tool_calls": [{"id": "", **CALL}]})
    fixed = orjson.loads(FIX.answer(whole, request()) or b"")
    assert fixed["choices"][0]["message"]["tool_calls"][0]["id"] == ida


def test_stop_stamped_on_every_chunk_is_sent_once_at_the_end() -> None:
    out = run([chunk({"content": "Hel"}, "stop"), chunk({"content": "lo"}, "stop"), DONE])
    got = chunks(out)
    assert [c["choices"][0]["finish_reason"] for c in got] == [None, None, "stop"]
    assert assembled(out).choices[0].message.content == "Hello"


def test_a_stream_without_a_finish_gets_none_made_up() -> None:
    got = chunks(run([chunk({"content": "cut"}), DONE]))
    assert [c["choices"][0]["finish_reason"] for c in got] == [None]


def test_length_and_errors_pass_and_untouched_chunks_keep_their_bytes() -> None:
    plain = chunk({"content": "x"})
    error = b'{"error":{"code":500,"message":"boom","status":"INTERNAL"}}'
    out = run([plain, chunk({"content": "y"}, "length"), error])
    assert out[0] == plain and out[-1] == error
    assert orjson.loads(out[1])["choices"][0]["finish_reason"] is None


def test_choices_without_index_get_theirs() -> None:
    bare = b'{"id":"g1","object":"chat.completion.chunk","choices":[{"delta":{"content":"a"}}]}'
    out = run([bare, DONE])
    assert orjson.loads(out[0])["choices"][0]["index"] == 0


def completion(message: dict[str, Any], finish: str = "stop") -> bytes:
    return orjson.dumps(
        {
            "id": "g1",
            "object": "chat.completion",
            "created": 1,
            "model": "gemini-2.5-flash",
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": USAGE,
        }
    )


def test_whole_answer_stop_with_tool_calls_becomes_tool_calls() -> None:
    raw = completion({"role": "assistant", "content": None, "tool_calls": [CALL]})
    fixed = FIX.answer(raw, request())
    assert fixed is not None
    parsed = ChatCompletion.model_validate_json(fixed)
    assert parsed.choices[0].finish_reason == "tool_calls"
    call = orjson.loads(fixed)["choices"][0]["message"]["tool_calls"][0]
    assert call["id"].startswith("call_") and call["extra_content"] == SIGNATURE
    assert WIRES[CHAT_API].answer(fixed) == WIRES[CHAT_API].answer(raw)  # usage intact


def test_whole_text_answer_passes_byte_for_byte_and_non_answers_are_none() -> None:
    raw = completion({"role": "assistant", "content": "hi"})
    assert FIX.answer(raw, request()) is raw
    assert FIX.answer(b"[1]", request()) is None
    assert FIX.answer(b"not json", request()) is None


def test_request_drops_openai_only_fields_gemini_refuses() -> None:
    req = request(store=True, metadata={"a": "b"}, user="u1", temperature=0.2)
    out = FIX.request(req)
    assert not {"store", "metadata", "user"} & set(out.body)
    assert out.body["temperature"] == 0.2 and out.api == CHAT_API
    assert "store" in req.body  # the caller's request is not changed
    plain = request()
    assert FIX.request(plain) is plain
