"""`make run` as a user runs it: `python -m tools.run` as a subprocess (what the Makefile
runs after setting up the venv), every port moved off the defaults.

A crashed service comes back by itself while the API keeps answering, the caller's
TOLLGATE_* reach the services (Redis, API keys) and the banner names them without values,
a signal stops every process and frees every port, and bad upstream choices stop with a
message that says what to do."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml

from tests.conftest import RedisServer
from tools.run import PORT_VARS
from tools.stack import DEV_KEY, ROOT, base_env, free_port, probe_grpc, probe_http, spawn

pytestmark = pytest.mark.integration

UP_TIMEOUT = 90.0  # a cold start of four Python services on a busy CI machine
WAIT_TIMEOUT = 30.0


def hermetic_env(**extra: str) -> dict[str, str]:
    """This process's env without any TOLLGATE_* or provider key, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TOLLGATE_") and k != "OPENAI_API_KEY"
    }
    env.update(extra)
    return env


def wait_until(what: str, check: Callable[[], bool], timeout: float = WAIT_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)


def pid_alive(pid: int) -> bool:
    """Alive and not a zombie (an orphaned zombie may wait for a reaper in a container)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Run:
    """One `python -m tools.run`, its output collected by a thread."""

    def __init__(self, log_dir: Path, env: dict[str, str], args: tuple[str, ...] = ()) -> None:
        self.log_dir = log_dir
        self.lines: list[str] = []
        self.known_pids: set[int] = set()
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "tools.run", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            self.lines.append(raw.decode(errors="replace"))

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str, timeout: float = WAIT_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            if self.popen.poll() is not None and not self._reader.is_alive():
                raise AssertionError(f"make run exited ({self.popen.returncode}):\n{self.output}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} after {timeout:g} s:\n{self.output}")
            time.sleep(0.05)

    def wait_up(self) -> dict[str, Any]:
        self.wait_for("Ctrl-C stops everything", UP_TIMEOUT)
        return self.state()

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = json.loads((self.log_dir / "run.json").read_text())
        self.known_pids |= {s["pid"] for s in state["services"].values() if s["pid"]}
        return state

    def wait_exit(self, timeout: float = 60.0) -> int:
        code = self.popen.wait(timeout)
        self._reader.join(5)
        return code

    def close(self) -> None:
        """SIGTERM make run (it stops its services), then SIGKILL it and whatever service
        of it is left, each only if it is still a tollgate process."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        for pid in self.known_pids:
            with contextlib.suppress(OSError):
                if b"tollgate_" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.killpg(pid, signal.SIGKILL)
        self._reader.join(5)


def applied(output: str) -> set[str]:
    """The names on the banner's settings line."""
    marker = "from your environment (names only): "
    line = next(ln for ln in output.splitlines() if marker in ln)
    return set(line.split(marker, 1)[1].split(", "))


RunFactory = Callable[..., tuple[Run, dict[str, int]]]


@pytest.fixture
def make_run(tmp_path: Path) -> Iterator[RunFactory]:
    """Start `python -m tools.run` with every port on a free one (set through the
    services' own TOLLGATE_*_PORT variables); all are stopped at teardown."""
    runs: list[Run] = []

    def start(
        *args: str, ports: bool = True, skip: tuple[str, ...] = (), **env: str
    ) -> tuple[Run, dict[str, int]]:
        names = [n for n in PORT_VARS if n not in skip] if ports else []
        chosen = {name: free_port() for name in names}
        port_env = {PORT_VARS[name]: str(p) for name, p in chosen.items()}
        log_dir = tmp_path / f"run{len(runs)}"
        full = hermetic_env(TOLLGATE_RUN_LOG_DIR=str(log_dir), **port_env, **env)
        run = Run(log_dir, full, args)
        runs.append(run)
        return run, chosen

    yield start
    for run in runs:
        run.close()


def chat(
    port: int, key: str = DEV_KEY, content: str = "hi", temperature: float = 0
) -> httpx.Response:
    return httpx.post(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={
            "model": "auto",
            "temperature": temperature,
            "messages": [{"role": "user", "content": content}],
        },
        timeout=30,
    )


