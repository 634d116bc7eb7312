"""Generate Python code, .pyi stubs included, from proto/ into proto/gen/python.

Usage: python tools/gen_proto.py [--out DIR]. `make proto` and `make generate`
(tools/generate.py) call it into a temp dir and copy what changed; `make check-generated`
compares the temp dir with the committed code.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
DEFAULT_OUT = PROTO_DIR / "gen" / "python"


def proto_files() -> list[Path]:
    return sorted(p for p in (PROTO_DIR / "tollgate").rglob("*.proto"))


def generate(out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    bindir = Path(sys.executable).parent  # protoc-gen-mypy lives beside the interpreter
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--plugin=protoc-gen-mypy={bindir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bindir / 'protoc-gen-mypy_grpc'}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *[str(p.relative_to(PROTO_DIR)) for p in proto_files()],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    # Every directory becomes a regular package so mypy and imports agree.
    for d in [out / "tollgate", *(p for p in (out / "tollgate").rglob("*") if p.is_dir())]:
        (d / "__init__.py").touch()
    (out / "tollgate" / "py.typed").touch()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    generate(parser.parse_args().out)


if __name__ == "__main__":
    main()
