"""Independent mock upstreams for the tests: llmock (PyPI) and aimock (npm), each a real
process on a free loopback port, with their request journals read over HTTP.

Neither is tollgate's own simulator, so what they accept and record is a second opinion
on what the orchestrator sends upstream.

- **llmock** (``llmock serve``): ``GET /_llmock/requests`` records path, model, stream flag
  and body of every request, but no headers; ``POST /_llmock/scenario`` queues scripted
  behaviours (``fail`` with a status and Retry-After, ``stream_fault``, ``delay``, ...),
  matched per request by model, path or stream.
- **aimock** (``node .../aimock/dist/cli.js``): JSON fixtures (match -> answer or error);
  ``GET /__aimock/journal`` records headers and bodies, but every credential header is
  replaced by ``"[REDACTED]"`` (no prefix, no hash). With ``AIMOCK_API_KEYS`` set it
  answers 401 to any request without one of those keys (``Authorization: Bearer|Key``,
  ``x-api-key``, ...) and does not journal it, so a journaled request proves the key
  arrived. The control API then needs the key too.

Processes run in their own session and are killed as a group at teardown. Without Node
or ``tests/node/node_modules`` aimock's tests fail under CI (``CI=true``, where ``make
test`` installs them) and are skipped elsewhere, naming ``make node-deps``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from tools.stack import ROOT, Proc, free_port, spawn

NODE_DIR = ROOT / "tests" / "node"
AIMOCK_PACKAGE = NODE_DIR / "node_modules" / "@copilotkit" / "aimock"
AIMOCK_CLI = AIMOCK_PACKAGE / "dist" / "cli.js"
NODE_MIN = (20, 15)
CHAT_PATH = "/v1/chat/completions"
# Headers a provider key may travel in; aimock redacts all of them in its journal.
CREDENTIAL_HEADERS = ("authorization", "x-api-key", "api-key", "x-goog-api-key", "xi-api-key")


def _missing(msg: str) -> None:
    """Fail under CI, where ``make test`` installs everything; skip elsewhere."""
    if os.environ.get("CI") == "true":
        pytest.fail(msg)
    pytest.skip(msg)


def llmock_version() -> str:
    return metadata.version("llmock")


def aimock_version() -> str:
    return str(json.loads((AIMOCK_PACKAGE / "package.json").read_text())["version"])


def llmock_exe() -> str:
    """The ``llmock`` console script of this interpreter's environment."""
    beside = Path(sys.executable).parent / "llmock"
    exe = str(beside) if beside.is_file() else shutil.which("llmock")
    if exe is None:
        _missing("llmock is not installed: run `make venv` (it is pinned in requirements-dev.txt)")
    assert exe is not None
    return exe


def node_exe() -> str:
    """Node >= 20.15 and the installed aimock, or fail (CI) / skip naming `make node-deps`."""
    node = shutil.which("node")
    if node is None:
        _missing("node is not on PATH: install Node >= 20.15, then run `make node-deps`")
    assert node is not None
    if not AIMOCK_CLI.is_file():
        _missing(f"aimock is not installed ({AIMOCK_CLI} missing): run `make node-deps`")
    out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=10)
    raw = out.stdout.strip().lstrip("v")
    try:
        version = tuple(int(p) for p in raw.split(".")[:2])
    except ValueError:
        version = (0, 0)
    if version < NODE_MIN:
        _missing(f"node {raw or '?'} is too old for aimock (needs >= 20.15); see `make node-deps`")
    return node


def _clean_env(prefix: str, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefix)}
    env.update(extra)
    return env


