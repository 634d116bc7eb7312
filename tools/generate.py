"""Every generated or copied file, in one place: ``python -m tools.generate [--check] [NAME...]``.

``make generate`` writes them all; ``make check-generated`` (``--check``) writes nothing,
renders each one afresh (the proto code into a temp dir) and lists every committed file that
differs, is missing, or is no longer generated. NAME picks some targets (``make proto``,
``make monitoring``, ``make docs``, ``make crds``). ``--check`` also proves that the lock
files still pin what requirements*.txt ask for; only ``make lock`` (network) fixes those.

Targets, each with the files it alone owns:

- proto:      proto/gen/python/**            from proto/**/*.proto (tools/gen_proto.py)
- dashboards: dashboards/json/*.json and the chart's files/dashboards/*.json (dashboards/)
- alerts:     the chart's files/alerts/*.yaml, byte copies of alerts/*.yaml
- policy:     the chart's files/policy/*.yaml, byte copies of services/tollgate_common/data/
- crds:       the chart's crds/*.yaml        (services/tollgate_operator/crds.py)
- docs:       docs/metrics.md                (tools/gen_metrics_doc.py, from the metric catalog)

Copies stay where two readers need them: Helm's ``.Files`` cannot read outside the chart,
while the services, promtool's tests and ``make observe`` read the originals.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHART = "deploy/helm/tollgate"
FIX = "run `make generate`"

Files = dict[str, bytes]  # repo-relative path -> content


@dataclass(frozen=True)
class Target:
    name: str
    render: Callable[[], Files]
    owned: tuple[str, ...]  # globs (relative to the root) of the files only this target writes


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """protoc's plugins chat on fd 2; keep it unless something fails."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            log.seek(0)
            sys.stderr.write(log.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _read_tree(base: Path, prefix: str) -> Files:
    return {
        f"{prefix}/{p.relative_to(base).as_posix()}": p.read_bytes()
        for p in sorted(base.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }


def _proto() -> Files:
    from tools import gen_proto

    with tempfile.TemporaryDirectory() as tmp, _quiet_stderr():
        out = Path(tmp) / "python"
        gen_proto.generate(out)
        return _read_tree(out, "proto/gen/python")


def _dashboards() -> Files:
    from dashboards import build

    rendered = build.render_all()
    return {
        f"{out.relative_to(ROOT).as_posix()}/{name}": text.encode()
        for out in build.OUTPUT_DIRS
        for name, text in rendered.items()
    }


def _copies(src: str, dest: str, pattern: str) -> Callable[[], Files]:
    def render() -> Files:
        return {f"{dest}/{p.name}": p.read_bytes() for p in sorted((ROOT / src).glob(pattern))}

    return render


def _crds() -> Files:
    from tollgate_operator import crds

    return {f"{CHART}/crds/{name}": text.encode() for name, text in crds.rendered().items()}


def _docs() -> Files:
    from tools import gen_metrics_doc

    return {gen_metrics_doc.DOC.relative_to(ROOT).as_posix(): gen_metrics_doc.render().encode()}


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("proto", _proto, ("proto/gen/python/**/*",)),
        Target(
            "dashboards",
            _dashboards,
            ("dashboards/json/*.json", f"{CHART}/files/dashboards/*.json"),
        ),
        Target(
            "alerts",
            _copies("alerts", f"{CHART}/files/alerts", "*.yaml"),
            (f"{CHART}/files/alerts/*",),
        ),
        Target(
            "policy",
            _copies("services/tollgate_common/data", f"{CHART}/files/policy", "*.yaml"),
            (f"{CHART}/files/policy/*",),
        ),
        Target("crds", _crds, (f"{CHART}/crds/*.yaml",)),
        Target("docs", _docs, ("docs/metrics.md",)),
    )
}


def owned_files(target: Target, root: Path) -> set[str]:
    found: set[str] = set()
    for pattern in target.owned:
        for p in root.glob(pattern):
            rel = p.relative_to(root)
            if p.is_file() and "__pycache__" not in rel.parts and p.suffix != ".pyc":
                found.add(rel.as_posix())
    return found


@dataclass(frozen=True)
class Drift:
    path: str
    why: str  # "differs", "missing" or "not generated"
    target: str
    fresh: bytes | None = None


