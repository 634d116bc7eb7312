"""Degraded modes with real processes: router and cache frozen or killed, budget store
refused or frozen. Each costs a bounded delay and is counted; none fails a request
unless the stated budget policy says so."""

from __future__ import annotations

import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import orjson
import pytest
from openai import OpenAI

from tollgate_common.policy import load_policy
from tools.stack import DEV_KEY, Stack, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

POLICY = load_policy()
BUDGET = orjson.dumps([{"tenant": "dev", "period": "day", "limit_usd": 100}]).decode()
BOUND = 5.0  # seconds: generous "does not hang"


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def metric(url: str, name: str, **labels: str) -> float:
    """A sum of samples from ``url``, an orchestrator's metrics URL (``Stack.metrics_url``)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = get(url)[1].decode()
    return sum(
        s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def chat(base: str, **extra: Any) -> Any:
    c = OpenAI(base_url=base + "/v1", api_key=DEV_KEY, max_retries=0, timeout=30)
    try:
        return c.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": "hi there"}], **extra
        )
    finally:
        c.close()


@pytest.fixture
def stack(stack_factory: Any) -> Iterator[Stack]:
    s: Stack = stack_factory(orch_env={"TOLLGATE_ORCHESTRATOR_PROBE_INTERVAL_SECONDS": "0.2"})
    s.start()
    yield s


def test_router_and_cache_frozen_then_killed(stack: Stack) -> None:
    base = stack.base_url
    metrics = stack.orchestrator_metrics_url
    router, cache = stack.procs["router"], stack.procs["cache"]
    try:
        router.signal(signal.SIGSTOP)  # accepts connections, never answers
        cache.signal(signal.SIGSTOP)
        for _ in range(4):  # the first ones wait for the deadline; then the breakers skip
            started = time.monotonic()
            r = chat(base, temperature=0)
            assert time.monotonic() - started < BOUND
            assert r.headers["x-tollgate-route"] == "degraded"
            assert r.headers["x-tollgate-model"] == POLICY.default_model
            assert r.headers["x-tollgate-cache"] == "bypass"
            assert r.parse().choices[0].message.content
    finally:
        router.signal(signal.SIGCONT)
        cache.signal(signal.SIGCONT)
    assert metric(metrics, "tollgate_degraded_total", dependency="router", reason="timeout") >= 1
    assert metric(metrics, "tollgate_degraded_total", dependency="cache", reason="timeout") >= 1

    router.signal(signal.SIGKILL)
    cache.signal(signal.SIGKILL)
    router.popen.wait(5)
    cache.popen.wait(5)
    time.sleep(2.5)  # past the dependency breakers' cooldown: they probe the dead peers
    r = chat(base)
    assert r.headers["x-tollgate-route"] == "degraded"
    assert r.headers["x-tollgate-cache"] == "bypass"
    with pytest.raises(openai.NotFoundError):  # unknown to the local catalog: still a 404
        OpenAI(base_url=base + "/v1", api_key=DEV_KEY, max_retries=0).chat.completions.create(
            model="gpt-17", messages=[{"role": "user", "content": "x"}]
        )
    assert metric(metrics, "tollgate_degraded_total", dependency="router") >= 5
    assert metric(metrics, "tollgate_dependency_up", dependency="router") == 0
    status, body = get(base + "/readyz")  # degraded, not unready: requests still succeed
    assert status == 200
    assert orjson.loads(body)["dependencies"] == {"cache": "down", "router": "down"}
    assert get(base + "/healthz")[0] == 200


class BlackHole:
    """A listener that accepts connections and never answers: a frozen Redis."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.fixture
def black_hole() -> Iterator[BlackHole]:
    bh = BlackHole()
    yield bh
    bh.close()


def test_budget_store_refused_or_frozen_follows_the_policy(
    stack_factory: Any, black_hole: BlackHole
) -> None:
    s: Stack = stack_factory()
    s.start_sim()
    s.start_router()
    s.start_cache()
    common = {"TOLLGATE_ORCHESTRATOR_BUDGETS": BUDGET}
    allow = {"TOLLGATE_ORCHESTRATOR_BUDGET_UNCHECKED_POLICY": "allow"}  # refuse is the default
    allow_port, frozen_port, refuse_port = free_port(), free_port(), free_port()
    s.start_orchestrator(
        "allow",
        allow_port,
        free_port(),
        TOLLGATE_ORCHESTRATOR_BUDGET_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        **common,
        **allow,
    )
    s.start_orchestrator(
        "frozen",
        frozen_port,
        free_port(),
        TOLLGATE_ORCHESTRATOR_BUDGET_REDIS_URL=f"redis://127.0.0.1:{black_hole.port}/0",
        **common,
        **allow,
    )
    s.start_orchestrator(
        "refuse",
        refuse_port,
        free_port(),
        TOLLGATE_ORCHESTRATOR_BUDGET_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        TOLLGATE_ORCHESTRATOR_BUDGET_UNCHECKED_POLICY="refuse",
        **common,
    )
    for port in (allow_port, frozen_port):
        base = f"http://127.0.0.1:{port}"
        for _ in range(4):
            started = time.monotonic()
            assert chat(base).parse().choices
            assert time.monotonic() - started < BOUND
        url = s.metrics_url(base)
        unchecked = metric(url, "tollgate_budget_actions_total", tenant="dev", action="unchecked")
        assert unchecked == 4  # allowed, and never silently
    base = f"http://127.0.0.1:{refuse_port}"
    with pytest.raises(openai.RateLimitError) as info:
        OpenAI(base_url=base + "/v1", api_key=DEV_KEY, max_retries=0).chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.status_code == 429  # fail closed (H-6)
    assert info.value.code == "budget_unavailable"
    assert info.value.response.headers["x-should-retry"] == "false"
