"""The CRDs are valid structural apiextensions/v1 schemas, match their generator, and the
sample resources validate against them (and bad ones do not)."""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tollgate_operator import builders as b
from tollgate_operator import crds

CHART = Path(__file__).resolve().parents[3] / "deploy" / "helm" / "tollgate"
CRD_FILES = {
    "RoutingPolicy": "routingpolicies.tollgate.dev.yaml",
    "CostBudget": "costbudgets.tollgate.dev.yaml",
}
TYPES = {"object", "array", "string", "integer", "number", "boolean"}
KEYWORDS = {
    "type",
    "properties",
    "required",
    "items",
    "additionalProperties",
    "description",
    "title",
    "enum",
    "default",
    "format",
    "nullable",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "multipleOf",
}
PRINTER_TYPES = {"integer", "number", "string", "boolean", "date"}
PY_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
}


def load_crd(kind: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((CHART / "crds" / CRD_FILES[kind]).read_text())
    return data


def schema_of(kind: str) -> dict[str, Any]:
    version = load_crd(kind)["spec"]["versions"][0]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def examples(kind: str) -> list[dict[str, Any]]:
    out = []
    for path in sorted((CHART / "examples").glob("*.yaml")):
        out += [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") == kind]
    return out


def structural_errors(node: Any, path: str = "") -> Iterator[str]:
    """The apiextensions/v1 structural-schema rules the API server enforces, plus a
    whitelist of keywords so a typo (``minimun``) cannot silently validate nothing."""
    if not isinstance(node, dict):
        yield f"{path}: not a schema object"
        return
    for key in node:
        if key not in KEYWORDS and not key.startswith("x-kubernetes-"):
            yield f"{path}: keyword {key!r} is not allowed in a structural schema"
    preserve = node.get("x-kubernetes-preserve-unknown-fields") is True
    typ = node.get("type")
    if typ not in TYPES:
        yield f"{path}: needs a type (got {typ!r})"
    if typ == "object":
        props, extra = node.get("properties"), node.get("additionalProperties")
        if props is not None and extra is not None:
            yield f"{path}: properties and additionalProperties are mutually exclusive"
        if extra is False or extra is True:
            yield f"{path}: additionalProperties must be a schema"
        if props is None and extra is None and not preserve and path.count(".") > 1:
            yield f"{path}: an object without properties would be pruned to {{}}"
        for req in node.get("required", []):
            if props is None or req not in props:
                yield f"{path}: required field {req!r} is not a property"
        for name, sub in (props or {}).items():
            yield from structural_errors(sub, f"{path}.{name}")
        if isinstance(extra, dict):
            yield from structural_errors(extra, f"{path}.*")
    elif typ == "array":
        items = node.get("items")
        if not isinstance(items, dict):
            yield f"{path}: an array needs one items schema"
        else:
            yield from structural_errors(items, f"{path}[]")
            list_type = node.get("x-kubernetes-list-type")
            if list_type == "set" and items.get("type") not in PY_TYPES:
                yield f"{path}: list-type set needs scalar items"
            if list_type == "map":
                for key in node.get("x-kubernetes-list-map-keys", []):
                    if key not in items.get("required", []):
                        yield f"{path}: list-map key {key!r} must be required"
    if "pattern" in node:
        re.compile(node["pattern"])
    check = PY_TYPES.get(str(typ))
    for value in node.get("enum", []):
        if check is not None and not check(value):
            yield f"{path}: enum value {value!r} is not a {typ}"
    if "default" in node:
        try:
            jsonschema.Draft4Validator(node).validate(node["default"])
        except jsonschema.ValidationError as exc:
            yield f"{path}: default does not validate: {exc.message}"


def pruned_fields(obj: Any, node: dict[str, Any], path: str = "") -> Iterator[str]:
    """Fields the API server would silently drop from ``obj``."""
    if node.get("x-kubernetes-preserve-unknown-fields") or path == ".metadata":
        return
    if isinstance(obj, dict) and node.get("type") == "object":
        props, extra = node.get("properties"), node.get("additionalProperties")
        for key, value in obj.items():
            if props is not None and key in props:
                yield from pruned_fields(value, props[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                yield from pruned_fields(value, extra, f"{path}.{key}")
            else:
                yield f"{path}.{key}"
    elif isinstance(obj, list) and isinstance(node.get("items"), dict):
        for i, value in enumerate(obj):
            yield from pruned_fields(value, node["items"], f"{path}[{i}]")


def validate(kind: str, obj: dict[str, Any]) -> list[str]:
    schema = schema_of(kind)
    errors = [
        f"{'.'.join(str(p) for p in e.absolute_path)}: {e.message}"
        for e in jsonschema.Draft4Validator(schema).iter_errors(obj)
    ]
    return errors + [f"{p}: would be pruned" for p in pruned_fields(obj, schema)]


# --- the CRD files ---------------------------------------------------------------------------


def test_crd_files_match_the_generator() -> None:
    for name, text in crds.rendered().items():
        path = CHART / "crds" / name
        assert path.read_text() == text, f"{path} is stale: run python -m tollgate_operator.crds"
    assert sorted(p.name for p in (CHART / "crds").glob("*.yaml")) == sorted(crds.rendered())


@pytest.mark.parametrize("kind", sorted(CRD_FILES))
def test_crd_is_a_valid_apiextensions_v1_definition(kind: str) -> None:
    crd = load_crd(kind)
    spec = crd["spec"]
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["kind"] == "CustomResourceDefinition"
    names = spec["names"]
    assert crd["metadata"]["name"] == f"{names['plural']}.{spec['group']}"
    assert names["kind"] == kind and names["listKind"] == f"{kind}List"
    assert names["plural"] == names["plural"].lower() and names["singular"] == kind.lower()
    assert spec["group"] == "tollgate.dev" and spec["scope"] == "Namespaced"
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    schema = version["schema"]["openAPIV3Schema"]
    assert list(structural_errors(schema)) == []
    jsonschema.Draft4Validator.check_schema(schema)
    assert "spec" in schema["required"]
    status = schema["properties"]["status"]["properties"]
    assert {"conditions", "observedGeneration"} <= set(status)
    for col in version["additionalPrinterColumns"]:
        assert col["type"] in PRINTER_TYPES and col["jsonPath"].startswith(".")
        first = col["jsonPath"].split(".")[1]
        field = re.split(r"[\[.]", col["jsonPath"].split(".", 2)[2])[0]
        if first in ("spec", "status"):
            assert field in schema["properties"][first]["properties"], col


def test_routing_policy_schema_follows_the_policy_model() -> None:
    from typing import get_args

    from tollgate_common.policy import INTENTS, TIERS, Api, ModelKind

    spec = schema_of("RoutingPolicy")["properties"]["spec"]["properties"]
    routes = spec["routes"]
    assert sorted(routes["required"]) == sorted(INTENTS)
    for intent in INTENTS:
        assert sorted(routes["properties"][intent]["required"]) == sorted(TIERS)
    model = spec["models"]["additionalProperties"]["properties"]
    assert model["kind"]["enum"] == list(get_args(ModelKind))
    provider = spec["providers"]["additionalProperties"]["properties"]
    assert provider["apis"]["items"]["enum"] == list(get_args(Api))


def test_the_schema_names_every_field_the_operator_maps() -> None:
    """A field the builder knows but the schema lacks would be pruned by the API server
    before the operator ever saw it (and one the schema has but the builder lacks would
    be refused as unknown)."""
    spec = schema_of("RoutingPolicy")["properties"]["spec"]
    props = spec["properties"]

    def keys(node: dict[str, Any]) -> set[str]:
        return set(node.get("properties") or node["additionalProperties"]["properties"])

    assert set(props) == set(b._TOP)
    assert keys(props["providers"]) == set(b._PROVIDER)
    assert keys(props["models"]) == set(b._MODEL)
    assert keys(props["tenants"]) == set(b._TENANT)
    assert keys(props["cache"]) == set(b._CACHE)
    assert keys(props["embeddings"]) == set(b._EMBEDDINGS)


# --- the samples ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(CRD_FILES))
def test_examples_validate_against_the_crd(kind: str) -> None:
    docs = examples(kind)
    assert docs, f"no {kind} example"
    for doc in docs:
        assert doc["apiVersion"] == "tollgate.dev/v1alpha1"
        assert validate(kind, doc) == [], doc["metadata"]["name"]


def test_examples_pass_the_operators_own_checks() -> None:
    for doc in examples("RoutingPolicy"):
        b.build_policy(doc["metadata"]["name"], "ns", doc["spec"])
    for doc in examples("CostBudget"):
        b.budget_from_spec(doc["spec"])


def _set(obj: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    *parents, last = path.split(".")
    target = obj
    for key in parents:
        target = target[key]
    if value is _DELETE:
        del target[last]
    else:
        target[last] = value
    return obj


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "where"),
    [
        ("spec.period", "week", "spec.period"),
        ("spec.limitUSD", 0, "spec.limitUSD"),
        ("spec.limitUSD", "500", "spec.limitUSD"),
        ("spec.thresholds", [0.5, 2.5], "spec.thresholds.1"),
        ("spec.thresholds", [], "spec.thresholds"),
        ("spec.action", "block", "spec.action"),
        ("spec.tenant", "team a", "spec.tenant"),
        ("spec.tenant", _DELETE, "spec"),
        ("spec.notification.labels.team", 3, "spec.notification.labels.team"),
        ("spec.owner", "me", ".spec.owner: would be pruned"),
    ],
)
def test_bad_cost_budgets_are_rejected(path: str, value: Any, where: str) -> None:
    errors = validate("CostBudget", _set(examples("CostBudget")[0], path, value))
    assert any(e.startswith(where) for e in errors), errors


@pytest.mark.parametrize(
    ("path", "value", "where"),
    [
        ("spec.routes.math", _DELETE, "spec.routes"),
        ("spec.routes.chat.small", [], "spec.routes.chat.small"),
        ("spec.routes.chat.medium", ["bad model name"], "spec.routes.chat.medium.0"),
        ("spec.models.gpt-5.capabilities", ["telepathy"], "spec.models.gpt-5.capabilities.0"),
        ("spec.models.gpt-5.inputPerMTok", -1, "spec.models.gpt-5.inputPerMTok"),
        ("spec.models.gpt-5.provider", _DELETE, "spec.models.gpt-5"),
        ("spec.providers.openai.baseURL", "ftp://x", "spec.providers.openai.baseURL"),
        ("spec.providers.openai.apiKeyEnv", "sk-abc", "spec.providers.openai.apiKeyEnv"),
        ("spec.cache.ttlSeconds", 0, "spec.cache.ttlSeconds"),
        ("spec.tenants.team-research.maxTier", "huge", "spec.tenants.team-research.maxTier"),
        ("spec.defaultModel", _DELETE, "spec"),
        ("spec.models.bge-m3.kind", "vector", "spec.models.bge-m3.kind"),
        ("spec.models.bge-m3.dimensions", 0, "spec.models.bge-m3.dimensions"),
        ("spec.models.bge-m3.dimensions", 1.5, "spec.models.bge-m3.dimensions"),
        ("spec.models.gpt-5.cacheWritePerMTok", -1, "spec.models.gpt-5.cacheWritePerMTok"),
        ("spec.providers.vllm.apis", ["grpc"], "spec.providers.vllm.apis.0"),
        ("spec.providers.vllm.apis", [], "spec.providers.vllm.apis"),
        ("spec.embeddings.defaultModel", "bad name", "spec.embeddings.defaultModel"),
        ("spec.embeddings.fallbacks", {"bge-m3": "x"}, "spec.embeddings.fallbacks.bge-m3"),
        (
            "spec.embeddings.fallbacks",
            {"bge-m3": ["bad name"]},
            "spec.embeddings.fallbacks.bge-m3.0",
        ),
        ("spec.embeddings.model", "x", ".spec.embeddings.model: would be pruned"),
    ],
)
def test_bad_routing_policies_are_rejected(path: str, value: Any, where: str) -> None:
    errors = validate("RoutingPolicy", _set(examples("RoutingPolicy")[0], path, value))
    assert any(e.startswith(where) for e in errors), errors


def test_structural_checker_catches_mistakes() -> None:
    bad = {
        "type": "object",
        "properties": {
            "a": {"type": "string", "minimun": 1},
            "b": {"type": "array"},
            "c": {"type": "object", "properties": {}, "additionalProperties": {"type": "string"}},
            "d": {"properties": {}},
            "e": {"type": "integer", "enum": ["x"]},
        },
        "required": ["z"],
    }
    errors = "\n".join(structural_errors(bad))
    for needle in ("minimun", ".b: an array", "mutually exclusive", ".d: needs a type", "enum"):
        assert needle in errors
    assert "'z' is not a property" in errors


# --- against the official schemas --------------------------------------------------------------

SHARED_SCHEMAS = CHART.parents[2].parent / "shared" / "schemas" / "prometheus-operator-v0.93.0"


def _missing(what: str) -> None:
    """Fail in CI, skip elsewhere: a file the test needs is not there."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} not checked: {SHARED_SCHEMAS} is missing")
    pytest.skip(f"{what} not checked: {SHARED_SCHEMAS} is missing")


@pytest.mark.parametrize("kind", sorted(CRD_FILES))
def test_crd_validates_against_the_apiextensions_v1_openapi(kind: str) -> None:
    """The schema Kubernetes publishes for CustomResourceDefinition, strictly: an unknown
    keyword anywhere (a typo such as ``minimun``) fails."""
    import kubernetes_validate.utils as kv  # type: ignore[import-untyped]

    floor = yaml.safe_load((CHART / "Chart.yaml").read_text())["kubeVersion"]
    oldest = floor.removeprefix(">=").removesuffix("-0").strip().rsplit(".", 1)[0]
    for version in (oldest, str(kv.latest_version())):
        kv.validate(load_crd(kind), version, strict=True)


def test_generated_rule_validates_against_the_prometheus_operator_crd() -> None:
    path = SHARED_SCHEMAS / "monitoring.coreos.com_prometheusrules.yaml"
    if not path.is_file():
        _missing("the generated PrometheusRule")
    crd = yaml.safe_load(path.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = version["schema"]["openAPIV3Schema"]
    for doc in examples("CostBudget"):
        doc = {**doc, "metadata": {**doc["metadata"], "namespace": "ns", "uid": "u"}}
        rule = b.prometheus_rule(doc, b.budget_from_spec(doc["spec"]), {"release": "kps"})
        errors = [e.message for e in jsonschema.Draft4Validator(schema).iter_errors(rule)]
        assert errors == []
        assert list(pruned_fields(rule, schema)) == []
