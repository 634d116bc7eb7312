"""The orchestrator as users meet it: real processes, the official openai SDK as the client.

One stack (simulator, router, cache, orchestrator) serves the module; a second
orchestrator with a hair-trigger breaker shares it for the breaker test. Faults are
injected into the simulator, which is reset before each test.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import httpx2
import openai
import orjson
import pytest
from openai import AsyncOpenAI
from prometheus_client.parser import text_string_to_metric_families

from tollgate.orchestrator.v1 import orchestrator_pb2, orchestrator_pb2_grpc
from tollgate_common.policy import load_policy
from tools.stack import DEV_KEY, Stack, free_port

pytestmark = pytest.mark.integration

POLICY = load_policy()
CODE_PROMPT = "Write a Python function that parses a CSV file and returns the rows as dicts."
SMALL_TALK = "hi! how are you today?"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("orch-stack")
    latency = logs / "latency.yaml"
    # gpt-4o streams slowly so a test can leave in the middle of an answer.
    latency.write_text("gpt-4o: {fixed_ms: 0, per_token_ms: 40}\n")
    s = Stack(log_dir=logs, sim_env={"TOLLGATE_SIM_LATENCY_FILE": str(latency)})
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def breaker_url(stack: Stack) -> str:
    port = free_port()
    stack.start_orchestrator(
        name="orchestrator-breaker",
        http_port=port,
        grpc_port=free_port(),
        TOLLGATE_ORCHESTRATOR_BREAKER_CONSECUTIVE_FAILURES="2",
        TOLLGATE_ORCHESTRATOR_BREAKER_COOLDOWN_SECONDS="60",
        TOLLGATE_ORCHESTRATOR_RETRY_MAX_ATTEMPTS="1",
    )
    return f"http://127.0.0.1:{port}"


def sim(stack: Stack, path: str, body: Any = None) -> Any:
    data = None if body is None else orjson.dumps(body)
    req = urllib.request.Request(
        stack.sim_url + path,
        data=data,
        method="POST" if body is not None or path == "/_sim/reset" else "GET",
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        return orjson.loads(resp.read() or b"{}")


def calls(stack: Stack, model: str) -> int:
    return int(sim(stack, "/_sim/stats")["calls"].get(model, 0))


@pytest.fixture(autouse=True)
def reset_sim(stack: Stack) -> None:
    sim(stack, "/_sim/reset")


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[AsyncOpenAI]:
    c = AsyncOpenAI(base_url=stack.base_url + "/v1", api_key=DEV_KEY, max_retries=0, timeout=30)
    yield c
    await c.close()


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``url`` is an orchestrator's metrics URL (``Stack.metrics_url``), off its API port."""
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **match: str
) -> float:
    return sum(
        v
        for (n, labels), v in samples.items()
        if n == name and all(dict(labels).get(k) == want for k, want in match.items())
    )