def test_killed_cache_is_restarted_while_the_api_keeps_answering(make_run: RunFactory) -> None:
    run, ports = make_run()
    state = run.wait_up()
    assert f"http://127.0.0.1:{ports['http']}/v1" in run.output
    old = state["services"]["cache"]["pid"]
    assert chat(ports["http"], content="warm").status_code == 200

    os.kill(old, signal.SIGKILL)
    resp = chat(ports["http"], content="while the cache is down")
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-tollgate-cache"] in ("bypass", "miss")

    run.wait_for("cache restarted (1st time)")
    wait_until("the cache's gRPC health SERVING", lambda: probe_grpc(ports["cache"]))
    assert probe_http(f"http://127.0.0.1:{ports['cache_metrics']}/metrics")
    assert run.state()["services"]["cache"]["pid"] not in (None, old)
    log = run.log_dir / "cache.log"
    assert "cache exited with exit code -9 (SIGKILL)" in run.output
    assert f"(log: {log})" in run.output
    text = log.read_text()
    assert "1st restart" in text and text.count("cache ready") == 2, "the log was not appended"

    # The orchestrator uses the new cache again: a repeat becomes a hit.
    def cached() -> bool:
        return chat(ports["http"], content="after the restart").headers["x-tollgate-cache"] == "hit"

    wait_until("a cache hit after the restart", cached)
    assert run.popen.poll() is None


def test_caller_redis_settings_reach_the_cache(
    make_run: RunFactory, redis_server: RedisServer
) -> None:
    run, ports = make_run(TOLLGATE_CACHE_BACKEND="redis", TOLLGATE_CACHE_REDIS_URL=redis_server.url)
    run.wait_up()
    assert {"TOLLGATE_CACHE_BACKEND", "TOLLGATE_CACHE_REDIS_URL"} <= applied(run.output)
    assert redis_server.url not in run.output

    client = redis.Redis(port=redis_server.port)
    assert client.dbsize() == 0
    first = chat(ports["http"], content="store me in redis")
    assert first.status_code == 200 and first.headers["x-tollgate-cache"] == "miss"
    wait_until("an entry in Redis", lambda: client.dbsize() > 0, 10)
    assert chat(ports["http"], content="store me in redis").headers["x-tollgate-cache"] == "hit"
    client.close()


def test_caller_api_keys_are_used_and_named_without_values(make_run: RunFactory) -> None:
    key = "sk-test-" + secrets.token_urlsafe(32)
    http = free_port()
    # TOLLGATE_HTTP_PORT, the older knob, still moves the API port.
    run, _ = make_run(
        skip=("http",),
        TOLLGATE_ORCHESTRATOR_API_KEYS=f"team-a:{key}",
        TOLLGATE_HTTP_PORT=str(http),
        TOLLGATE_OPERATOR_NAMESPACE="ignored-here",
    )
    run.wait_up()
    out = run.output
    assert f"http://127.0.0.1:{http}/v1" in out
    assert {"TOLLGATE_HTTP_PORT", "TOLLGATE_ORCHESTRATOR_API_KEYS"} <= applied(out)
    assert "ignored, nothing here reads them: TOLLGATE_OPERATOR_NAMESPACE" in out
    assert key not in out and DEV_KEY not in out and "ignored-here" not in out
    assert chat(http).status_code == 401
    ok = chat(http, key=key)
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_every_process_and_frees_every_port(
    make_run: RunFactory, sig: signal.Signals
) -> None:
    # Free ports chosen by make run itself, read back from run.json.
    run, _ = make_run(ports=False, TOLLGATE_RUN_PORTS="free")
    state = run.wait_up()
    ports = list(state["ports"].values())
    pids = [s["pid"] for s in state["services"].values()]
    assert len(ports) == 8 and all(listening(p) for p in ports)
    assert 8080 not in ports and 50051 not in ports

    os.kill(run.popen.pid, sig)
    assert run.wait_exit() == 0, run.output
    assert "stopping ..." in run.output
    assert [p for p in pids if pid_alive(p)] == []
    assert [p for p in ports if listening(p)] == []
    assert not (run.log_dir / "run.json").exists()


