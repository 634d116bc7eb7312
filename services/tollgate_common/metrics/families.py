"""Build a service's metric families from the catalog into an injected registry."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.metrics import MetricWrapperBase

from tollgate_common import __version__
from tollgate_common.metrics.catalog import CATALOG, MetricSpec, specs_for

OTHER = "other"


class Bounded:
    """Maps a label value to itself when it is known, else to ``other``.

    Model names, tenants and routes come from configuration; anything a client
    sends that is not configured must not become a new time series.
    """

    __slots__ = ("_allowed",)

    def __init__(self, allowed: Iterable[str]) -> None:
        self._allowed = frozenset(allowed)

    def __call__(self, value: str) -> str:
        return value if value in self._allowed else OTHER

    def update(self, allowed: Iterable[str]) -> None:
        self._allowed = frozenset(allowed)


def _make(spec: MetricSpec, registry: CollectorRegistry) -> MetricWrapperBase:
    if spec.kind == "counter":
        # prometheus_client appends _total itself.
        return Counter(spec.name.removesuffix("_total"), spec.help, spec.labels, registry=registry)
    if spec.kind == "gauge":
        return Gauge(spec.name, spec.help, spec.labels, registry=registry)
    kwargs: dict[str, Any] = {}
    if spec.buckets:
        kwargs["buckets"] = spec.buckets
    return Histogram(spec.name, spec.help, spec.labels, registry=registry, **kwargs)


class Families:
    """The families of one service, looked up by catalog name.

    Hot paths should bind ``.labels(...)`` children once and keep them, rather
    than look them up per request.
    """

    def __init__(self, service: str, registry: CollectorRegistry) -> None:
        self.service = service
        self.registry = registry
        self._by_name = {s.name: _make(s, registry) for s in specs_for(service)}
        self.gauge("tollgate_build_info").labels(service=service, version=__version__).set(1)

    def __getitem__(self, name: str) -> MetricWrapperBase:
        return self._by_name[name]

    def __contains__(self, name: str) -> bool:
        return name in self._by_name

    def counter(self, name: str) -> Counter:
        m = self._by_name[name]
        assert isinstance(m, Counter), name
        return m

    def gauge(self, name: str) -> Gauge:
        m = self._by_name[name]
        assert isinstance(m, Gauge), name
        return m

    def histogram(self, name: str) -> Histogram:
        m = self._by_name[name]
        assert isinstance(m, Histogram), name
        return m

    def names(self) -> list[str]:
        return list(self._by_name)


def create_families(service: str, registry: CollectorRegistry | None = None) -> Families:
    """Families for ``service`` in ``registry`` (a fresh one by default), plus the
    default process and platform collectors."""
    disable_created_metrics()  # type: ignore[no-untyped-call]  # _created doubles series
    if registry is None:
        from prometheus_client import GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR

        registry = CollectorRegistry()
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            registry.register(collector)
    if service not in {s for spec in CATALOG.values() for s in spec.services}:
        raise ValueError(f"unknown service {service!r}")
    return Families(service, registry)
