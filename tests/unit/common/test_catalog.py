"""The metric catalog: enough meaningful families, Prometheus naming, a fresh doc."""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry

from tollgate_common.metrics import CATALOG, Bounded, create_families
from tollgate_common.metrics.catalog import ALL_SERVICES
from tools.gen_metrics_doc import DOC, render

UNIT_SUFFIX = {"seconds": "_seconds", "bytes": "_bytes", "usd": "_usd", "ratio": "_rate"}


def test_at_least_50_own_families_across_router_cache_orchestrator() -> None:
    own = [
        s
        for s in CATALOG.values()
        if s.name.startswith(("tollgate_", "gen_ai_", "grpc_"))
        and set(s.services) & {"router", "cache", "orchestrator"}
    ]
    assert len(own) >= 50, len(own)


def test_names_follow_prometheus_conventions() -> None:
    for spec in CATALOG.values():
        assert re.fullmatch(r"[a-z_][a-z0-9_]*", spec.name), spec.name
        assert spec.name.startswith(("tollgate_", "grpc_", "gen_ai_")), spec.name
        assert (spec.kind == "counter") == spec.name.endswith("_total"), spec.name
        base = spec.name.removesuffix("_total")
        if spec.unit in UNIT_SUFFIX:
            assert base.endswith(UNIT_SUFFIX[spec.unit]) or spec.name.endswith("_usd_total"), (
                spec.name
            )
        assert spec.help.strip(), spec.name
        assert not {"prompt", "user", "api_key", "key", "path"} & set(spec.labels), spec.name


def test_cost_and_savings_are_counters() -> None:
    for name in ("tollgate_llm_cost_usd_total", "tollgate_savings_usd_total"):
        assert CATALOG[name].kind == "counter"


def test_every_service_gets_its_families_and_build_info() -> None:
    for service in ALL_SERVICES:
        registry = CollectorRegistry()
        fams = create_families(service, registry)
        assert (
            registry.get_sample_value(
                "tollgate_build_info", {"service": service, "version": "0.1.0"}
            )
            == 1.0
        )
        assert all(service in CATALOG[n].services for n in fams.names())


def test_default_registry_has_process_collectors() -> None:
    fams = create_families("router")
    names = {m.name for m in fams.registry.collect()}
    assert "process_cpu_seconds" in names or "process_cpu_seconds_total" in names
    assert "python_info" in names


def test_bounded_maps_unknown_values_to_other() -> None:
    b = Bounded(["gpt-4o", "gpt-4o-mini"])
    assert b("gpt-4o") == "gpt-4o"
    assert b("made-up-model") == "other"
    b.update(["made-up-model"])
    assert b("made-up-model") == "made-up-model"
    assert b("gpt-4o") == "other"


def test_metrics_doc_is_fresh() -> None:
    assert DOC.read_text() == render(), "docs/metrics.md is stale: run `make docs`"
