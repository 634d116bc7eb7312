"""RoutingPolicy carries every field of the policy model: embedding models, the
``embeddings`` section, cache-write prices and the APIs a provider speaks."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from tollgate_common.policy import (
    DEFAULT_POLICY_FILE,
    CachePolicy,
    EmbeddingPolicy,
    ModelEntry,
    Policy,
    Provider,
    TenantPolicy,
    load_policy,
)
from tollgate_operator import builders as b

EXAMPLE = Path(__file__).resolve().parents[3] / "deploy/helm/tollgate/examples/routingpolicy.yaml"


def policy_spec() -> dict[str, Any]:
    doc = next(d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d)
    spec: dict[str, Any] = copy.deepcopy(doc["spec"])
    return spec


def built(spec: Mapping[str, Any]) -> Policy:
    return b.build_policy("default", "llm", spec).policy


# --- the mapping follows the policy model ---------------------------------------------------

TABLES: list[tuple[type[BaseModel], Mapping[str, str]]] = [
    (Policy, b._TOP),
    (Provider, b._PROVIDER),
    (ModelEntry, b._MODEL),
    (TenantPolicy, b._TENANT),
    (CachePolicy, b._CACHE),
    (EmbeddingPolicy, b._EMBEDDINGS),
]


@pytest.mark.parametrize(("model", "table"), TABLES, ids=[m.__name__ for m, _ in TABLES])
def test_every_policy_field_has_a_resource_name(
    model: type[BaseModel], table: Mapping[str, str]
) -> None:
    # The version is the operator's (a content hash), never the resource author's.
    assert set(table.values()) == set(model.model_fields) - {"version"}


def _to_spec(policy: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse of ``policy_from_spec``: a policy file as a RoutingPolicy spec."""

    def camel(obj: Mapping[str, Any], table: Mapping[str, str]) -> dict[str, Any]:
        back = {snake: c for c, snake in table.items()}
        return {back[k]: v for k, v in obj.items()}

    def named(obj: Mapping[str, Any], table: Mapping[str, str]) -> dict[str, Any]:
        return {name: camel(entry, table) for name, entry in obj.items()}

    out = camel({k: v for k, v in policy.items() if k != "version"}, b._TOP)
    out["providers"] = named(out["providers"], b._PROVIDER)
    out["models"] = named(out["models"], b._MODEL)
    out["tenants"] = named(out.get("tenants") or {}, b._TENANT)
    out["cache"] = camel(out.get("cache") or {}, b._CACHE)
    out["embeddings"] = camel(out.get("embeddings") or {}, b._EMBEDDINGS)
    return out


def test_the_shipped_policy_survives_a_round_trip_through_a_spec() -> None:
    """policy file -> spec -> policy: the same routing, embeddings included."""
    shipped = load_policy()
    doc = yaml.safe_load(DEFAULT_POLICY_FILE.read_text())
    assert doc["embeddings"], "the shipped policy no longer shows the embeddings section"
    again = built(_to_spec(doc))
    assert again.model_dump(exclude={"version"}) == shipped.model_dump(exclude={"version"})


# --- the example --------------------------------------------------------------------------------


def test_example_carries_embeddings_kinds_dimensions_and_apis() -> None:
    p = built(policy_spec())
    assert p.embeddings.default_model == "text-embedding-3-small"
    assert p.embeddings.fallbacks == {"bge-m3": ["bge-m3-ollama"]}
    bge = p.models["bge-m3"]
    assert (bge.kind, bge.dimensions, bge.upstream_model) == ("embedding", 1024, "BAAI/bge-m3")
    small = p.models["text-embedding-3-small"]
    assert (small.kind, small.dimensions) == ("embedding", 1536)  # from the price table
    assert p.models["gpt-4o"].kind == "chat"
    assert p.providers["vllm"].apis == ("chat", "embeddings")
    assert p.providers["openai"].apis == ("chat", "responses", "embeddings")  # the default
    assert p.models["llama-3.1-8b"].cache_write_per_mtok == 0.02
    assert p.models["gpt-4o"].cache_write_per_mtok is None  # 1.25x input when priced


