"""Import contracts over services/, checked on the source (AST), nothing imported:

- no service package imports another one: they share ``tollgate_common`` and the
  generated ``tollgate.*`` protos, and talk over gRPC;
- ``tollgate_common`` imports no service;
- the pure modules (the decisions the unit tests hammer) reach no I/O library, not
  even through the first-party modules they import.

Every failure names the file, the line and the import.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

SERVICES = Path(__file__).resolve().parents[2] / "services"
COMMON = "tollgate_common"
PACKAGES = sorted(p.name for p in SERVICES.iterdir() if (p / "__init__.py").exists())
SERVICE_PACKAGES = [p for p in PACKAGES if p != COMMON]

# The orchestrator's pure modules: its vocabulary, decisions and wire formats.
PURE_ORCHESTRATOR = [
    "types.py",
    "errors.py",
    "retry.py",
    "validation.py",
    "accounting.py",
    "sse.py",
    "catalog.py",
    "fallback.py",
    "dialects/__init__.py",
    "dialects/base.py",
    "dialects/registry.py",
    "dialects/chat.py",
]
# Checked on their own imports only, not through the first-party modules they import.
DIRECT_ONLY: frozenset[str] = frozenset()
PURE = [
    "tollgate_router/routing.py",
    "tollgate_router/classifier.py",
    "tollgate_cache/memory.py",
    "tollgate_common/policy.py",
    "tollgate_common/cachekey.py",
    "tollgate_common/budgets.py",
    "tollgate_common/breaker.py",
    *(f"tollgate_orchestrator/{name}" for name in PURE_ORCHESTRATOR),
]
# Top-level modules that do network, process or server I/O.
IO_MODULES = frozenset(
    {
        "grpc",
        "grpc_health",
        "grpc_reflection",
        "redis",
        "httpx",
        "httpx2",
        "aiohttp",
        "fastapi",
        "starlette",
        "uvicorn",
        "uvloop",
        "socket",
        "openai",
        "kopf",
        "subprocess",
    }
)
IO_SUBMODULES = frozenset({"asyncio.subprocess"})
IO_FROM_ASYNCIO = frozenset({"subprocess", "create_subprocess_exec", "create_subprocess_shell"})


@dataclass(frozen=True)
class Import:
    path: Path
    line: int
    module: str  # absolute dotted name
    names: tuple[str, ...]  # for ``from module import a, b``

    def where(self) -> str:
        return f"{self.path.relative_to(SERVICES.parent)}:{self.line}"

    def text(self) -> str:
        if self.names:
            return f"from {self.module} import {', '.join(self.names)}"
        return f"import {self.module}"


def _module_of(path: Path) -> str:
    parts = list(path.relative_to(SERVICES).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def imports_of(path: Path) -> tuple[Import, ...]:
    tree = ast.parse(path.read_text(), str(path))
    package = _module_of(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [Import(path, node.lineno, a.name, ()) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this file's package
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            found.append(Import(path, node.lineno, module, tuple(a.name for a in node.names)))
    return tuple(found)


def _file_of(module: str) -> Path | None:
    base = SERVICES.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def first_party_files(imp: Import) -> list[Path]:
    """The services/ files that executing ``imp`` runs: parent packages, the module,
    and submodules named in ``from package import submodule``."""
    parts = imp.module.split(".")
    if not parts[0].startswith("tollgate_"):
        return []
    modules = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
    modules += [f"{imp.module}.{name}" for name in imp.names]
    return [f for f in map(_file_of, modules) if f is not None]


def io_in(imp: Import) -> str | None:
    """The I/O module ``imp`` brings in directly, if any."""
    top = imp.module.split(".")[0]
    if top in IO_MODULES or imp.module in IO_SUBMODULES:
        return imp.module
    if imp.module == "asyncio" and (hit := IO_FROM_ASYNCIO & set(imp.names)):
        return f"asyncio.{sorted(hit)[0]}"
    if imp.module.endswith("_pb2_grpc") or any(n.endswith("_pb2_grpc") for n in imp.names):
        return "grpc (a generated *_pb2_grpc module)"
    return None


def io_reached(path: Path, transitive: bool = True) -> list[str]:
    """Every way ``path`` reaches I/O, directly or (``transitive``) through first-party
    imports."""
    problems: list[str] = []
    seen: set[Path] = {path}

    def visit(file: Path, chain: list[Import]) -> None:
        for imp in imports_of(file):
            hit = io_in(imp)
            if hit is not None:
                via = "".join(f", through `{c.text()}` ({c.where()})" for c in chain[1:])
                head = chain[0] if chain else imp
                tail = f"; which reaches `{imp.text()}` ({imp.where()})" if chain else ""
                problems.append(
                    f"{head.where()}: `{head.text()}` brings I/O ({hit}) into a pure module"
                    f"{tail}{via}"
                )
            for nxt in first_party_files(imp) if transitive else ():
                if nxt not in seen:
                    seen.add(nxt)
                    visit(nxt, [*chain, imp])

    visit(path, [])
    return problems


def all_files(package: str) -> list[Path]:
    return sorted((SERVICES / package).rglob("*.py"))


def test_services_import_no_other_service() -> None:
    problems = []
    for package in SERVICE_PACKAGES:
        for path in all_files(package):
            for imp in imports_of(path):
                top = imp.module.split(".")[0]
                if top.startswith("tollgate_") and top not in (package, COMMON):
                    problems.append(
                        f"{imp.where()}: `{imp.text()}`: {package} may import only itself, "
                        f"{COMMON} and the generated tollgate.* protos"
                    )
    assert not problems, "\n".join(problems)


def test_common_imports_no_service() -> None:
    problems = [
        f"{imp.where()}: `{imp.text()}`: {COMMON} must not import a service"
        for path in all_files(COMMON)
        for imp in imports_of(path)
        if imp.module.split(".")[0] in SERVICE_PACKAGES
    ]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_reach_no_io(module: str) -> None:
    path = SERVICES / module
    if not path.is_file():
        pytest.skip(f"{module} does not exist (renamed?)")
    problems = io_reached(path, transitive=module not in DIRECT_ONLY)
    assert not problems, "\n".join(problems)


def test_the_checker_sees_violations(tmp_path: Path) -> None:
    # The contract tests pass vacuously if the AST walk sees nothing: make sure it does.
    routing = SERVICES / "tollgate_router" / "routing.py"
    assert any(i.module == "tollgate_common.policy" for i in imports_of(routing))
    server = SERVICES / "tollgate_common" / "grpc" / "server.py"
    assert any(io_in(i) == "grpc" for i in imports_of(server))
    wiring = SERVICES / "tollgate_router" / "wiring.py"
    assert any("grpc" in p for p in io_reached(wiring))
