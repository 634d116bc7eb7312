"""The metric catalog and the helpers that build families from it."""

from tollgate_common.metrics.catalog import CATALOG, MetricSpec, specs_for
from tollgate_common.metrics.children import Children, Shown
from tollgate_common.metrics.families import Bounded, Families, create_families

__all__ = [
    "CATALOG",
    "Bounded",
    "Children",
    "Families",
    "MetricSpec",
    "Shown",
    "create_families",
    "specs_for",
]
