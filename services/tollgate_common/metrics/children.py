"""Bound label children of one metric family, created once and reused.

The label lookup is the costly part of a prometheus_client observation, so hot paths
keep the ``.labels(...)`` child rather than look it up per call. ``Children`` is that
cache: ``Children(family)(*values)`` binds on first use and returns the same child
afterwards. Pass ``bind=`` the label tuples known up front (every reason, every kind)
and they are bound at once, so their series are exported at 0 before the first event.
Label values must be bounded (see ``Bounded``): each new tuple is a new series.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Generic, TypeVar

from prometheus_client.metrics import Gauge, MetricWrapperBase

M = TypeVar("M", bound=MetricWrapperBase)


class Children(Generic[M]):
    """Label values (in the family's label order) -> the bound child."""

    __slots__ = ("_cache", "family")

    def __init__(self, family: M, bind: Iterable[tuple[str, ...]] = ()) -> None:
        self.family = family
        self._cache: dict[tuple[str, ...], M] = {}
        for values in bind:
            self(*values)

    def __call__(self, *values: str) -> M:
        child = self._cache.get(values)
        if child is None:
            child = self._cache[values] = self.family.labels(*values)
        return child

    def remove(self, *values: str) -> None:
        """Drop one series (a label set that no longer exists, e.g. an old version)."""
        self._cache.pop(values, None)
        with contextlib.suppress(KeyError):  # never bound: nothing to drop
            self.family.remove(*values)

    def clear(self) -> None:
        """Drop every series of the family."""
        self.family.clear()
        self._cache.clear()

    def __len__(self) -> int:
        return len(self._cache)


class Shown:
    """An info gauge's series: exactly the label sets last shown, each at 1."""

    __slots__ = ("_children", "_shown")

    def __init__(self, family: Gauge) -> None:
        self._children = Children(family)
        self._shown: tuple[tuple[str, ...], ...] = ()

    def show(self, label_sets: tuple[tuple[str, ...], ...]) -> None:
        """Set these series to 1 and drop the ones shown before that are not among them."""
        for labels in set(self._shown) - set(label_sets):
            self._children.remove(*labels)
        for labels in label_sets:
            self._children(*labels).set(1)
        self._shown = label_sets
