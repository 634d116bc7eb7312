"""The operator's write planning: an object that already has the content is not written."""

from __future__ import annotations

from typing import Any

from tollgate_operator.k8s import _needs_update, collection_url, object_url


def rule(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "r",
            "namespace": "ns",
            "labels": {"release": "kps"},
            "ownerReferences": [{"kind": "CostBudget", "name": "b", "uid": "1"}],
        },
        "spec": {"groups": [{"name": "g", "rules": []}]},
    }
    doc.update(overrides)
    return doc


def test_same_content_needs_no_write() -> None:
    existing = rule()
    existing["metadata"] |= {"uid": "x", "resourceVersion": "7", "creationTimestamp": "t"}
    existing["metadata"]["labels"] = {"release": "kps", "added-by-someone": "x"}
    assert _needs_update(existing, rule()) == {}


def test_changed_spec_labels_and_owner_are_patched() -> None:
    desired = rule(spec={"groups": [{"name": "g2", "rules": []}]})
    desired["metadata"]["labels"] = {"release": "other"}
    desired["metadata"]["ownerReferences"] = [{"kind": "CostBudget", "name": "b", "uid": "2"}]
    patch = _needs_update(rule(), desired)
    assert patch == {
        "metadata": {
            "labels": {"release": "other"},
            "ownerReferences": [{"kind": "CostBudget", "name": "b", "uid": "2"}],
        },
        "spec": {"groups": [{"name": "g2", "rules": []}]},
    }


def test_urls() -> None:
    assert collection_url("v1", "configmaps", "ns") == "/api/v1/namespaces/ns/configmaps"
    assert object_url("monitoring.coreos.com/v1", "prometheusrules", "ns", "a b") == (
        "/apis/monitoring.coreos.com/v1/namespaces/ns/prometheusrules/a%20b"
    )
