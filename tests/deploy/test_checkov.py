"""checkov --framework kubernetes on the rendered chart, one values set at a time.

Each set is rendered by real Helm into its own folder (checkov's graph checks, such
as "every pod has a NetworkPolicy", would otherwise match objects across sets).
A failed check fails the test unless deploy/helm/tollgate/checkov-skips.yaml lists
it with a reason; an entry that matches nothing fails too, and so does a run that
checked nothing (a misconfigured checkov exits 0 having checked nothing).
"""

from __future__ import annotations

import fnmatch
import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.chart import CHART, ROOT, missing, render_text
from tests.deploy.conftest import VALUE_SETS

pytestmark = pytest.mark.slow

CHECKOV = ROOT / ".tools" / "checkov" / "bin" / "checkov"
SKIPS_FILE = CHART / "checkov-skips.yaml"


@dataclass(frozen=True)
class Skip:
    check: str
    resources: tuple[str, ...]
    renders: tuple[str, ...] | None
    reason: str

    def covers(self, render: str, check: str, resource: str) -> bool:
        return (
            check == self.check
            and (self.renders is None or render in self.renders)
            and any(fnmatch.fnmatchcase(resource, p) for p in self.resources)
        )


def load_skips() -> list[Skip]:
    doc = yaml.safe_load(SKIPS_FILE.read_text())
    skips = []
    for i, entry in enumerate(doc["skips"]):
        where = f"{SKIPS_FILE.name} skips[{i}]"
        assert set(entry) <= {"check", "resources", "renders", "reason"}, where
        assert str(entry.get("reason", "")).strip(), f"{where}: every skip needs a reason"
        assert entry.get("resources"), f"{where}: name the resources it applies to"
        unknown = set(entry.get("renders") or []) - set(VALUE_SETS)
        assert not unknown, f"{where}: unknown values sets {unknown}"
        skips.append(
            Skip(
                entry["check"],
                tuple(entry["resources"]),
                tuple(entry["renders"]) if entry.get("renders") else None,
                entry["reason"],
            )
        )
    return skips


def run_checkov(folder: Path) -> dict[str, Any]:
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"}
    proc = subprocess.run(
        [
            str(CHECKOV),
            "-d",
            str(folder),
            "--framework",
            "kubernetes",
            "--compact",
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert proc.returncode in (0, 1), f"checkov crashed ({proc.returncode}):\n{proc.stderr}"
    report = json.loads(proc.stdout)
    reports = report if isinstance(report, list) else [report]
    kube = [r for r in reports if r.get("check_type") == "kubernetes"]
    assert len(kube) == 1, f"checkov ran no kubernetes checks:\n{proc.stdout[:2000]}"
    return dict(kube[0])


@pytest.fixture(scope="module")
def checkov_reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    if not CHECKOV.is_file():
        missing("checkov", f"{CHECKOV} is missing; run `make tools`")
    base = tmp_path_factory.mktemp("rendered")
    folders = {}
    for name, values in VALUE_SETS.items():
        folder = base / name
        folder.mkdir()
        (folder / "tollgate.yaml").write_text(render_text(values))
        folders[name] = folder
    with ThreadPoolExecutor(max_workers=2) as pool:
        reports = dict(zip(folders, pool.map(run_checkov, folders.values()), strict=True))
    return reports


def test_skips_file_gives_a_reason_for_each_skip() -> None:
    assert load_skips()


def test_checkov_finds_no_unexplained_failure(checkov_reports: dict[str, dict[str, Any]]) -> None:
    skips = load_skips()
    used: set[Skip] = set()
    unexplained = []
    for name, report in checkov_reports.items():
        summary = report["summary"]
        assert summary["parsing_errors"] == 0, (name, summary)
        assert summary["passed"] + summary["failed"] > 0, f"{name}: checkov checked nothing"
        assert summary["resource_count"] > 0, f"{name}: checkov found no resources"
        for failure in report["results"]["failed_checks"]:
            check, resource = failure["check_id"], failure["resource"]
            covering = [s for s in skips if s.covers(name, check, resource)]
            used.update(covering)
            if not covering:
                unexplained.append(f"{name}: {check} {resource} ({failure['check_name']})")
    assert unexplained == []
    stale = [f"{s.check} {s.resources}" for s in skips if s not in used]
    assert stale == [], "skips that no longer match a failure; remove them"


def test_checkov_runs_the_checks_that_matter(checkov_reports: dict[str, dict[str, Any]]) -> None:
    """Guard against a checkov that silently dropped the checks this chart relies on."""
    ran = {
        c["check_id"]
        for report in checkov_reports.values()
        for kind in ("passed_checks", "failed_checks")
        for c in report["results"][kind]
    }
    assert ran >= MUST_RUN, f"checks that did not run: {sorted(MUST_RUN - ran)}"


# Probes, requests/limits, privilege, read-only root, root user, capabilities, seccomp,
# tokens, high UID, digest, RBAC wildcards and escalation, NetworkPolicy coverage.
MUST_RUN = {
    *(f"CKV_K8S_{n}" for n in (8, 9, 10, 11, 12, 13, 14, 16, 20, 22, 23, 28, 31, 37, 38, 40, 43)),
    *(f"CKV_K8S_{n}" for n in (49, 155, 156, 157, 158)),
    *(f"CKV2_K8S_{n}" for n in (1, 2, 3, 4, 5, 6)),
}
