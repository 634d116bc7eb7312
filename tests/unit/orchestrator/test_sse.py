"""SSE helpers: line splitting, assembling a stream into a completion, cache replay."""

from __future__ import annotations

from typing import Any

import orjson

from tollgate_orchestrator.sse import (
    COST_FIELD,
    DONE_EVENT,
    Assembler,
    LineSplitter,
    data_of,
    error_event,
    replay,
)


def test_splitter_handles_partial_lines_and_crlf() -> None:
    s = LineSplitter()
    assert s.feed(b'data: {"a"') == []
    assert s.feed(b": 1}\r\n\r\ndata: [DO") == [b'data: {"a": 1}', b""]
    assert s.feed(b"NE]\n\n") == [b"data: [DONE]", b""]
    assert s.pending == b""


def test_data_of() -> None:
    assert data_of(b"data: x") == b"x"
    assert data_of(b"data:x") == b"x"
    assert data_of(b": keepalive") is None
    assert data_of(b"event: ping") is None


def chunk(delta: dict[str, Any], finish=None, index=0, usage=None) -> dict[str, Any]:
    c = {
        "id": "c1",
        "created": 5,
        "model": "m",
        "object": "chat.completion.chunk",
        "choices": [{"index": index, "delta": delta, "finish_reason": finish}],
    }
    if usage is not None:
        c = {**c, "choices": [], "usage": usage}
    return c


def test_assembler_rebuilds_text_and_tool_calls() -> None:
    a = Assembler()
    a.add(chunk({"role": "assistant", "content": ""}))
    a.add(chunk({"content": "Hel"}))
    a.add(chunk({"content": "lo"}))
    a.add(
        chunk(
            {
                "tool_calls": [
                    {"index": 0, "id": "t1", "function": {"name": "f", "arguments": '{"x"'}}
                ]
            }
        )
    )
    a.add(chunk({"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]}))
    a.add(chunk({}, finish="tool_calls"))
    a.add(chunk({}, usage={"prompt_tokens": 3, "completion_tokens": 2}))
    c = a.completion()
    assert c["id"] == "c1" and c["object"] == "chat.completion" and c["model"] == "m"
    msg = c["choices"][0]["message"]
    assert msg["content"] == "Hello"
    assert msg["tool_calls"] == [
        {"id": "t1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}
    ]
    assert c["choices"][0]["finish_reason"] == "tool_calls"
    assert c["usage"] == {"prompt_tokens": 3, "completion_tokens": 2}


def test_replay_round_trips_through_the_assembler() -> None:
    text = "The quick brown fox jumps over the lazy dog. " * 8
    stored = {
        "id": "c9",
        "created": 7,
        "model": "gpt-4o-mini",
        "object": "chat.completion",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 80},
    }
    events = replay(stored, include_usage=True, cost_usd=0.0, piece_chars=32)
    assert events[-1] == DONE_EVENT
    payloads = [orjson.loads(data_of(e.rstrip(b"\n")) or b"") for e in events[:-1]]
    assert len(payloads) > 5  # replayed as several chunks, not one blob
    assert all(p["object"] == "chat.completion.chunk" for p in payloads)
    assert payloads[-1]["usage"] == stored["usage"] and payloads[-1][COST_FIELD] == 0.0
    a = Assembler()
    for p in payloads:
        a.add(p)
    assert a.completion()["choices"][0]["message"]["content"] == text
    no_usage = replay(stored, include_usage=False, cost_usd=0.0)
    assert not any(b'"usage"' in e for e in no_usage)


def test_error_event_is_openai_shaped() -> None:
    ev = error_event("broke", "server_error", None, 0.5)
    body = orjson.loads(data_of(ev.rstrip(b"\n")) or b"")
    assert body["error"] == {
        "message": "broke",
        "type": "server_error",
        "param": None,
        "code": None,
    }
    assert body[COST_FIELD] == 0.5