def drift(targets: list[Target], root: Path = ROOT) -> list[Drift]:
    """What writing ``targets`` would change under ``root`` (the repository by default)."""
    out: list[Drift] = []
    for target in targets:
        fresh = target.render()
        for rel, data in sorted(fresh.items()):
            path = root / rel
            if not path.is_file():
                out.append(Drift(rel, "missing", target.name, data))
            elif path.read_bytes() != data:
                out.append(Drift(rel, "differs", target.name, data))
        for rel in sorted(owned_files(target, root) - set(fresh)):
            out.append(Drift(rel, "not generated", target.name))
    return out


def write(targets: list[Target], root: Path = ROOT) -> list[Drift]:
    """Bring every file of ``targets`` up to date; files already current are not touched."""
    changes = drift(targets, root)
    for d in changes:
        path = root / d.path
        if d.fresh is None:
            path.unlink()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(d.fresh)
    return changes


# --- the lock files: offline, only a consistency check ----------------------------------------

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;\\]+)")
LOCKS = {
    "requirements.txt": "requirements.lock",
    "requirements-dev.txt": "requirements-dev.lock",
    "requirements-pip.txt": "requirements-pip.lock",
    "tools/phoenix.txt": "tools/phoenix.lock",  # the trace tests' backend, in its own venv
}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(path: Path, follow: bool) -> dict[str, str]:
    """name -> "[extras]==version" for each `name==version` line (and `-r` includes)."""
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split(" #", 1)[0].strip()
        if follow and line.startswith("-r "):
            pins.update(_pins(path.parent / line[3:].strip(), follow))
        elif m := _PIN.match(line):
            pins[_norm(m[1])] = f"{m[2] or ''}=={m[3]}"
    return pins


def lock_drift(root: Path = ROOT) -> list[str]:
    """Problems between requirements*.txt (edited by hand) and their locks (`make lock`)."""
    problems: list[str] = []
    locked: dict[str, dict[str, str]] = {}
    for source, lock in LOCKS.items():
        if not (root / lock).is_file():
            problems.append(f"{lock}: missing")
            continue
        locked[lock] = _pins(root / lock, follow=False)
        for name, want in _pins(root / source, follow=True).items():
            have = locked[lock].get(name)
            if have != want:
                problems.append(f"{lock}: {name}{have or ' not pinned'}, {source} wants {want}")
    runtime, dev = locked.get("requirements.lock", {}), locked.get("requirements-dev.lock", {})
    for name, pin in runtime.items():
        if dev and dev.get(name) != pin:
            problems.append(
                f"requirements.lock: {name}{pin} but requirements-dev.lock has "
                f"{dev.get(name) or 'none'} (the image must run what the tests ran)"
            )
    return problems


# --- command line -----------------------------------------------------------------------------


def _diff(d: Drift, root: Path) -> str:
    old = (root / d.path).read_bytes() if (root / d.path).is_file() else b""
    new = d.fresh or b""
    try:
        lines = difflib.unified_diff(
            old.decode().splitlines(keepends=True),
            new.decode().splitlines(keepends=True),
            f"a/{d.path}",
            f"b/{d.path}",
        )
    except UnicodeDecodeError:
        return f"binary file {d.path} differs\n"
    return "".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"any of {', '.join(TARGETS)}")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 on drift")
    parser.add_argument("--diff", action="store_true", help="with --check: print unified diffs")
    args = parser.parse_args(argv)
    if unknown := sorted(set(args.names) - set(TARGETS)):
        parser.error(f"unknown target(s) {', '.join(unknown)}; choose from {', '.join(TARGETS)}")
    targets = [TARGETS[n] for n in args.names] if args.names else list(TARGETS.values())
    if not args.check:
        for d in write(targets):
            print(f"{'removed' if d.fresh is None else 'wrote'} {d.path}")
        print(f"generated: {', '.join(t.name for t in targets)} up to date")
        return 0
    drifted = drift(targets)
    for d in drifted:
        print(f"drift: {d.path} ({d.why}; target {d.target})", file=sys.stderr)
        if args.diff and d.fresh is not None:
            sys.stderr.write(_diff(d, ROOT))
    locks = lock_drift() if not args.names else []
    for problem in locks:
        print(f"stale lock: {problem}", file=sys.stderr)
    if drifted:
        print(f"{len(drifted)} generated file(s) drifted: {FIX}", file=sys.stderr)
    if locks:
        print("the lock files are stale: run `make lock`", file=sys.stderr)
    if drifted or locks:
        return 1
    print(f"generated files up to date: {', '.join(t.name for t in targets)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