def test_the_pushed_text_keeps_the_new_fields() -> None:
    """The routers load the YAML text, not the operator's parsed model."""
    doc = yaml.safe_load(b.build_policy("default", "llm", policy_spec()).text)
    assert doc["embeddings"]["default_model"] == "text-embedding-3-small"
    assert doc["models"]["bge-m3"]["kind"] == "embedding"
    assert doc["models"]["bge-m3"]["dimensions"] == 1024
    assert doc["models"]["llama-3.1-8b"]["cache_write_per_mtok"] == 0.02
    assert doc["providers"]["ollama"]["apis"] == ["chat", "embeddings"]


def test_without_an_embeddings_section_auto_has_no_embedding_model() -> None:
    spec = policy_spec()
    del spec["embeddings"]
    p = built(spec)
    assert p.embeddings.default_model is None and p.embeddings.fallbacks == {}


def test_the_version_follows_the_embeddings_section() -> None:
    a = b.build_policy("default", "llm", policy_spec()).version
    spec = policy_spec()
    spec["embeddings"]["defaultModel"] = "text-embedding-3-large"
    assert b.build_policy("default", "llm", spec).version != a


# --- bad values name the resource's field --------------------------------------------------------


def _set(path: str, value: Any) -> dict[str, Any]:
    spec = policy_spec()
    *parents, last = path.split("/")
    target = spec
    for key in parents:
        target = target[key]
    target[last] = value
    return spec


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("models/bge-m3/kind", "vector", "spec.models.bge-m3.kind: Input should be"),
        ("models/bge-m3/dimensions", 0, "spec.models.bge-m3.dimensions: Input should be"),
        (
            "models/llama-3.1-8b/cacheWritePerMTok",
            -1,
            "spec.models.llama-3.1-8b.cacheWritePerMTok: Input should be",
        ),
        ("providers/vllm/apis", ["grpc"], "spec.providers.vllm.apis.0: Input should be"),
        ("providers/vllm/apis", [], "spec.providers.vllm.apis: "),
        (
            "embeddings/defaultModel",
            "ghost",
            "spec.embeddings.defaultModel: unknown model 'ghost'",
        ),
        (
            "embeddings/defaultModel",
            "gpt-4o",
            "spec.embeddings.defaultModel: 'gpt-4o' is a chat model, not an embedding model",
        ),
        (
            "embeddings/fallbacks",
            {"bge-m3": ["text-embedding-3-small"]},
            "spec.embeddings.fallbacks.bge-m3[0]: 'text-embedding-3-small' has 1536 dimensions",
        ),
        ("embeddings/fallbacks", {"ghost": []}, "spec.embeddings.fallbacks.ghost: unknown model"),
        ("embeddings/fallbacks", {"bge-m3": "x"}, "spec.embeddings.fallbacks.bge-m3: Input"),
        (
            "routes/chat/small",
            ["bge-m3"],
            "spec.routes.chat.small[0]: 'bge-m3' is an embedding model, not a chat model",
        ),
        (
            "defaultModel",
            "text-embedding-3-small",
            "spec.defaultModel: 'text-embedding-3-small' is an embedding model",
        ),
    ],
)
def test_bad_values_name_the_resource_field(path: str, value: Any, message: str) -> None:
    with pytest.raises(b.SpecError) as exc:
        b.build_policy("default", "llm", _set(path, value))
    assert message in str(exc.value)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("embeddings", "text-embedding-3-small", "spec.embeddings: must be an object"),
        ("embeddings/default_model", "x", "spec.embeddings.default_model: unknown field"),
        ("models/bge-m3/dims", 3, "spec.models.bge-m3.dims: unknown field"),
    ],
)
def test_malformed_sections_are_refused(path: str, value: Any, message: str) -> None:
    with pytest.raises(b.SpecError, match=message.replace(".", r"\.")):
        b.policy_from_spec(_set(path, value))
