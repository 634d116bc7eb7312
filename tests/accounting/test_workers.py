"""Several uvicorn workers must not undercount (issue 3 §9). tollgate's choice: one
uvicorn worker per orchestrator process, one process per pod, scale with replicas
(``services/tollgate_orchestrator/wiring.py`` and ``docs/reliability.md`` say why).

These tests hold the choice in place: there is no ``workers`` knob and no child
process, the chart runs the module directly, and two replicas under concurrent load
each expose complete metrics of their own, with the process collectors that
prometheus_client's multiprocess mode would lose, and sum to what was sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
import yaml

from tests.reliability.common import AUTH, CHAT, scrape, total
from tollgate_common.config import load_settings
from tollgate_orchestrator.config import OrchestratorSettings
from tools.stack import ROOT, Stack, free_port

pytestmark = pytest.mark.integration

ROUTE = "/v1/chat/completions"


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, str, str]]:
    s = Stack(
        log_dir=tmp_path_factory.mktemp("workers"),
        sim_env={"TOLLGATE_SIM_LATENCY_SCALE": "0"},
        # Set as a user who expects uvicorn's knob might: it must change nothing.
        orch_env={"TOLLGATE_ORCHESTRATOR_WORKERS": "4", "WEB_CONCURRENCY": "4"},
    )
    s.start()
    try:
        port = free_port()
        s.start_orchestrator("orchestrator2", port, free_port())
        yield s, s.base_url, f"http://127.0.0.1:{port}"
    finally:
        s.stop()


def children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        kids += [int(k) for k in text]
    return kids


def test_there_is_no_workers_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "workers" not in OrchestratorSettings.model_fields
    monkeypatch.setenv("TOLLGATE_ORCHESTRATOR_WORKERS", "4")
    settings = load_settings(OrchestratorSettings, "orchestrator")
    assert not hasattr(settings, "workers")


def test_the_chart_runs_one_process_per_pod_and_scales_with_replicas() -> None:
    values = yaml.safe_load((ROOT / "deploy/helm/tollgate/values.yaml").read_text())
    orch = values["services"]["orchestrator"]
    assert orch["module"] == "tollgate_orchestrator"  # `python -m`, not `uvicorn --workers`
    assert orch["replicas"] >= 2
    assert "PROMETHEUS_MULTIPROC_DIR" not in (orch.get("env") or {})


def test_each_replica_is_one_process_with_complete_metrics(
    replicas: tuple[Stack, str, str],
) -> None:
    stack, one, two = replicas
    for name in ("orchestrator", "orchestrator2"):
        assert children(stack.procs[name].popen.pid) == [], f"{name} forked workers"

    sent = {one: 37, two: 23}

    async def load() -> None:
        async with httpx2.AsyncClient(timeout=30) as c:

            async def hit(base: str, i: int) -> None:
                body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"n{i}"}]}
                r = await c.post(base + CHAT, json=body, headers=AUTH)
                assert r.status_code == 200

            await asyncio.gather(*(hit(b, i) for b, n in sent.items() for i in range(n)))

    before = {b: scrape(stack.metrics_url(b)) for b in sent}
    asyncio.run(load())
    name = "tollgate_http_requests_total"
    for base, n in sent.items():
        for _ in range(3):  # every scrape, not one in N: there is one registry to read
            m = scrape(stack.metrics_url(base))
            got = total(m, name, route=ROUTE) - total(before[base], name, route=ROUTE)
            assert got == n, (base, got, n)
            assert total(m, "tollgate_llm_requests_total", outcome="success") >= n
            assert total(m, "process_cpu_seconds_total") > 0  # lost in multiprocess mode
            assert total(m, "tollgate_http_requests_in_flight") == 0  # scraped off the API port
    after = sum(
        total(scrape(stack.metrics_url(b)), name, route=ROUTE) - total(before[b], name, route=ROUTE)
        for b in sent
    )
    assert after == sum(sent.values())  # what Prometheus's sum() over replicas will show
