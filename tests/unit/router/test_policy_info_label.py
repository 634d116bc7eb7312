"""The policy version and source become labels of ``tollgate_router_policy_info``: a
pushed document must not make them unbounded (L-11)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from tollgate_common.metrics import create_families
from tollgate_common.policy import PRICE_TABLE_FILE
from tollgate_router.metrics import MAX_VERSION_LABEL_CHARS, RouterMetrics, info_label
from tollgate_router.policy_store import PolicyStore


def test_long_or_odd_versions_are_bounded_labels() -> None:
    assert info_label("v1.2-abc") == "v1.2-abc"
    assert info_label("x" * 10_000) == "x" * MAX_VERSION_LABEL_CHARS
    assert info_label('a"b\nc{d}') == "a_b_c_d_"


def test_a_pushed_policy_with_a_huge_version_keeps_one_short_series() -> None:
    registry = CollectorRegistry()
    metrics = RouterMetrics(create_families("router", registry))
    store = PolicyStore(
        policy_file=None, override_file=None, price_table_file=PRICE_TABLE_FILE, listener=metrics
    )
    text = store.current.yaml
    for version in ("v" * 5000, "w" * 5000):
        body = "\n".join(ln for ln in text.splitlines() if not ln.startswith("version:"))
        _, changed = store.update(f"version: {version}\n{body}\n", "rpc")
        assert changed
    series = [
        s.labels
        for fam in registry.collect()
        if fam.name == "tollgate_router_policy_info"
        for s in fam.samples
    ]
    assert series == [{"version": "w" * MAX_VERSION_LABEL_CHARS, "source": "rpc"}]
