"""`make check-generated` as a test: every generated file and chart copy matches its source,
and the lock files pin what requirements*.txt ask for (tools/generate.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tools import generate
from tools.generate import ROOT, TARGETS


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_generated_files_are_up_to_date(name: str) -> None:
    drifted = [f"{d.path} ({d.why})" for d in generate.drift([TARGETS[name]])]
    assert not drifted, f"{generate.FIX}: {drifted}"


def test_lock_files_match_the_requirements() -> None:
    problems = generate.lock_drift()
    assert not problems, f"run `make lock`: {problems}"


def test_every_target_writes_something_and_owns_it() -> None:
    for target in TARGETS.values():
        fresh = target.render()
        assert fresh, target.name
        owned = generate.owned_files(target, ROOT)
        assert set(fresh) <= owned, f"{target.name} writes outside its globs"


def _copy_of(target: generate.Target, tmp: Path) -> Path:
    for rel in generate.owned_files(target, ROOT):
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / rel, tmp / rel)
    return tmp


def test_a_hand_edit_a_missing_and_a_stray_file_are_drift_and_generate_fixes_them(
    tmp_path: Path,
) -> None:
    target = TARGETS["policy"]
    root = _copy_of(target, tmp_path)
    assert generate.drift([target], root) == []
    policy = root / generate.CHART / "files" / "policy"
    (policy / "prices-openai.yaml").write_text("edited by hand\n")
    (policy / "default-policy.yaml").unlink()
    (policy / "stray.yaml").write_text("x: 1\n")
    found = {(d.path.rsplit("/", 1)[1], d.why) for d in generate.drift([target], root)}
    assert found == {
        ("prices-openai.yaml", "differs"),
        ("default-policy.yaml", "missing"),
        ("stray.yaml", "not generated"),
    }
    generate.write([target], root)
    assert generate.drift([target], root) == []
    assert not (policy / "stray.yaml").exists()


def test_writing_leaves_current_files_untouched(tmp_path: Path) -> None:
    target = TARGETS["crds"]
    root = _copy_of(target, tmp_path)
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*.yaml")}
    assert generate.write([target], root) == []
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*.yaml")} == before


def test_check_exits_1_and_names_the_fix(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stale = generate.Drift("docs/metrics.md", "differs", "docs", b"")
    monkeypatch.setattr(generate, "drift", lambda targets, root=ROOT: [stale])
    assert generate.main(["--check", "docs"]) == 1
    err = capsys.readouterr().err
    assert "drift: docs/metrics.md (differs; target docs)" in err
    assert "run `make generate`" in err


def _requirements(root: Path, runtime: str, dev: str, lock: str, dev_lock: str) -> Path:
    (root / "requirements.txt").write_text(runtime)
    (root / "requirements-dev.txt").write_text(dev)
    (root / "requirements.lock").write_text(lock)
    (root / "requirements-dev.lock").write_text(dev_lock)
    for name in ("requirements-pip", "tools/phoenix"):  # locks of their own, not tested here
        (root / name).parent.mkdir(exist_ok=True)
        (root / f"{name}.txt").write_text("")
        (root / f"{name}.lock").write_text("")
    return root


def test_lock_drift_finds_an_unlocked_edit_and_a_split_pin(tmp_path: Path) -> None:
    h = "    --hash=sha256:" + "0" * 64
    runtime = "# comment\nuvicorn[standard]==0.54.0\nPyYAML==6.0.3  # why\n"
    dev = "-r requirements.txt\npytest==9.2.0\n"
    lock = f"uvicorn[standard]==0.54.0 \\\n{h}\npyyaml==6.0.3 \\\n{h}\nidna==3.0 \\\n{h}\n"
    dev_lock = lock + f"pytest==9.2.0 \\\n{h}\n"
    root = _requirements(tmp_path, runtime, dev, lock, dev_lock)
    assert generate.lock_drift(root) == []

    (root / "requirements.txt").write_text(runtime.replace("6.0.3", "6.0.4"))
    problems = generate.lock_drift(root)
    assert any(
        "requirements.lock: pyyaml==6.0.3, requirements.txt wants ==6.0.4" in p for p in problems
    ), problems
    assert any(p.startswith("requirements-dev.lock: pyyaml") for p in problems), problems

    root = _requirements(tmp_path, runtime, dev, lock, dev_lock.replace("idna==3.0", "idna==3.1"))
    assert generate.lock_drift(root) == [
        "requirements.lock: idna==3.0 but requirements-dev.lock has ==3.1"
        " (the image must run what the tests ran)"
    ]
