"""The CRDs, built from the policy model's own enums so the two cannot drift.

``python -m tollgate_operator.crds`` writes them into the chart's ``crds/``; a test
fails when the files differ from what this module builds.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, get_args

import yaml

from tollgate_common.budgets import ACTIONS, PERIODS, RESOURCE_TENANT_RE
from tollgate_common.policy import (
    INTENTS,
    TIERS,
    TYPE_APIS,
    Api,
    AuthScheme,
    ModelKind,
    ProviderType,
)
from tollgate_operator import GROUP, VERSION

CRD_DIR = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "tollgate" / "crds"
CAPABILITIES = ("tools", "json", "vision", "reasoning", "streaming")
APIS: tuple[str, ...] = get_args(Api)
_TYPE_APIS = "; ".join(f"{t}: {', '.join(apis)}" for t, apis in TYPE_APIS.items())
MODEL_KINDS: tuple[str, ...] = get_args(ModelKind)
MODEL_NAME = {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$", "maxLength": 128}
MAX_MODELS = 200

Schema = dict[str, Any]


def _obj(props: Schema, required: list[str] | None = None, **extra: Any) -> Schema:
    out: Schema = {"type": "object", "properties": props, **extra}
    if required:
        out["required"] = required
    return out


def _map(values: Schema, **extra: Any) -> Schema:
    return {"type": "object", "additionalProperties": values, **extra}


def _chain() -> Schema:
    return {
        "type": "array",
        "description": "Models to try, primary first, then fallbacks.",
        "minItems": 1,
        "maxItems": 8,
        "items": dict(MODEL_NAME),
    }


def _routes(require_all: bool) -> Schema:
    tiers = _obj({t: _chain() for t in TIERS}, list(TIERS) if require_all else None)
    if not require_all:
        tiers["minProperties"] = 1
    return _obj(
        {i: dict(tiers) for i in INTENTS},
        list(INTENTS) if require_all else None,
        description="intent -> tier -> model chain."
        + (" Every intent and tier is required." if require_all else ""),
    )


def _condition() -> Schema:
    return _obj(
        {
            "type": {"type": "string", "maxLength": 316},
            "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
            "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0},
            "lastTransitionTime": {"type": "string", "format": "date-time"},
            "reason": {"type": "string", "maxLength": 1024},
            "message": {"type": "string", "maxLength": 32768},
        },
        ["type", "status", "lastTransitionTime", "reason", "message"],
    )


def _status(extra: Schema) -> Schema:
    # kopf may keep handler state here too, so unknown fields are preserved.
    out = _obj(
        {
            "observedGeneration": {"type": "integer", "format": "int64"},
            "conditions": {
                "type": "array",
                "items": _condition(),
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            },
            **extra,
        }
    )
    out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def _price(what: str) -> Schema:
    return {
        "type": "number",
        "minimum": 0,
        "description": f"USD per 1M {what}; default: the shipped price table.",
    }


def routing_policy_spec() -> Schema:
    provider = _obj(
        {
            "type": {
                "type": "string",
                "enum": list(get_args(ProviderType)),
                "description": "The provider's wire: openai, anthropic (Messages), azure "
                "(v1, or classic with apiVersion), gemini (its OpenAI-compatible endpoint) "
                "or compatible (vLLM, Ollama, llama.cpp). Default: openai.",
            },
            "baseURL": {"type": "string", "pattern": "^https?://", "maxLength": 2048},
            "apiKeyFile": {
                "type": "string",
                "description": "A file holding the key or a bearer token, read again when "
                "it changes (an Entra token a sidecar refreshes); wins over apiKeyEnv.",
                "maxLength": 4096,
            },
            "auth": {
                "type": "string",
                "enum": list(get_args(AuthScheme)),
                "description": "How the key is sent; default: the type's own.",
            },
            "apiVersion": {
                "type": "string",
                "pattern": "^[0-9A-Za-z.-]*$",
                "maxLength": 40,
                "description": "Azure's classic deployments API version; empty: the v1 API.",
            },
            "apiKeyEnv": {
                "type": "string",
                "description": "Env var holding the API key (never the key itself).",
                "pattern": "^([A-Za-z_][A-Za-z0-9_]*)?$",
                "maxLength": 128,
            },
            "apis": {
                "type": "array",
                "description": "The client APIs the provider speaks natively; a request in "
                f"another is translated. Default: the type's own ({_TYPE_APIS}).",
                "minItems": 1,
                "items": {"type": "string", "enum": list(APIS)},
                "x-kubernetes-list-type": "set",
            },
        },
        ["baseURL"],
    )
    model = _obj(
        {
            "provider": {"type": "string", "minLength": 1, "maxLength": 63},
            "upstreamModel": {"type": "string", "maxLength": 256},
            "inputPerMTok": _price("input tokens"),
            "cachedInputPerMTok": _price("cached input tokens"),
            "outputPerMTok": _price("output tokens"),
            "cacheWritePerMTok": {
                "type": "number",
                "minimum": 0,
                "description": "USD per 1M input tokens written to the provider's prompt "
                "cache; default: the shipped price table, else 1.25x inputPerMTok.",
            },
            "cacheWrite1hPerMTok": {
                "type": "number",
                "minimum": 0,
                "description": "USD per 1M input tokens written to a 1-hour prompt cache "
                "(Anthropic); default: the shipped price table, else 2x inputPerMTok.",
            },
            "contextWindow": {"type": "integer", "minimum": 1},
            "capabilities": {
                "type": "array",
                "items": {"type": "string", "enum": list(CAPABILITIES)},
                "x-kubernetes-list-type": "set",
            },
            "kind": {
                "type": "string",
                "enum": list(MODEL_KINDS),
                "description": "embedding models serve /v1/embeddings only, and routes "
                "name chat models only. Default: the shipped price table, else chat.",
            },
            "dimensions": {
                "type": "integer",
                "minimum": 1,
                "description": "The length of an embedding model's vectors; a fallback "
                "must make vectors as long.",
            },
        },
        ["provider"],
    )
    tenant = _obj(
        {
            "routes": _routes(require_all=False),
            "allowedModels": {"type": "array", "minItems": 1, "items": dict(MODEL_NAME)},
            "maxTier": {"type": "string", "enum": list(TIERS)},
        }
    )
    return _obj(
        {
            "providers": _map(provider, minProperties=1, maxProperties=32),
            "models": _map(model, minProperties=1, maxProperties=MAX_MODELS),
            "routes": _routes(require_all=True),
            "defaultModel": dict(MODEL_NAME),
            "baselineModel": dict(MODEL_NAME),
            "tenants": _map(tenant, maxProperties=256),
            "cache": _obj(
                {
                    "enabled": {"type": "boolean"},
                    "ttlSeconds": {"type": "integer", "minimum": 1, "maximum": 2_592_000},
                }
            ),
            "embeddings": _obj(
                {
                    "defaultModel": {
                        **MODEL_NAME,
                        "description": "The embedding model of `model: auto` on "
                        "/v1/embeddings; unset: auto is refused.",
                    },
                    "fallbacks": _map(
                        {"type": "array", "maxItems": 8, "items": dict(MODEL_NAME)},
                        maxProperties=MAX_MODELS,
                        description="model -> the models to try when it fails, in order: "
                        "only the same model served elsewhere (vectors of two models "
                        "do not mix).",
                    ),
                }
            ),
        },
        ["providers", "models", "routes", "defaultModel", "baselineModel"],
    )


def cost_budget_spec() -> Schema:
    labels = _map(
        {"type": "string", "maxLength": 128, "pattern": r"^[A-Za-z0-9 ._:/@+-]*$"},
        maxProperties=16,
        description="Labels added to the generated alerts, for Alertmanager routing.",
    )
    # Label names are checked by the operator (condition Invalid): a CEL rule over map
    # keys of unbounded length could exceed the API server's cost budget.
    return _obj(
        {
            "tenant": {"type": "string", "pattern": RESOURCE_TENANT_RE.pattern, "maxLength": 63},
            "period": {"type": "string", "enum": list(PERIODS)},
            "limitUSD": {
                "type": "number",
                "minimum": 0,
                "exclusiveMinimum": True,
                "maximum": 1e9,
            },
            "thresholds": {
                "type": "array",
                "description": "Fractions of limitUSD that raise an alert; 1.0 = exhausted.",
                "minItems": 1,
                "maxItems": 10,
                "items": {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 2},
                "x-kubernetes-list-type": "set",
                "default": [0.5, 0.8, 1.0],
            },
            "action": {"type": "string", "enum": list(ACTIONS), "default": "reject"},
            "notification": _obj({"labels": labels}),
        },
        ["tenant", "period", "limitUSD"],
    )


def _applied_columns() -> list[Schema]:
    return [
        {
            "name": "Applied",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Applied")].status',
        },
        {
            "name": "Reason",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Applied")].reason',
        },
    ]


def _crd(
    kind: str, plural: str, short: str, spec: Schema, status: Schema, columns: list[Schema]
) -> Schema:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "tollgate"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": [short],
                "categories": ["tollgate"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        *columns,
                        *_applied_columns(),
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": _obj(
                            {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": status,
                            },
                            ["spec"],
                        )
                    },
                }
            ],
        },
    }


def routing_policy_crd() -> Schema:
    status = _status(
        {
            "policyVersion": {"type": "string", "description": "As reported by the routers."},
            "routers": {"type": "integer", "description": "Router replicas that took it."},
        }
    )
    columns = [
        {"name": "Default", "type": "string", "jsonPath": ".spec.defaultModel"},
        {"name": "Version", "type": "string", "jsonPath": ".status.policyVersion"},
        {"name": "Routers", "type": "integer", "jsonPath": ".status.routers"},
    ]
    return _crd(
        "RoutingPolicy", "routingpolicies", "tgpolicy", routing_policy_spec(), status, columns
    )


def cost_budget_crd() -> Schema:
    status = _status(
        {
            "orchestrators": {"type": "integer"},
            "prometheusRule": {"type": "string"},
        }
    )
    columns = [
        {"name": "Tenant", "type": "string", "jsonPath": ".spec.tenant"},
        {"name": "Period", "type": "string", "jsonPath": ".spec.period"},
        {"name": "Limit USD", "type": "number", "jsonPath": ".spec.limitUSD"},
        {"name": "Action", "type": "string", "jsonPath": ".spec.action"},
    ]
    return _crd("CostBudget", "costbudgets", "tgbudget", cost_budget_spec(), status, columns)


HEADER = "# Generated from services/tollgate_operator/crds.py: python -m tollgate_operator.crds\n"


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True  # plain YAML: no &anchors for the repeated route schemas


def rendered() -> dict[str, str]:
    """File name -> YAML text, exactly as committed in the chart."""
    out = {}
    for crd in (routing_policy_crd(), cost_budget_crd()):
        name = f"{crd['metadata']['name']}.yaml"
        out[name] = HEADER + yaml.dump(crd, Dumper=_Dumper, sort_keys=False, width=100)
    return out


def main() -> int:
    CRD_DIR.mkdir(parents=True, exist_ok=True)
    for name, text in rendered().items():
        (CRD_DIR / name).write_text(text)
        print(f"wrote {CRD_DIR / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