def msgs(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


async def test_auto_names_model_and_intent_and_splits_tiers(client: AsyncOpenAI) -> None:
    code = await client.chat.completions.with_raw_response.create(
        model="auto", messages=msgs(CODE_PROMPT)
    )
    chat = await client.chat.completions.with_raw_response.create(
        model="auto", messages=msgs(SMALL_TALK)
    )
    assert code.parse().choices[0].message.content
    assert code.headers["x-tollgate-intent"] == "code"
    assert chat.headers["x-tollgate-intent"] == "chat"
    assert code.headers["x-tollgate-tier"] != chat.headers["x-tollgate-tier"]
    for r, intent in ((code, "code"), (chat, "chat")):
        tier = r.headers["x-tollgate-tier"]
        assert r.headers["x-tollgate-model"] == POLICY.routes[intent][tier][0]
        assert float(r.headers["x-tollgate-cost-usd"]) > 0
        assert r.headers["x-request-id"]


async def test_same_temperature_zero_request_twice_is_a_free_hit(
    stack: Stack, client: AsyncOpenAI
) -> None:
    req: dict[str, Any] = {
        "model": "auto",
        "messages": msgs("Name three prime numbers."),
        "temperature": 0,
    }
    first = await client.chat.completions.with_raw_response.create(**req)
    model = first.headers["x-tollgate-model"]
    assert first.headers["x-tollgate-cache"] == "miss"
    before = calls(stack, model)
    second = await client.chat.completions.with_raw_response.create(**req)
    assert second.headers["x-tollgate-cache"] == "hit"
    assert second.headers["x-tollgate-cost-usd"] == "0"
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content
    assert calls(stack, model) == before


async def test_streaming_delivers_chunks_with_usage_and_replays_from_cache(
    stack: Stack, client: AsyncOpenAI
) -> None:
    req: dict[str, Any] = {
        "model": "auto",
        "messages": msgs("Summarize the plot of a heist film in a few sentences."),
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }

    async def run() -> tuple[dict[str, str], list[Any]]:
        raw = await client.chat.completions.with_raw_response.create(**req)
        return dict(raw.headers), [c async for c in raw.parse()]

    headers, chunks = await run()
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len([c for c in chunks if c.choices]) > 3 and text
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == 1 and usage_chunks[0].usage.completion_tokens > 0
    assert usage_chunks[0].model_extra["x_tollgate_cost_usd"] > 0
    assert headers["x-tollgate-cache"] == "miss"
    model = headers["x-tollgate-model"]
    before = calls(stack, model)
    headers2, chunks2 = await run()
    assert headers2["x-tollgate-cache"] == "hit"
    assert "".join(c.choices[0].delta.content or "" for c in chunks2 if c.choices) == text
    assert len([c for c in chunks2 if c.choices]) > 3  # replayed as chunks, not one blob
    assert calls(stack, model) == before

    # Without include_usage the client gets no usage chunk, though tollgate asked upstream.
    plain = {**req, "temperature": 0.7}
    del plain["stream_options"]
    stream = await client.chat.completions.create(**plain)
    plain_chunks = [c async for c in stream]
    assert plain_chunks and all(c.usage is None for c in plain_chunks)


async def test_errors_are_openai_shaped(stack: Stack, client: AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as nf:
        await client.chat.completions.create(model="gpt-17-ultra", messages=msgs("hi"))
    assert nf.value.code == "model_not_found"
    assert nf.value.body["param"] == "model"  # type: ignore[index]
    for key in ("sk-wrong", ""):
        bad = AsyncOpenAI(base_url=stack.base_url + "/v1", api_key=key or "x", max_retries=0)
        headers = {} if key else {"Authorization": ""}
        with pytest.raises(openai.AuthenticationError) as ae:
            await bad.chat.completions.create(
                model="auto", messages=msgs("hi"), extra_headers=headers
            )
        assert ae.value.code == "invalid_api_key"
        await bad.close()
    async with httpx2.AsyncClient() as h:
        resp = await h.post(
            stack.base_url + "/v1/chat/completions",
            content=b'{"model": "auto", "messages": [',
            headers={"authorization": f"Bearer {DEV_KEY}"},
        )
    assert resp.status_code == 400
    assert resp.json()["error"]["type"] == "invalid_request_error"
    assert resp.json()["error"]["param"] is None
    assert resp.headers["x-request-id"]


async def test_429_with_retry_after_is_retried_then_succeeds(
    stack: Stack, client: AsyncOpenAI
) -> None:
    sim(
        stack,
        "/_sim/faults",
        {"model": "gpt-4.1-mini", "status": 429, "count": 1, "retry_after": 1},
    )
    before = scrape(stack.orchestrator_metrics_url)
    r = await client.chat.completions.with_raw_response.create(
        model="gpt-4.1-mini", messages=msgs("hello")
    )
    assert r.headers["x-tollgate-model"] == "gpt-4.1-mini"  # retried, not fallen back
    assert calls(stack, "gpt-4.1-mini") == 2
    after = scrape(stack.orchestrator_metrics_url)
    name = "tollgate_llm_retries_total"
    assert total(after, name, reason="rate_limit") - total(before, name, reason="rate_limit") == 1


async def test_fallback_after_500s_on_the_primary(stack: Stack, client: AsyncOpenAI) -> None:
    sim(stack, "/_sim/faults", {"model": "gpt-4.1", "status": 500, "count": 5})
    r = await client.chat.completions.with_raw_response.create(
        model="gpt-4.1", messages=msgs(CODE_PROMPT)
    )
    served = r.headers["x-tollgate-model"]
    assert served != "gpt-4.1"
    assert r.parse().choices[0].message.content
    assert calls(stack, "gpt-4.1") == 2  # the attempts per model, then the next in the chain
    assert calls(stack, served) == 1
    fallbacks = total(
        scrape(stack.orchestrator_metrics_url),
        "tollgate_llm_fallbacks_total",
        from_model="gpt-4.1",
        to_model=served,
        reason="server_error",
    )
    assert fallbacks >= 1


async def test_upstream_400_passes_through_without_retry(stack: Stack, client: AsyncOpenAI) -> None:
    sim(stack, "/_sim/faults", {"model": "gpt-4o-mini", "status": 400, "count": 1})
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(model="gpt-4o-mini", messages=msgs("hello"))
    assert info.value.body["type"] == "invalid_request_error"  # type: ignore[index]
    assert calls(stack, "gpt-4o-mini") == 1


async def test_breaker_opens_and_skips_the_model(stack: Stack, breaker_url: str) -> None:
    sim(stack, "/_sim/faults", {"model": "gpt-4.1-nano", "status": 500, "count": 50})
    c = AsyncOpenAI(base_url=breaker_url + "/v1", api_key=DEV_KEY, max_retries=0)
    served = []
    for _ in range(5):
        r = await c.chat.completions.with_raw_response.create(
            model="gpt-4.1-nano", messages=msgs(SMALL_TALK)
        )
        served.append(r.headers["x-tollgate-model"])
    await c.close()
    assert "gpt-4.1-nano" not in served
    assert calls(stack, "gpt-4.1-nano") == 2  # two failures opened it; then it was skipped
    m = scrape(stack.metrics_url(breaker_url))
    labels = (("model", "gpt-4.1-nano"), ("provider", "openai"))
    assert m[("tollgate_circuit_breaker_state", labels)] == 2
    assert m[("tollgate_circuit_breaker_opens_total", labels)] == 1


async def test_mid_stream_failure_ends_with_an_error_event(
    stack: Stack, client: AsyncOpenAI
) -> None:
    sim(
        stack, "/_sim/faults", {"model": "gpt-4o-mini", "mid_stream_error": True, "after_chunks": 2}
    )
    async with httpx2.AsyncClient(timeout=30) as h:
        resp = await h.post(
            stack.base_url + "/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": msgs(SMALL_TALK), "stream": True},
            headers={"authorization": f"Bearer {DEV_KEY}"},
        )
    assert resp.status_code == 200  # committed before the failure
    events = [e for e in resp.text.split("\n\n") if e.startswith("data: ")]
    assert len(events) >= 2
    assert orjson.loads(events[-1][6:])["error"]["code"] == "upstream_stream_error"
    assert "data: [DONE]" not in resp.text
    assert calls(stack, "gpt-4o-mini") == 1  # never retried once bytes reached the client
    with pytest.raises(openai.APIError):  # the SDK sees the error, not a clean end
        sim(stack, "/_sim/faults", {"model": "gpt-4o-mini", "mid_stream_error": True})
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", messages=msgs(SMALL_TALK), stream=True
        )
        async for _ in stream:
            pass


