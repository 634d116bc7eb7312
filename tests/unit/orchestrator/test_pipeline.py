"""The pipeline over fakes: cost, retries, fallbacks, breakers, streams, budgets."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from tollgate_common.policy import cost_usd
from tollgate_orchestrator.accounting import Usage, format_cost, round_cost
from tollgate_orchestrator.config import BudgetSpec
from tollgate_orchestrator.dialects.chat import usage_of
from tollgate_orchestrator.errors import ApiError
from tollgate_orchestrator.retry import (
    CLIENT,
    MODEL_NOT_FOUND,
    RATE_LIMIT,
    SERVER,
    TIMEOUT,
    UNSUPPORTED,
    UPSTREAM_AUTH,
    Failure,
)
from tollgate_orchestrator.sse import COST_FIELD, data_of
from tollgate_orchestrator.types import Streamed, Whole
from tollgate_orchestrator.validation import Limits, parse_chat_request

from .fakes import POLICY, USAGE, Rig, headers, target


def request(**fields: Any):
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi there"}], **fields}
    return parse_chat_request(body, Limits())


def expected_cost(model: str) -> float:
    return round_cost(cost_usd(target(model).entry, 1000, 500, 200))


async def test_success_costs_usage_times_price_and_records_everything() -> None:
    rig = Rig(["gpt-4o-mini", "gpt-4.1-mini"])
    reply = await rig.handle(request(), "t", "rid-1")
    assert isinstance(reply, Whole)
    cost = expected_cost("gpt-4o-mini")
    assert headers(reply)["x-tollgate-model"] == "gpt-4o-mini"
    assert headers(reply)["x-tollgate-intent"] == "chat"
    assert headers(reply)["x-tollgate-cache"] == "bypass"
    assert float(headers(reply)["x-tollgate-cost-usd"]) == cost
    assert orjson.loads(reply.body)["model"] == "gpt-4o-mini"  # forwarded as sent
    llm = {
        "provider": "openai",
        "model": "gpt-4o-mini",
        "intent": "chat",
        "tenant": "t",
        "api": "chat",
    }
    assert rig.value("tollgate_llm_cost_usd_total", **llm) == cost
    for kind, n in (
        ("prompt", 1000),
        ("cached_prompt", 200),
        ("completion", 500),
        ("reasoning", 50),
    ):
        assert rig.value("tollgate_llm_tokens_total", **llm, type=kind) == n
    assert rig.value("tollgate_llm_requests_total", **llm, outcome="success") == 1
    baseline = cost_usd(target("gpt-4o").entry, 1000, 500, 200)
    assert rig.value("tollgate_savings_usd_total", source="routing", tenant="t", api="chat") == (
        pytest.approx(baseline - cost)
    )
    assert rig.total("gen_ai_client_token_usage_sum", gen_ai_token_type="input") == 1000
    assert rig.total("tollgate_gateway_overhead_seconds_count") == 1
    assert rig.value("tollgate_llm_requests_in_flight") == 0
    # The upstream got the upstream model id, no stream options, and nothing unknown.
    assert rig.upstream.payloads[0]["model"] == "gpt-4o-mini"
    assert "stream_options" not in rig.upstream.payloads[0]


async def test_explicit_model_earns_no_routing_savings() -> None:
    rig = Rig(["gpt-4o-mini"])
    await rig.handle(request(model="gpt-4o-mini"), "t", "r")
    assert rig.value("tollgate_savings_usd_total", source="routing", tenant="t", api="chat") == 0


def test_cost_formatting_is_exact_and_plain() -> None:
    assert format_cost(0.0) == "0"
    c = round_cost(0.1 + 0.2)
    assert float(format_cost(c)) == c


def test_usage_tolerates_odd_upstream_shapes() -> None:
    assert usage_of(None) == Usage()
    assert usage_of({"prompt_tokens": "12", "completion_tokens": True}) == Usage()
    odd = {"prompt_tokens": 10, "completion_tokens": 4, "prompt_tokens_details": None}
    assert usage_of(odd) == Usage(prompt=10, completion=4)
    assert usage_of(USAGE) == Usage(prompt=1000, completion=500, cached=200, reasoning=50)


async def test_retries_a_500_then_succeeds() -> None:
    rig = Rig(["gpt-4o-mini", "gpt-4.1-mini"], {"gpt-4o-mini": [Failure(SERVER, 500)]})
    reply = await rig.handle(request(), "t", "r")
    assert isinstance(reply, Whole)
    assert headers(reply)["x-tollgate-model"] == "gpt-4o-mini"
    assert rig.upstream.attempts == {"gpt-4o-mini": 2}
    assert rig.total("tollgate_llm_retries_total", reason="server_error") == 1
    assert rig.total("tollgate_llm_upstream_errors_total", error_class="server_error") == 1


async def test_falls_back_after_repeated_failures() -> None:
    rig = Rig(
        ["gpt-4o-mini", "gpt-4.1-mini"],
        {"gpt-4o-mini": [Failure(SERVER, 503), Failure(TIMEOUT)]},
    )
    reply = await rig.handle(request(), "t", "r")
    assert isinstance(reply, Whole)
    assert headers(reply)["x-tollgate-model"] == "gpt-4.1-mini"
    assert float(headers(reply)["x-tollgate-cost-usd"]) == expected_cost("gpt-4.1-mini")
    assert rig.upstream.attempts == {"gpt-4o-mini": 2, "gpt-4.1-mini": 1}
    assert (
        rig.value(
            "tollgate_llm_fallbacks_total",
            from_model="gpt-4o-mini",
            to_model="gpt-4.1-mini",
            reason="timeout",
        )
        == 1
    )


async def test_long_retry_after_falls_back_at_once() -> None:
    rig = Rig(
        ["gpt-4o-mini", "gpt-4.1-mini"],
        {"gpt-4o-mini": [Failure(RATE_LIMIT, 429, retry_after=60)]},
        retry_after_cap_seconds=5,
    )
    reply = await asyncio.wait_for(rig.handle(request(), "t", "r"), 5)
    assert isinstance(reply, Whole)
    assert rig.upstream.attempts == {"gpt-4o-mini": 1, "gpt-4.1-mini": 1}


async def test_client_errors_pass_through_without_retry() -> None:
    body = {
        "error": {
            "message": "bad thing",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "None",
        }
    }
    rig = Rig(["gpt-4o-mini", "gpt-4.1-mini"], {"gpt-4o-mini": [Failure(CLIENT, 400, body=body)]})
    with pytest.raises(ApiError) as info:
        await rig.handle(request(), "t", "r")
    err = orjson.loads(info.value.body())["error"]
    assert info.value.status == 400
    assert err == {
        "message": "bad thing",
        "type": "invalid_request_error",
        "param": "messages",
        "code": None,
    }
    assert rig.upstream.attempts == {"gpt-4o-mini": 1}


@pytest.mark.parametrize(
    ("failure", "status", "code"),
    [
        (Failure(SERVER, 500), 502, "upstream_error"),
        (Failure(TIMEOUT), 504, "timeout"),
        (Failure(RATE_LIMIT, 429, retry_after=0.01), 429, "rate_limit_exceeded"),
    ],
)
async def test_exhausted_chain_is_a_clear_error(failure: Failure, status: int, code: str) -> None:
    rig = Rig(
        ["gpt-4o-mini", "gpt-4.1-mini"],
        {"gpt-4o-mini": [failure] * 5, "gpt-4.1-mini": [failure] * 5},
    )
    with pytest.raises(ApiError) as info:
        await rig.handle(request(), "t", "r")
    assert (info.value.status, info.value.code) == (status, code)
    assert sum(rig.upstream.attempts.values()) == rig.settings.retry_total_attempts
    if status == 429:
        assert info.value.headers["retry-after"] == "1"
    llm = {
        "provider": "openai",
        "model": "gpt-4.1-mini",
        "intent": "chat",
        "tenant": "t",
        "api": "chat",
    }
    assert rig.value("tollgate_llm_requests_total", **llm, outcome="error") == 1


# What a translation refuses (temperature 1.5 for Anthropic), as dispatch reports it.
REFUSAL = {
    "message": "`temperature`: at most 1",
    "type": "invalid_request_error",
    "param": "temperature",
    "code": None,
}


async def test_a_model_that_cannot_carry_the_request_falls_back_to_one_that_can() -> None:
    rig = Rig(
        ["gpt-4o-mini", "gpt-4.1-mini"],
        {"gpt-4o-mini": [Failure(UNSUPPORTED, 400, body=REFUSAL)]},
    )
    reply = await rig.handle(request(), "t", "r")
    assert isinstance(reply, Whole)
    assert headers(reply)["x-tollgate-model"] == "gpt-4.1-mini"
    assert rig.upstream.attempts == {"gpt-4o-mini": 1, "gpt-4.1-mini": 1}
    assert rig.total("tollgate_llm_fallbacks_total", reason="unsupported") == 1


async def test_when_no_model_can_carry_the_request_the_first_refusal_is_a_400() -> None:
    other = {**REFUSAL, "param": "model"}
    rig = Rig(
        ["gpt-4o-mini", "gpt-4.1-mini"],
        {
            "gpt-4o-mini": [Failure(UNSUPPORTED, 400, body=REFUSAL)],
            "gpt-4.1-mini": [Failure(UNSUPPORTED, 400, body=other)],
        },
    )
    with pytest.raises(ApiError) as info:
        await rig.handle(request(), "t", "r")
    assert info.value.status == 400
    assert orjson.loads(info.value.body())["error"]["param"] == "temperature"


@pytest.mark.parametrize(
    ("failure", "code"),
    [
        (Failure(UPSTREAM_AUTH, 401), "upstream_auth_error"),
        (Failure(UPSTREAM_AUTH, 403), "upstream_auth_error"),
        (Failure(MODEL_NOT_FOUND, 404), "upstream_model_not_found"),
    ],
)
async def test_upstream_auth_failures_fall_back_and_never_leak_the_provider_text(
    failure: Failure, code: str
) -> None:
    leaky = {
        "error": {
            "message": "Incorrect API key provided: sk-proj-****abcd. See https://platform.example/acct",
            "type": "invalid_request_error",
            "code": "invalid_api_key",
        }
    }
    f = Failure(failure.error_class, failure.status, body=leaky)
    # The first model's key is refused: the next model serves, without a retry on the first.
    rig = Rig(["gpt-4o-mini", "gpt-4.1-mini"], {"gpt-4o-mini": [f]})
    reply = await rig.handle(request(), "t", "r")
    assert isinstance(reply, Whole)
    assert headers(reply)["x-tollgate-model"] == "gpt-4.1-mini"
    assert rig.upstream.attempts == {"gpt-4o-mini": 1, "gpt-4.1-mini": 1}
    # Every model refused: a 502 that is the gateway's, never the tenant's invalid_api_key.
    rig = Rig(["gpt-4o-mini", "gpt-4.1-mini"], {"gpt-4o-mini": [f] * 5, "gpt-4.1-mini": [f] * 5})
    with pytest.raises(ApiError) as info:
        await rig.handle(request(), "t", "r")
    assert (info.value.status, info.value.code) == (502, code)
    body = info.value.body().decode()
    assert "sk-proj" not in body and "platform.example" not in body
    assert rig.upstream.attempts == {"gpt-4o-mini": 1, "gpt-4.1-mini": 1}


async def test_refused_keys_open_the_breaker() -> None:
    rig = Rig(
        ["gpt-4o-mini", "gpt-4.1-mini"],
        {"gpt-4o-mini": [Failure(UPSTREAM_AUTH, 401)] * 10},
        breaker_consecutive_failures=2,
    )
    for _ in range(3):
        reply = await rig.handle(request(), "t", "r")
        assert isinstance(reply, Whole)
    assert rig.upstream.attempts["gpt-4o-mini"] == 2  # then skipped while open
    labels = {"provider": "openai", "model": "gpt-4o-mini"}
    assert rig.value("tollgate_circuit_breaker_opens_total", **labels) == 1


async def test_breaker_opens_and_skips_the_model() -> None:
    fail = [Failure(SERVER, 500)] * 10
    rig = Rig(
        ["gpt-4o-mini", "gpt-4.1-mini"],
        {"gpt-4o-mini": fail},
        breaker_consecutive_failures=2,
        retry_max_attempts=1,
    )
    for _ in range(4):
        reply = await rig.handle(request(), "t", "r")
        assert isinstance(reply, Whole)
        assert headers(reply)["x-tollgate-model"] == "gpt-4.1-mini"
    assert rig.upstream.attempts["gpt-4o-mini"] == 2  # then skipped
    labels = {"provider": "openai", "model": "gpt-4o-mini"}
    assert rig.value("tollgate_circuit_breaker_state", **labels) == 2
    assert rig.value("tollgate_circuit_breaker_opens_total", **labels) == 1
    assert rig.total("tollgate_llm_upstream_errors_total", error_class="circuit_open") == 2
    # Every model open: a 503 with Retry-After at once.
    rig.upstream.script["gpt-4.1-mini"] = [Failure(SERVER, 500)] * 10
    for _ in range(2):
        with pytest.raises(ApiError):
            await rig.handle(request(), "t", "r")
    with pytest.raises(ApiError) as info:
        await rig.handle(request(), "t", "r")
    assert info.value.status == 503 and info.value.headers["retry-after"] == "1"


async def test_deadline_bounds_the_whole_request() -> None:
    rig = Rig(
        ["gpt-4o-mini", "gpt-4.1-mini"],
        {"gpt-4o-mini": [("sleep", 5)], "gpt-4.1-mini": [("sleep", 5)]},
        request_deadline_seconds=0.3,
    )
    with pytest.raises(ApiError) as info:
        await asyncio.wait_for(rig.handle(request(), "t", "r"), 4)
    assert info.value.status == 504


async def test_cache_hit_costs_nothing_and_counts_savings() -> None:
    rig = Rig(["gpt-4o-mini"])
    first = await rig.handle(request(temperature=0), "t", "r")
    assert isinstance(first, Whole) and first.meta.cache == "miss"
    await rig.pipeline.drain_background(1)
    second = await rig.handle(request(temperature=0), "t", "r")
    assert isinstance(second, Whole)
    assert headers(second)["x-tollgate-cache"] == "hit"
    assert headers(second)["x-tollgate-cost-usd"] == "0"
    assert second.body == first.body
    assert rig.upstream.attempts == {"gpt-4o-mini": 1}
    assert (
        rig.value("tollgate_savings_usd_total", source="cache", tenant="t", api="chat")
        == first.meta.cost
    )
    assert rig.value("tollgate_cache_results_total", result="hit", api="chat") == 1
    # Another tenant does not see the first tenant's entry.
    other = await rig.handle(request(temperature=0), "u", "r")
    assert isinstance(other, Whole) and other.meta.cache == "miss"
    # Cache down: bypass, still served.
    rig.cache.down = True
    down = await rig.handle(request(temperature=0), "t", "r")
    assert isinstance(down, Whole) and down.meta.cache == "bypass"
    assert rig.value("tollgate_cache_results_total", result="error", api="chat") == 1


def payloads(events: list[bytes]) -> list[Any]:
    return [data_of(e.rstrip(b"\n")) for e in events]


async def test_stream_forwards_chunks_and_hides_usage_unless_asked() -> None:
    rig = Rig(["gpt-4o-mini"])
    reply = await rig.handle(request(stream=True), "t", "r")
    assert isinstance(reply, Streamed)
    assert "x-tollgate-cost-usd" not in headers(reply)
    events = await rig.collect(reply)
    assert events[-1] == b"data: [DONE]\n\n"
    assert not any(b'"usage":{' in e for e in events)
    assert rig.upstream.payloads[0]["stream_options"] == {"include_usage": True}
    cost = expected_cost("gpt-4o-mini")
    llm = {
        "provider": "openai",
        "model": "gpt-4o-mini",
        "intent": "chat",
        "tenant": "t",
        "api": "chat",
    }
    assert rig.value("tollgate_llm_cost_usd_total", **llm) == cost
    assert rig.value("tollgate_llm_streams_total", outcome="completed") == 1

    reply = await rig.handle(request(stream=True, stream_options={"include_usage": True}), "t", "r")
    assert isinstance(reply, Streamed)
    usage_chunk = orjson.loads(payloads(await rig.collect(reply))[-2])
    assert usage_chunk["usage"] == USAGE and usage_chunk[COST_FIELD] == cost
    assert rig.value("tollgate_llm_requests_in_flight") == 0


async def test_stream_retries_before_first_byte_and_errors_after() -> None:
    rig = Rig(["gpt-4o-mini", "gpt-4.1-mini"], {"gpt-4o-mini": [Failure(SERVER, 500)]})
    reply = await rig.handle(request(stream=True), "t", "r")
    assert isinstance(reply, Streamed)
    assert (await rig.collect(reply))[-1] == b"data: [DONE]\n\n"
    assert rig.upstream.attempts == {"gpt-4o-mini": 2}

    rig.upstream.script["gpt-4o-mini"] = [("break", 3)]
    reply = await rig.handle(request(stream=True), "t", "r")
    assert isinstance(reply, Streamed)
    events = await rig.collect(reply)
    last = orjson.loads(payloads(events)[-1])
    assert last["error"]["code"] == "upstream_stream_error"
    assert not any(e == b"data: [DONE]\n\n" for e in events)
    assert rig.upstream.attempts == {"gpt-4o-mini": 3}  # no retry after the first byte
    assert rig.value("tollgate_llm_streams_total", outcome="error") == 1


async def test_stream_abandoned_by_the_client_is_closed_and_accounted() -> None:
    rig = Rig(["gpt-4o-mini"], budgets=[BudgetSpec(tenant="t", period="day", limit_usd=10)])
    reply = await rig.handle(request(stream=True), "t", "r")
    assert isinstance(reply, Streamed)
    it = reply.events
    await it.__anext__()
    await it.aclose()  # type: ignore[attr-defined]  # the client went away
    await rig.close(reply)
    assert rig.upstream.closed == 1
    assert rig.value("tollgate_llm_streams_total", outcome="client_disconnect") == 1
    assert rig.value("tollgate_llm_requests_in_flight") == 0
    spent = sum(rig.store.values.values())
    assert 0 < spent < 10**9  # an estimate of the partial stream, not the reservation


async def test_streamed_answer_is_cached_and_replays() -> None:
    rig = Rig(["gpt-4o-mini"])
    first = await rig.handle(request(stream=True, temperature=0), "t", "r")
    assert isinstance(first, Streamed)
    await rig.collect(first)
    await rig.pipeline.drain_background(1)
    again = await rig.handle(request(stream=True, temperature=0), "t", "r")
    assert isinstance(again, Streamed) and headers(again)["x-tollgate-cache"] == "hit"
    text = "".join(
        c["choices"][0]["delta"].get("content", "")
        for c in map(orjson.loads, payloads(await rig.collect(again))[:-1])
        if c.get("choices")
    )
    assert text == "".join(f"w{i} " for i in range(5))
    whole = await rig.handle(request(temperature=0), "t", "r")  # not streamed: same entry
    assert isinstance(whole, Whole) and whole.meta.cache == "hit"
    assert rig.upstream.attempts == {"gpt-4o-mini": 1}


async def test_budget_is_reserved_settled_and_released_on_failure() -> None:
    spec = BudgetSpec(tenant="t", period="day", limit_usd=100)
    rig = Rig(["gpt-4o-mini"], budgets=[spec])
    await rig.handle(request(), "t", "r")
    assert sum(rig.store.values.values()) == round(expected_cost("gpt-4o-mini") * 1e9)
    rig.upstream.script["gpt-4o-mini"] = [Failure(SERVER, 500)] * 5
    with pytest.raises(ApiError):
        await rig.handle(request(), "t", "r")
    assert sum(rig.store.values.values()) == round(expected_cost("gpt-4o-mini") * 1e9)


async def test_downgrade_budget_asks_the_router_for_the_cheapest_tier() -> None:
    spec = BudgetSpec(tenant="t", period="day", limit_usd=0, action="downgrade")
    rig = Rig(["gpt-4o-mini"], budgets=[spec])
    await rig.handle(request(), "t", "r")
    assert rig.router.calls[-1]["downgrade"] is True
    assert (
        rig.value("tollgate_budget_actions_total", tenant="t", period="day", action="downgrade")
        == 1
    )


def test_estimate_uses_the_explicit_model_or_the_baseline() -> None:
    rig = Rig(["gpt-4o-mini"])
    e = rig.pipeline
    cheap = e.estimate_usd(request(model="gpt-4.1-nano", max_tokens=100))
    auto = e.estimate_usd(request(max_tokens=100))
    assert 0 < cheap < auto
    assert auto == cost_usd(POLICY.models["gpt-4o"], request().est_prompt_tokens, 100)