@dataclass
class MockUpstream:
    """A running mock: its base URL (no ``/v1``) and its process."""

    name: str
    port: int
    proc: Proc
    control_headers: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, n: int = 60) -> str:
        return self.proc.log_tail(n)

    def stop(self) -> None:
        self.proc.stop(timeout=5)

    def call(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
        """One control-API call; the decoded JSON answer (None when empty)."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"content-type": "application/json", **self.control_headers}
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            raise AssertionError(
                f"{self.name} {method} {path} -> {exc.code}: {detail}\n{self.log_tail(20)}"
            ) from None
        return json.loads(raw) if raw else None

    def wait_ready(self, path: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            if not self.proc.alive():
                self.stop()  # whatever it left behind in its process group
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.popen.returncode} before answering"
                    f" on {self.url}{path}; its log:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(self.url + path, timeout=1) as resp:
                    if resp.status == 200:
                        return
                    last = f"HTTP {resp.status}"
            except OSError as exc:
                last = str(exc)
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            f"{self.name} did not answer on {self.url}{path} within {timeout:.0f}s ({last});"
            f" its log:\n{self.log_tail()}"
        )


class LLMock(MockUpstream):
    """``llmock serve``: journal without headers, scripted faults."""

    def requests(self) -> list[dict[str, Any]]:
        """Every request served since the last reset, oldest first (waits for in-flight)."""
        return list(self.call("GET", "/_llmock/requests")["requests"])

    def script(self, *behaviors: dict[str, Any]) -> None:
        """Queue behaviours, e.g. ``{"type": "fail", "status": 429, "retry_after": 0.2,
        "times": 1, "match": {"model": "gpt-4.1-nano"}}`` (``times: None`` = permanent)."""
        self.call("POST", "/_llmock/scenario", {"behaviors": list(behaviors)})

    def pending(self) -> list[dict[str, Any]]:
        return list(self.call("GET", "/_llmock/scenario")["pending"])

    def reset(self) -> None:
        """Forget requests and queued behaviours."""
        self.call("POST", "/_llmock/reset", {})


class AIMock(MockUpstream):
    """aimock: fixtures from a directory, journal with (redacted) headers."""

    def journal(self) -> list[dict[str, Any]]:
        return list(self.call("GET", "/__aimock/journal"))

    def reset_journal(self) -> None:
        self.call("POST", "/__aimock/reset/journal", {})

    def add_fixtures(self, fixtures: list[dict[str, Any]]) -> None:
        self.call("POST", "/__aimock/fixtures", {"fixtures": fixtures})


def start_llmock(log_dir: Path, *args: str, timeout: float = 30.0) -> LLMock:
    """``llmock serve`` on a free loopback port, ready to answer; extra CLI ``args``."""
    exe = llmock_exe()
    port = free_port()
    cmd = [exe, "serve", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    # NO_COLOR/TERM keep its banner readable in the log file.
    env = _clean_env("LLMOCK_", {"NO_COLOR": "1", "TERM": "dumb"})
    mock = LLMock("llmock", port, spawn(f"llmock-{port}", [*cmd, *args], env, log_dir))
    mock.wait_ready("/health", timeout)
    return mock


def start_aimock(
    log_dir: Path,
    fixtures_dir: Path,
    *,
    api_keys: tuple[str, ...] = (),
    timeout: float = 30.0,
) -> AIMock:
    """aimock on a free loopback port serving ``fixtures_dir``; with ``api_keys`` it
    refuses (401, unjournaled) every request that does not carry one of them."""
    node = node_exe()
    port = free_port()
    cmd = [node, str(AIMOCK_CLI), "-p", str(port), "-h", "127.0.0.1", "-f", str(fixtures_dir)]
    # A fixture file aimock cannot load stops it at start, with the reason in its log.
    cmd += ["--validate-on-load", "--log-level", "warn", "--journal-max", "0"]
    extra = {"AIMOCK_API_KEYS": ",".join(api_keys)} if api_keys else {}
    env = _clean_env("AIMOCK_", extra)
    control = {"authorization": f"Bearer {api_keys[0]}"} if api_keys else {}
    mock = AIMock("aimock", port, spawn(f"aimock-{port}", cmd, env, log_dir), control)
    mock.wait_ready("/health", timeout)  # public even when keys are required
    return mock
