"""One tollgate (simulator upstream, in-memory cache) for every client test."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tools.stack import DEV_KEY, ROOT, Stack

NODE_DIR = ROOT / "tests" / "node"


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(log_dir=tmp_path_factory.mktemp("clients-stack"))
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="session")
def api_base(stack: Stack) -> str:
    return stack.base_url + "/v1"


@pytest.fixture(scope="session")
def api_key() -> str:
    return DEV_KEY


def _node_missing(reason: str) -> None:
    """Skip locally; under CI=true (where `make test` runs `make node-deps`) fail."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI=true, so this is an error (`make test` runs `make node-deps`)")
    pytest.skip(f"{reason}; run `make node-deps`")


def node_versions(*packages: str) -> dict[str, str]:
    """The installed versions (node_modules/<pkg>/package.json) of the packages a script uses."""
    out = {}
    for pkg in packages:
        meta = json.loads((NODE_DIR / "node_modules" / pkg / "package.json").read_text())
        out[pkg] = str(meta["version"])
    return out


def run_node_script(
    script: str, stack: Stack, packages: tuple[str, ...], timeout: float = 60.0
) -> dict[str, dict[str, Any]]:
    """Run ``tests/node/<script>`` against the stack; its JSON lines, by case name.

    Skips (or fails under CI=true) when node or the pinned packages are missing.
    """
    node = shutil.which("node")
    if node is None:
        _node_missing("node (>= 20.15) is not on PATH")
    assert node is not None
    missing = [p for p in packages if not (NODE_DIR / "node_modules" / p).is_dir()]
    if missing:
        _node_missing(f"tests/node/node_modules lacks {', '.join(missing)}")
    env = {
        **os.environ,
        "TOLLGATE_BASE_URL": stack.base_url + "/v1",
        "TOLLGATE_API_KEY": DEV_KEY,
    }
    try:
        proc = subprocess.run(
            [node, str(NODE_DIR / script)],
            cwd=NODE_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr
        pytest.fail(f"node {script} did not finish in {timeout} s; stderr:\n{stderr}")
    results: dict[str, dict[str, Any]] = {}
    for line in proc.stdout.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        obj = json.loads(line)
        results[obj["case"]] = obj
    if proc.returncode != 0 and not results:
        pytest.fail(f"node {script} exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    for obj in results.values():
        obj.setdefault("_stderr", proc.stderr[-2000:])
    return results


def node_case(results: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    """One case's result; fails with the script's error if the case threw or is missing."""
    if name not in results:
        stderr = next(iter(results.values()), {}).get("_stderr", "")
        pytest.fail(f"the node script printed no result for case {name!r}; stderr:\n{stderr}")
    r = results[name]
    if r.get("error"):
        pytest.fail(
            f"case {name!r} threw in node: {r['error']} (HTTP status {r.get('status')}, "
            f"body {r.get('body')!r})"
        )
    return r