async def test_client_disconnect_mid_stream_stops_the_upstream(stack: Stack) -> None:
    before = scrape(stack.orchestrator_metrics_url)
    async with httpx2.AsyncClient(timeout=30) as h:  # noqa: SIM117
        async with h.stream(
            "POST",
            stack.base_url + "/v1/chat/completions",
            json={
                "model": "gpt-4o",
                "messages": msgs("Tell me a long story about a dragon."),
                "stream": True,
            },
            headers={"authorization": f"Bearer {DEV_KEY}"},
        ) as resp:
            assert resp.status_code == 200
            got = 0
            async for _ in resp.aiter_bytes():
                got += 1
                if got == 2:
                    break  # leave in the middle of the answer
    name = "tollgate_llm_streams_total"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        after = scrape(stack.orchestrator_metrics_url)
        if total(after, name, outcome="client_disconnect") > total(
            before, name, outcome="client_disconnect"
        ):
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("the orchestrator did not notice the client leaving")
    assert total(after, "tollgate_llm_requests_in_flight") == 0
    llm = total(after, "tollgate_llm_requests_total", model="gpt-4o", outcome="cancelled")
    assert llm >= 1


async def test_grpc_complete_and_its_statuses(stack: Stack) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.ports.orch_grpc}") as ch:
        stub = orchestrator_pb2_grpc.OrchestratorStub(ch)
        body = orjson.dumps({"model": "auto", "messages": msgs(SMALL_TALK)})
        auth = (("authorization", f"Bearer {DEV_KEY}"),)
        resp = await stub.Complete(
            orchestrator_pb2.CompleteRequest(request_json=body), metadata=auth, timeout=10
        )
        assert orjson.loads(resp.response_json)["choices"]
        assert resp.intent == "chat" and resp.model and resp.cost_usd > 0
        assert resp.cache == "bypass" and resp.request_id
        cases = [
            (body, (), grpc.StatusCode.UNAUTHENTICATED),
            (b"{nope", auth, grpc.StatusCode.INVALID_ARGUMENT),
            (
                orjson.dumps({"model": "nope", "messages": msgs("x")}),
                auth,
                grpc.StatusCode.NOT_FOUND,
            ),
        ]
        for raw, md, code in cases:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Complete(
                    orchestrator_pb2.CompleteRequest(request_json=raw), metadata=md, timeout=10
                )
            assert info.value.code() == code
            assert "message" in orjson.loads(info.value.details() or "{}")["error"]


