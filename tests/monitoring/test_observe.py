"""deploy/observe: the configs are valid for promtool and amtool, the renderers wire what
they are given, and `python -m deploy.observe` starts both servers with tollgate's rules
and stops them on Ctrl-C."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from deploy.observe import promstack
from tools.stack import ROOT, base_env, free_port

PROMTOOL = shutil.which("promtool")
AMTOOL = shutil.which("amtool")
needs_tools = pytest.mark.skipif(
    not (PROMTOOL and AMTOOL), reason="promtool/amtool missing: run `make system-deps`"
)


def check(cmd: list[str], cwd: Path | None = None) -> None:
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


@needs_tools
def test_committed_configs_are_valid() -> None:
    assert PROMTOOL and AMTOOL
    check([PROMTOOL, "check", "config", "prometheus.yml"], cwd=promstack.HERE)
    check([AMTOOL, "check-config", "alertmanager.yml"], cwd=promstack.HERE)


@needs_tools
def test_rendered_configs_are_valid(tmp_path: Path) -> None:
    assert PROMTOOL and AMTOOL
    prom = promstack.render_prometheus(
        {"tollgate-orchestrator": "127.0.0.1:1/metrics", "tollgate-cache": "127.0.0.1:2"},
        alertmanager="127.0.0.1:3",
        interval="1s",
    )
    assert [j["job_name"] for j in prom["scrape_configs"]] == [
        "tollgate-orchestrator",
        "tollgate-cache",
    ]
    assert prom["scrape_configs"][1]["metrics_path"] == "/metrics"
    assert prom["global"]["evaluation_interval"] == "1s"
    check([PROMTOOL, "check", "config", str(promstack.write_yaml(tmp_path / "p.yml", prom))])

    full = promstack.render_alertmanager(
        promstack.Receivers("http://127.0.0.1:4/w", "http://127.0.0.1:4/s", "http://127.0.0.1:4/d"),
        group_wait="1s",
    )
    receiver = full["receivers"][0]
    assert receiver["webhook_configs"][0]["url"] == "http://127.0.0.1:4/w"
    assert receiver["slack_configs"][0]["api_url"] == "http://127.0.0.1:4/s"
    assert receiver["discord_configs"][0]["webhook_url"] == "http://127.0.0.1:4/d"
    assert full["route"]["group_wait"] == "1s"
    check([AMTOOL, "check-config", str(promstack.write_yaml(tmp_path / "a.yml", full))])

    empty = promstack.render_alertmanager(promstack.Receivers())
    assert empty["receivers"][0] == {"name": "tollgate"}  # nothing set, nothing notified
    check([AMTOOL, "check-config", str(promstack.write_yaml(tmp_path / "b.yml", empty))])


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.load(resp)


@pytest.mark.slow
@pytest.mark.skipif(
    not (shutil.which("prometheus") and shutil.which("prometheus-alertmanager")),
    reason="prometheus/prometheus-alertmanager missing: run `make system-deps`",
)
def test_make_observe_starts_both_with_the_rules_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    prom_port, am_port = free_port(), free_port()
    env = base_env(
        {
            "PYTHONPATH": f"{ROOT}{os.pathsep}{base_env()['PYTHONPATH']}",
            "TOLLGATE_OBSERVE_PROMETHEUS_PORT": str(prom_port),
            "TOLLGATE_OBSERVE_ALERTMANAGER_PORT": str(am_port),
            "TOLLGATE_OBSERVE_DIR": str(tmp_path),
            "TOLLGATE_ALERT_WEBHOOK_URL": "http://127.0.0.1:9/hook",
        }
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "deploy.observe"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "Ctrl-C" in line:
                break
        output = "".join(lines)
        assert f"http://127.0.0.1:{prom_port}" in output, output
        assert f"http://127.0.0.1:{am_port}" in output, output
        assert "notifying     webhook_url" in output

        groups = get_json(f"http://127.0.0.1:{prom_port}/api/v1/rules")["data"]["groups"]
        names = {g["name"] for g in groups}
        assert names >= {"tollgate.budget", "tollgate.slo", "tollgate.targets"}
        jobs: dict[str, str] = {}
        deadline = time.monotonic() + 20  # service discovery settles after /-/ready
        while len(jobs) < 3 and time.monotonic() < deadline:
            targets = get_json(f"http://127.0.0.1:{prom_port}/api/v1/targets")["data"]
            jobs = {t["labels"]["job"]: t["scrapeUrl"] for t in targets["activeTargets"]}
            time.sleep(0.1)
        assert jobs == {
            "tollgate-orchestrator": "http://127.0.0.1:9103/metrics",
            "tollgate-router": "http://127.0.0.1:9101/metrics",
            "tollgate-cache": "http://127.0.0.1:9102/metrics",
        }
        status = get_json(f"http://127.0.0.1:{am_port}/api/v2/status")
        assert "http://127.0.0.1:9/hook" in status["config"]["original"]

        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:  # a failed assertion: let it stop its servers first
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
    # both servers are gone with their launcher
    deadline = time.monotonic() + 10
    for port in (prom_port, am_port):
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=1)
            except OSError:
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"port {port} still answers after Ctrl-C")
