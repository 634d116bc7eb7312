"""The committed generated code matches what `make proto` produces from proto/."""

from __future__ import annotations

import filecmp
from pathlib import Path

from tools.gen_proto import DEFAULT_OUT, generate


def _files(root: Path) -> set[Path]:
    return {
        p.relative_to(root) for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    }


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    out = tmp_path / "gen"
    generate(out)
    fresh, committed = _files(out), _files(DEFAULT_OUT)
    assert fresh == committed, "run `make proto`: generated file set differs"
    stale = [
        str(p) for p in sorted(fresh) if not filecmp.cmp(out / p, DEFAULT_OUT / p, shallow=False)
    ]
    assert not stale, f"run `make proto`: stale generated files {stale}"
