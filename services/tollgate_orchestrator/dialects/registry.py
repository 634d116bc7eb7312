"""Which dialect serves which route, which wire format each upstream API has, and which
translations reach an upstream that speaks another API."""

from __future__ import annotations

from tollgate_orchestrator.dialects.base import Dialect, Translation, Wire

DIALECTS: dict[str, Dialect] = {}  # by HTTP path
WIRES: dict[str, Wire] = {}  # by API name
TRANSLATIONS: dict[tuple[str, str], Translation] = {}  # by (source API, target API)


def register(
    dialect: Dialect | None = None,
    wire: Wire | None = None,
    translation: Translation | None = None,
) -> None:
    if dialect is not None:
        DIALECTS[dialect.path] = dialect
    if wire is not None:
        WIRES[wire.api] = wire
    if translation is not None:
        TRANSLATIONS[(translation.source, translation.target)] = translation


def unregister(dialect: Dialect) -> None:
    DIALECTS.pop(dialect.path, None)
