"""Fault parsing and queueing, settings and the latency table."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tollgate_common.config import ConfigError, load_settings
from tollgate_simulator.config import (
    DEFAULT_PROFILE,
    LatencyProfile,
    LatencyTable,
    SimSettings,
    load_latency_file,
)
from tollgate_simulator.faults import (
    FaultError,
    FaultQueue,
    fault_error_body,
    parse_faults,
    retry_after_value,
)


def faults(*items: dict[str, object]) -> FaultQueue:
    q = FaultQueue()
    q.add(parse_faults(orjson.dumps(list(items))))
    return q


def test_fault_consumed_by_count_then_gone() -> None:
    q = faults({"model": "a", "status": 429, "count": 2})
    assert q.take("b") is None
    assert [f.status for f in (q.take("a"), q.take("a")) if f] == [429, 429]
    assert q.take("a") is None and len(q) == 0


def test_queued_faults_apply_in_order_and_star_matches_any_model() -> None:
    q = faults(
        {"model": "a", "status": 500}, {"model": "*", "status": 503}, {"model": "a", "status": 429}
    )
    assert [getattr(q.take("a"), "status", None) for _ in range(4)] == [500, 503, 429, None]
    q = faults({"model": "*", "status": 503, "count": 2})
    assert q.take("x") and q.take("y") and q.take("z") is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"status": 302}, "status"),
        ({"status": 429, "mid_stream_error": True}, "status"),
        ({"model": "a"}, "status"),  # 200 without a delay does nothing
        ({"status": 429, "count": 0}, "count"),
        ({"status": 429, "delay_ms": -1}, "delay_ms"),
        ({"status": 429, "retry_afterr": 1}, "retry_afterr"),
    ],
)
def test_bad_faults_name_the_field(body: dict[str, object], field: str) -> None:
    with pytest.raises(FaultError, match=field):
        parse_faults(orjson.dumps(body))
    with pytest.raises(FaultError, match=r"\[1\]"):
        parse_faults(orjson.dumps([{"status": 500}, body]))


def test_fault_error_body_is_openai_shaped() -> None:
    (f,) = parse_faults(b'{"status": 429, "code": "insufficient_quota"}')
    err = orjson.loads(fault_error_body(f))["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["code"] == "insufficient_quota"
    (f,) = parse_faults(b'{"status": 503}')
    assert orjson.loads(fault_error_body(f))["error"]["type"] == "server_error"
    assert retry_after_value(2.0) == b"2" and retry_after_value(0.5) == b"0.5"


@pytest.mark.parametrize(
    ("fault", "type_"),
    [
        ({"status": 429}, "rate_limit_error"),
        ({"status": 529}, "overloaded_error"),
        ({"status": 502}, "api_error"),  # no Anthropic type of its own: the 5xx default
        ({"status": 418}, "invalid_request_error"),
        ({"status": 402, "type": "billing_error", "message": "Top up."}, "billing_error"),
    ],
)
def test_fault_error_body_in_anthropics_shape(fault: dict[str, object], type_: str) -> None:
    (f,) = parse_faults(orjson.dumps(fault))
    body = orjson.loads(fault_error_body(f, anthropic=True))
    assert body == {"type": "error", "error": {"type": type_, "message": body["error"]["message"]}}
    assert body["error"]["message"] == fault.get("message", body["error"]["message"])


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOLLGATE_SIM_LATENCY_SCALE", "0")
    monkeypatch.setenv("TOLLGATE_SIM_MODELS", "gpt-4o, m2")
    s = load_settings(SimSettings, "simulator")
    assert s.latency_scale == 0 and s.models == ["gpt-4o", "m2"] and s.port == 8090
    monkeypatch.setenv("TOLLGATE_SIM_MODELS", '["a"]')
    assert load_settings(SimSettings, "simulator").models == ["a"]
    monkeypatch.setenv("TOLLGATE_SIM_LATENCY_SCALE", "-1")
    with pytest.raises(ConfigError, match="TOLLGATE_SIM_LATENCY_SCALE"):
        load_settings(SimSettings, "simulator")


def test_latency_table_file_overrides_builtins(tmp_path: Path) -> None:
    builtin = LatencyTable()
    assert builtin.profile("gpt-4.1-nano").fixed_ms < builtin.profile("gpt-4o").fixed_ms
    assert builtin.profile("something-else") == DEFAULT_PROFILE
    path = tmp_path / "lat.yaml"
    path.write_text("gpt-4o: {fixed_ms: 5, per_token_ms: 0}\n'*': {fixed_ms: 1, per_token_ms: 1}\n")
    table = LatencyTable(load_latency_file(path))
    assert table.profile("gpt-4o") == LatencyProfile(fixed_ms=5, per_token_ms=0)
    assert table.profile("other") == LatencyProfile(fixed_ms=1, per_token_ms=1)
    path.write_text("gpt-4o: {fixed_ms: -5, per_token_ms: 0}\n")
    with pytest.raises(ConfigError, match=r"gpt-4o.*fixed_ms"):
        load_latency_file(path)
