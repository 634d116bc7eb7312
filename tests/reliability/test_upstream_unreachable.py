"""An upstream that refuses connections is a connection failure, not a timeout.

The SDK's aiohttp transport reports a refused connect as ``httpx2.ConnectTimeout``; the
orchestrator used to pass that on as 504 "did not answer in time" with
``error_class="timeout"``. A refused upstream must read as a bad gateway (502) counted
under ``connection``, then, once the circuits open, fail at once with 503 and
Retry-After; and a genuinely slow upstream must still count as a timeout.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx2
import pytest

from tests.reliability.common import AUTH, CHAT, assert_openai_error, delta, fault, scrape
from tools.stack import Stack, free_port

pytestmark = pytest.mark.integration

BOUND = 10.0  # a generous "does not hang"
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}
ERRORS = "tollgate_llm_upstream_errors_total"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(
        log_dir=tmp_path_factory.mktemp("unreachable"),
        sim_env={"TOLLGATE_SIM_LATENCY_SCALE": "0"},
    )
    try:
        s.start_sim()
        s.start_router()
        s.start_cache()
        yield s
    finally:
        s.stop()


def test_a_refused_upstream_is_a_502_then_fails_fast(stack: Stack) -> None:
    port = free_port()
    dead = f"http://127.0.0.1:{free_port()}/v1"
    stack.start_orchestrator(
        "refused", port, free_port(), TOLLGATE_ORCHESTRATOR_UPSTREAM_BASE_URL=dead
    )
    base = f"http://127.0.0.1:{port}"
    before = scrape(stack.metrics_url(base))
    seen = []
    with httpx2.Client(timeout=30) as c:
        # Each request tries every model of the chain (a pinned model, then its route's
        # chain, which crosses vendors): enough requests to open every one's circuit.
        for _ in range(12):
            started = time.monotonic()
            r = c.post(base + CHAT, json=BODY, headers=AUTH)
            assert time.monotonic() - started < BOUND
            err = assert_openai_error(r.status_code, r.headers, r.content)
            seen.append((r.status_code, err["code"]))
            if seen[-1] == (503, "upstream_unavailable"):
                break
    assert seen[0] == (502, "upstream_error")
    assert (503, "upstream_unavailable") in seen  # the circuits opened: no more attempts
    after = scrape(stack.metrics_url(base))
    assert delta(before, after, ERRORS, error_class="connection") >= 2
    assert delta(before, after, ERRORS, error_class="timeout") == 0


def test_a_slow_upstream_is_still_a_timeout(stack: Stack) -> None:
    port = free_port()
    stack.start_orchestrator(
        "slow",
        port,
        free_port(),
        TOLLGATE_ORCHESTRATOR_UPSTREAM_TIMEOUT_SECONDS="0.5",
        TOLLGATE_ORCHESTRATOR_RETRY_TOTAL_ATTEMPTS="1",
    )
    base = f"http://127.0.0.1:{port}"
    fault(stack, {"model": "gpt-4o-mini", "status": 200, "delay_ms": 3000})
    before = scrape(stack.metrics_url(base))
    with httpx2.Client(timeout=30) as c:
        r = c.post(base + CHAT, json=BODY, headers=AUTH)
    err = assert_openai_error(r.status_code, r.headers, r.content, expect_status=504)
    assert err["code"] == "timeout"
    after = scrape(stack.metrics_url(base))
    assert delta(before, after, ERRORS, error_class="timeout") == 1
    assert delta(before, after, ERRORS, error_class="connection") == 0