async def test_cost_and_token_counters_match_what_clients_were_told(
    stack: Stack, client: AsyncOpenAI
) -> None:
    before = scrape(stack.orchestrator_metrics_url)
    told_cost = 0.0
    told = {"prompt": 0, "completion": 0}
    for i, text in enumerate((SMALL_TALK, CODE_PROMPT, "Translate 'good night' to German.")):
        r = await client.chat.completions.with_raw_response.create(
            model="auto", messages=msgs(f"{text} ({i})")
        )
        told_cost += float(r.headers["x-tollgate-cost-usd"])
        usage = r.parse().usage
        assert usage is not None
        told["prompt"] += usage.prompt_tokens
        told["completion"] += usage.completion_tokens
        stream = await client.chat.completions.create(
            model="auto",
            messages=msgs(f"{text} [stream {i}]"),
            stream=True,
            stream_options={"include_usage": True},
        )
        async for chunk in stream:
            if chunk.usage is not None:
                told_cost += chunk.model_extra["x_tollgate_cost_usd"]  # type: ignore[index]
                told["prompt"] += chunk.usage.prompt_tokens
                told["completion"] += chunk.usage.completion_tokens
    after = scrape(stack.orchestrator_metrics_url)
    name = "tollgate_llm_cost_usd_total"
    assert total(after, name) - total(before, name) == pytest.approx(told_cost, abs=1e-9)
    for kind, n in told.items():
        name = "tollgate_llm_tokens_total"
        assert total(after, name, type=kind) - total(before, name, type=kind) == n


def test_one_worker_counts_every_request_on_every_scrape(stack: Stack) -> None:
    """One uvicorn worker per process (server.py says why): no scrape undercounts."""
    name = "tollgate_http_requests_total"
    before = total(scrape(stack.orchestrator_metrics_url), name, route="/healthz")
    for _ in range(25):
        urllib.request.urlopen(stack.base_url + "/healthz", timeout=5).close()
    url = stack.orchestrator_metrics_url
    seen = {total(scrape(url), name, route="/healthz") - before for _ in range(5)}
    assert seen == {25}


def test_every_metrics_endpoint_answers(stack: Stack) -> None:
    with urllib.request.urlopen(stack.orchestrator_metrics_url, timeout=5) as resp:
        text = resp.read().decode()
    for needle in (
        "http_requests_total",
        "cost",
        "tokens",
        "gen_ai_client_token_usage",
        "grpc_client_handled_total",
        "grpc_server_started_total",
        "tollgate_build_info",
    ):
        assert needle in text, needle
    assert 'tollgate_circuit_breaker_state{model="gpt-4o-mini",provider="openai"}' in text
    assert "sk-tollgate" not in text
    for port in (stack.ports.router_metrics, stack.ports.cache_metrics):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            assert resp.status == 200
