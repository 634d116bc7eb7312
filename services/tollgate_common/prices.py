"""The dated price tables: one YAML file per provider, merged into one price map. Pure.

Each table (``data/prices-<provider>.yaml``) says whose prices it holds (``provider``),
the date they were copied from the vendor's price list (``as_of``), where from
(``source``) and the currency, then ``models``: per model, ModelEntry fields (prices in
USD per 1M tokens, and facts that come with a price list: context window, kind,
dimensions). A policy's own model entry wins over the table, field by field.

A model priced by two tables is an error naming both files: which figure would apply
would otherwise depend on file order. Every table's (provider, as_of) travels with the
policy it priced, as the ``tollgate_price_table_info`` series, so a dashboard shows when
prices changed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import yaml

DATA_DIR = Path(__file__).parent / "data"
PRICE_TABLES_DIR = DATA_DIR  # the shipped tables
TABLE_GLOB = "prices-*.yaml"  # the files a directory's tables are read from
CURRENCY = "USD"
# Bounded label values: a table names a provider and a date, nothing a client sends.
MAX_TABLES = 32
_PROVIDER = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class PriceTableError(ValueError):
    """A price table is invalid; the message names the file and the field."""


@dataclass(frozen=True, slots=True)
class PriceTable:
    provider: str
    as_of: str  # YYYY-MM-DD: when the figures were copied from ``source``
    source: str
    path: Path
    models: dict[str, dict[str, Any]] = field(default_factory=dict)


class Prices(dict[str, dict[str, Any]]):
    """The merged tables: a model name -> its table's fields (the mapping the policy
    parser takes), and the tables they came from."""

    def __init__(
        self, models: dict[str, dict[str, Any]] | None = None, tables: tuple[PriceTable, ...] = ()
    ) -> None:
        super().__init__(models or {})
        self.tables = tables

    @property
    def versions(self) -> tuple[tuple[str, str], ...]:
        """(provider, as_of) per table, sorted: the price-table info series."""
        return tuple(sorted({(t.provider, t.as_of) for t in self.tables}))

    def table_of(self, model: str) -> PriceTable | None:
        return next((t for t in self.tables if model in t.models), None)


def _text(data: dict[str, Any], key: str, where: Path) -> str:
    value = data.get(key)
    if isinstance(value, date):  # YAML reads a bare 2025-08-07 as a date
        value = value.isoformat()
    if not isinstance(value, str) or not value.strip():
        raise PriceTableError(f"{where}: {key}: required (a string)")
    return value


def read_table(path: Path) -> PriceTable:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise PriceTableError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise PriceTableError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise PriceTableError(f"{path}: a price table must be a YAML mapping")
    provider, as_of = _text(data, "provider", path), _text(data, "as_of", path)
    if not _PROVIDER.match(provider):
        raise PriceTableError(f"{path}: provider: {provider[:40]!r} is not [a-z0-9_-], <= 40")
    if not _DATE.match(as_of):
        raise PriceTableError(f"{path}: as_of: {as_of[:40]!r} is not a YYYY-MM-DD date")
    currency = data.get("currency", CURRENCY)
    if currency != CURRENCY:
        raise PriceTableError(f"{path}: currency: {currency!r}; tollgate counts in {CURRENCY}")
    models = data.get("models", {})
    if not isinstance(models, dict) or not all(isinstance(v, dict) for v in models.values()):
        raise PriceTableError(f"{path}: models: must map a model name to its fields")
    return PriceTable(provider, as_of, str(data.get("source", "")), path, models)


def table_files(path: Path) -> list[Path]:
    """A directory's ``prices-*.yaml`` (sorted), or the one file ``path`` names."""
    if path.is_dir():
        files = sorted(path.glob(TABLE_GLOB))
        if not files:
            raise PriceTableError(f"{path}: no {TABLE_GLOB} price tables")
        return files
    return [path]


def merge(tables: list[PriceTable]) -> Prices:
    if len(tables) > MAX_TABLES:
        raise PriceTableError(f"{len(tables)} price tables: at most {MAX_TABLES}")
    models: dict[str, dict[str, Any]] = {}
    owner: dict[str, PriceTable] = {}
    errors = []
    for table in tables:
        for name, entry in table.models.items():
            if name in owner:
                errors.append(f"models.{name}: priced in both {owner[name].path} and {table.path}")
                continue
            owner[name] = table
            models[name] = entry
    if errors:
        raise PriceTableError("; ".join(errors))
    return Prices(models, tuple(tables))


def load_prices(path: Path = PRICE_TABLES_DIR) -> Prices:
    """Every table under ``path`` (a directory) or the one file it names, merged."""
    return merge([read_table(p) for p in table_files(path)])