def test_openai_without_a_key_and_a_bad_upstream_stop_with_a_message() -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tools.run", *args],
            cwd=ROOT,
            env=hermetic_env(TOLLGATE_RUN_PORTS="free"),
            capture_output=True,
            text=True,
            timeout=60,
        )

    no_key = run("--upstream", "openai")
    assert no_key.returncode == 2
    assert "OPENAI_API_KEY=sk-... make run UPSTREAM=openai" in no_key.stderr
    assert len(no_key.stderr.strip().splitlines()) == 1

    bad = run("--upstream", "anthropic")
    assert bad.returncode == 2
    assert "unknown upstream 'anthropic'" in bad.stderr
    assert "simulator" in bad.stderr and "openai" in bad.stderr
    assert "starting" not in bad.stdout


def test_makefile_passes_upstream_through() -> None:
    def dry(*args: str) -> str:
        # -o: never rebuild the venv stamp; -n: print the recipe only.
        out = subprocess.run(
            ["make", "-n", "-o", ".venv/.installed", "run", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        return out

    assert "-m tools.run --upstream simulator" in dry()
    assert "-m tools.run --upstream openai" in dry("UPSTREAM=openai")


def test_openai_upstream_uses_the_policy_provider_urls(
    make_run: RunFactory, tmp_path: Path
) -> None:
    """No simulator, no upstream base URL: the orchestrator calls the provider URL of the
    policy with OPENAI_API_KEY. The "provider" is a simulator of the test's own here."""
    key = "sk-fake-" + secrets.token_urlsafe(8)
    sim_port = free_port()
    provider = spawn(
        "provider",
        [sys.executable, "-m", "tollgate_simulator"],
        base_env({"TOLLGATE_SIM_PORT": str(sim_port), "TOLLGATE_SIM_API_KEY": key}),
        tmp_path,
    )
    try:
        wait_until("the provider", lambda: probe_http(f"http://127.0.0.1:{sim_port}/healthz"))
        policy = yaml.safe_load(
            (ROOT / "services/tollgate_common/data/default-policy.yaml").read_text()
        )
        policy["providers"]["openai"]["base_url"] = f"http://127.0.0.1:{sim_port}/v1"
        policy_file = tmp_path / "policy.yaml"
        policy_file.write_text(yaml.safe_dump(policy))
        run, ports = make_run(
            "--upstream",
            "openai",
            OPENAI_API_KEY=key,
            TOLLGATE_ORCHESTRATOR_POLICY_FILE=str(policy_file),
        )
        state = run.wait_up()
        assert "simulator" not in state["services"] and "sim" not in state["ports"]
        assert "SPENDS REAL MONEY" in run.output
        assert f"openai http://127.0.0.1:{sim_port}/v1" in run.output
        assert "ignored, nothing here reads them: TOLLGATE_SIM_PORT" in run.output
        resp = chat(ports["http"], content="to the provider")
        assert resp.status_code == 200, resp.text
        assert key not in run.output
    finally:
        provider.stop()


@pytest.mark.slow
def test_a_service_that_cannot_start_again_stops_everything(
    make_run: RunFactory, tmp_path: Path
) -> None:
    config = tmp_path / "tollgate.yaml"
    config.write_text("cache: {default_ttl_seconds: 60}\n")
    run, ports = make_run(TOLLGATE_CONFIG=str(config))
    state = run.wait_up()
    config.write_text("cache: {default_ttl_seconds: -1}\n")  # the next start fails
    os.kill(state["services"]["cache"]["pid"], signal.SIGKILL)

    # 0.5 + 1 + 2 + 4 + 8 s of backoff, five failed starts: then it gives up.
    assert run.wait_exit(90) == 1, run.output
    out = run.output
    assert "cache restarted (5th time)" in out
    assert "cache failed to start 5 times in a row (last: exit code 2)" in out
    assert "default_ttl_seconds" in out  # the log tail names the bad setting
    pids = [s["pid"] for s in state["services"].values()]
    assert [p for p in pids if pid_alive(p)] == []
    assert [p for p in ports.values() if listening(p)] == []


def test_stop_kills_children_of_children_that_outlive_the_leader(tmp_path: Path) -> None:
    # The leader dies at SIGTERM at once; its child ignores SIGTERM and would live on.
    script = (
        "import signal, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', "
        "'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(300)\n"
    )
    proc = spawn("leader", [sys.executable, "-c", script], base_env(), tmp_path)
    wait_until("the child's pid", lambda: proc.log_path.read_text().strip() != "", 10)
    child = int(proc.log_path.read_text().split()[0])
    assert pid_alive(child)
    proc.stop(timeout=10)
    wait_until("the child gone", lambda: not pid_alive(child), 10)
