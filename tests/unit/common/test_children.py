"""Children: label children bound once per label tuple, pre-bound ones exported at 0."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from tollgate_common.metrics import Children


def test_children_are_bound_once_and_reused() -> None:
    registry = CollectorRegistry()
    family = Counter("demo_events", "d", ["kind", "result"], registry=registry)
    children = Children(family)
    a = children("x", "ok")
    assert children("x", "ok") is a
    a.inc()
    children("x", "ok").inc()
    assert registry.get_sample_value("demo_events_total", {"kind": "x", "result": "ok"}) == 2
    assert len(children) == 1


def test_pre_bound_children_are_exported_before_the_first_event() -> None:
    registry = CollectorRegistry()
    family = Counter("demo_reasons", "d", ["reason"], registry=registry)
    Children(family, bind=[("a",), ("b",)])
    text = generate_latest(registry).decode()
    assert 'demo_reasons_total{reason="a"} 0.0' in text
    assert 'demo_reasons_total{reason="b"} 0.0' in text


def test_remove_and_clear_drop_series() -> None:
    registry = CollectorRegistry()
    family = Gauge("demo_info", "d", ["version"], registry=registry)
    children = Children(family)
    children("v1").set(1)
    children("v2").set(1)
    children.remove("v1")
    children.remove("never-bound")  # nothing to drop: no error
    assert registry.get_sample_value("demo_info", {"version": "v1"}) is None
    assert registry.get_sample_value("demo_info", {"version": "v2"}) == 1
    children.clear()
    assert registry.get_sample_value("demo_info", {"version": "v2"}) is None
    assert len(children) == 0
    children("v1").set(2)  # rebound after a clear, not a stale child
    assert registry.get_sample_value("demo_info", {"version": "v1"}) == 2
