"""The developer and CI plumbing around the code: the GitHub CI workflow, the pre-commit hooks
(local only: nothing is cloned), the hashed lock files and who installs them."""

from __future__ import annotations

import re
import subprocess
import sys

import yaml

from tests.deploy.chart import ROOT

PRE_COMMIT = ROOT / ".pre-commit-config.yaml"
LOCKS = ("requirements.lock", "requirements-dev.lock")


def _makefile_recipe(target: str) -> str:
    text = (ROOT / "Makefile").read_text()
    m = re.search(rf"^{re.escape(target)}:(?!\s*export |=)[^\n]*\n((?:\t.*\n)+)", text, re.M)
    assert m, f"no recipe for {target}"
    return m[1]


def test_ci_workflow_runs_ci_run_on_pull_requests_and_main() -> None:
    wf = yaml.safe_load((ROOT / ".github/workflows/ci.yml").read_text())
    on = wf[True]  # YAML 1.1 reads the key `on` as a boolean
    assert "pull_request" in on and on["push"]["branches"] == ["main"]
    steps = wf["jobs"]["test"]["steps"]
    assert wf["jobs"]["test"]["runs-on"] == "ubuntu-latest"
    assert any(s.get("run") == "bash .ci/run" for s in steps)
    uses = {s["uses"].split("@")[0]: s for s in steps if "uses" in s}
    assert uses["actions/setup-python"]["with"]["python-version"] == "3.11"
    assert uses["actions/setup-node"]["with"]["node-version"] == "20"
    assert all(re.search(r"@v\d+$", s["uses"]) for s in uses.values())


def test_pre_commit_hooks_are_local_and_use_the_venv() -> None:
    config = yaml.safe_load(PRE_COMMIT.read_text())
    assert [r["repo"] for r in config["repos"]] == ["local"], "remote hook repos need GitHub"
    hooks = {h["id"]: h for r in config["repos"] for h in r["hooks"]}
    assert {"ruff-check", "ruff-format", "mypy", "check-generated"} <= set(hooks)
    for hook in hooks.values():
        assert hook["language"] == "system", hook["id"]
        tool = next(w for w in hook["entry"].split() if "=" not in w and w != "env")
        assert tool.startswith(".venv/bin/"), hook["id"]
        assert (ROOT / tool).exists() or not (ROOT / ".venv").exists(), tool
    assert "--check" in hooks["ruff-format"]["entry"]
    assert "tools.generate --check" in hooks["check-generated"]["entry"]
    assert hooks["check-generated"]["pass_filenames"] is False


def test_pre_commit_config_is_valid() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pre_commit", "validate-config", str(PRE_COMMIT)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_make_lint_runs_pre_commit_on_every_file() -> None:
    assert "pre-commit run --all-files" in _makefile_recipe("lint")
    assert "$(MAKE) --no-print-directory lint" in _makefile_recipe("test")
    dev = (ROOT / "requirements-dev.txt").read_text()
    assert re.search(r"^pre-commit==", dev, re.M) and re.search(r"^uv==", dev, re.M)


def test_every_locked_package_has_hashes() -> None:
    for lock in LOCKS:
        text = (ROOT / lock).read_text()
        entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2])
        assert len(entries) > 10, lock
        for entry in entries:
            head = entry.splitlines()[0]
            assert re.match(r"^[A-Za-z0-9][\w.\-\[\],]*==\S+ \\$", head), f"{lock}: {head}"
            assert "--hash=sha256:" in entry, f"{lock}: {head} has no hash"


def test_venv_and_image_install_the_locks_with_hashes() -> None:
    assert "--require-hashes -r requirements-dev.lock" in _makefile_recipe("$(STAMP)")
    dockerfile = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    assert "COPY requirements.lock ." in dockerfile
    assert re.search(r"pip install [^\n]*--require-hashes -r requirements.lock", dockerfile)
    assert "requirements.txt" not in dockerfile
    lock = _makefile_recipe("lock")
    assert "$(UV_COMPILE)" in lock and "-o requirements.lock" in lock
    assert "-o requirements-dev.lock" in lock
    assert "--generate-hashes" in (ROOT / "Makefile").read_text()


def test_generated_targets_share_one_entry_point() -> None:
    for target in ("generate", "proto", "monitoring", "docs", "crds"):
        assert "$(GENERATE)" in _makefile_recipe(target), target
    assert "$(GENERATE) --check" in _makefile_recipe("check-generated")
