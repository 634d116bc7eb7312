"""Which dialect serves which route, which wire format each upstream API has."""

from __future__ import annotations

from tollgate_orchestrator.dialects.base import Dialect, Wire

DIALECTS: dict[str, Dialect] = {}  # by HTTP path
WIRES: dict[str, Wire] = {}  # by API name


def register(dialect: Dialect | None = None, wire: Wire | None = None) -> None:
    if dialect is not None:
        DIALECTS[dialect.path] = dialect
    if wire is not None:
        WIRES[wire.api] = wire


def unregister(dialect: Dialect) -> None:
    DIALECTS.pop(dialect.path, None)
