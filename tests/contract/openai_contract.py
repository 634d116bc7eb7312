"""Validate JSON bodies against OpenAI's own OpenAPI 3.1 document.

The document (../shared/schemas/openai-openapi/openapi.yaml, see the README beside it) is
loaded once per process. Its schemas are JSON Schema 2020-12 in name, but still carry some
OpenAPI 3.0 idioms that a 2020-12 validator would misread; `_to_2020_12` rewrites them
(see there). `$ref`s resolve against the whole document.

    assert_valid("CreateChatCompletionResponse", body)   # AssertionError listing every error

Without the document, `assert_valid` and `require_openapi` fail under CI (CI=true) and skip
elsewhere, saying what was not checked.
"""

from __future__ import annotations

import difflib
import os
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match, relevance
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

ROOT = Path(__file__).resolve().parents[2]
OPENAPI_PATH = ROOT.parent / "shared" / "schemas" / "openai-openapi" / "openapi.yaml"

_BASE_URI = "urn:openai-openapi"
_MAX_ERRORS = 20
_MAX_MESSAGE = 400

# Keywords whose value is one schema, a list of schemas, or a name -> schema map. Only these
# are walked, so a property *named* "nullable" or an `example` value is never rewritten.
_ONE = (
    "items",
    "additionalProperties",
    "not",
    "if",
    "then",
    "else",
    "contains",
    "propertyNames",
    "unevaluatedItems",
    "unevaluatedProperties",
)
_MANY = ("allOf", "anyOf", "oneOf", "prefixItems")
_MAP = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")


def require_openapi(what: str = "tollgate's OpenAI API contract") -> None:
    """Fail in CI, skip elsewhere, when the OpenAPI document is not there."""
    if OPENAPI_PATH.is_file():
        return
    msg = f"{what} not checked: OpenAI's OpenAPI document is not at {OPENAPI_PATH}"
    if os.environ.get("CI") == "true":
        pytest.fail(msg)
    pytest.skip(msg)


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI 3.0 `nullable: true` as 2020-12: null is allowed besides the schema."""
    t = schema.get("type")
    if isinstance(t, str) and not any(k in schema for k in (*_MANY, "$ref")):
        schema["type"] = [t, "null"]
        # An enum would still refuse null (e.g. a stream chunk's `finish_reason: null`).
        if "enum" in schema and None not in schema["enum"]:
            schema["enum"] = [*schema["enum"], None]
        return schema
    if not schema:
        return schema  # {} already accepts null
    return {"anyOf": [{"type": "null"}, schema]}


def _nullable_marker(member: object) -> bool:
    return (
        isinstance(member, dict)
        and member.get("nullable") is True
        and set(member) <= {"nullable", "description", "title"}
    )


def _to_2020_12(node: Any, component: str) -> Any:
    """Rewrite the OpenAPI 3.0 idioms the document still uses into JSON Schema 2020-12.

    - `nullable: true` (110 places, e.g. CreateChatCompletionStreamResponse.usage and every
      chunk's finish_reason): not a 2020-12 keyword, so without this null would be refused.
    - `allOf: [{$ref: X}, {nullable: true}]`: X or null (the Assistants schemas).
    - boolean `exclusiveMinimum: true` next to `minimum` (3.0): 2020-12 wants the number, and
      jsonschema would read `true` as 1.
    - `$recursiveRef`/`$recursiveAnchor` (2019-09, CompoundFilter): not in 2020-12; the
      anchor is the component itself, so it becomes a plain `$ref` to it.
    `discriminator`, `x-*`, `example`, `deprecated` are annotations that jsonschema ignores;
    the `oneOf`/`anyOf` next to each discriminator still decides.
    """
    if isinstance(node, list):
        return [_to_2020_12(v, component) for v in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = dict(node)
    nullable = out.pop("nullable", False) is True
    if isinstance(out.get("allOf"), list):
        # A member that only says "nullable" makes the whole allOf nullable.
        kept = [m for m in out["allOf"] if not _nullable_marker(m)]
        if len(kept) < len(out["allOf"]):
            out["allOf"] = kept
            nullable = True
    for k in _ONE:
        if isinstance(out.get(k), dict):
            out[k] = _to_2020_12(out[k], component)
    for k in _MANY:
        if isinstance(out.get(k), list):
            out[k] = [_to_2020_12(v, component) for v in out[k]]
    for k in _MAP:
        if isinstance(out.get(k), dict):
            out[k] = {name: _to_2020_12(v, component) for name, v in out[k].items()}
    for bound, limit in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        # pop first: a `false` bound just goes.
        if isinstance(out.get(bound), bool) and out.pop(bound) and limit in out:
            out[bound] = out.pop(limit)
    if "$recursiveRef" in out:
        out.pop("$recursiveRef")
        out["$ref"] = f"#/components/schemas/{component}"
    out.pop("$recursiveAnchor", None)
    return _nullable(out) if nullable else out


@cache
def _document() -> dict[str, Any]:
    # CSafeLoader: the YAML is ~3 MB, about 1 s with libyaml, far slower in pure Python.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with OPENAPI_PATH.open("rb") as f:
        doc: dict[str, Any] = yaml.load(f, Loader=loader)
    schemas = doc["components"]["schemas"]
    doc["components"]["schemas"] = {n: _to_2020_12(s, n) for n, s in schemas.items()}
    return doc


@cache
def _registry() -> Registry[Any]:
    resource = Resource.from_contents(_document(), default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource(_BASE_URI, resource)
    return registry


@cache
def _validator(schema_name: str) -> Draft202012Validator:
    names = _document()["components"]["schemas"]
    if schema_name not in names:
        close = difflib.get_close_matches(schema_name, names, n=5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise LookupError(
            f"no schema {schema_name!r} in #/components/schemas of {OPENAPI_PATH}{hint}"
        )
    ref = {"$ref": f"{_BASE_URI}#/components/schemas/{schema_name}"}
    return Draft202012Validator(ref, registry=_registry())


def _short(text: str, limit: int = _MAX_MESSAGE) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(error: ValidationError) -> str:
    line = f"{error.json_path}: {_short(error.message)}"
    if error.context:
        # anyOf/oneOf: the one branch that came closest says more than "is not valid under".
        best = best_match(error.context)
        if best is not None:
            line += f"\n    closest branch: {best.json_path}: {_short(best.message)}"
    return line


def assert_valid(schema_name: str, instance: object) -> None:
    """Raise AssertionError with every error (JSON path, message) if `instance` does not
    validate against `#/components/schemas/<schema_name>`; LookupError for an unknown name."""
    require_openapi(f"{schema_name} against OpenAI's OpenAPI document")
    errors = sorted(_validator(schema_name).iter_errors(instance), key=relevance, reverse=True)
    if not errors:
        return
    shown = [_describe(e) for e in errors[:_MAX_ERRORS]]
    more = len(errors) - len(shown)
    tail = f"\n  ... and {more} more" if more > 0 else ""
    raise AssertionError(
        f"{len(errors)} error(s) against {schema_name} in {OPENAPI_PATH.name}:\n  "
        + "\n  ".join(shown)
        + tail
        + f"\ninstance: {_short(repr(instance), 1500)}"
    )
