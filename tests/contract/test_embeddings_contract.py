"""/v1/embeddings against OpenAI's own OpenAPI document.

What tollgate sends upstream is checked without processes: every input form the
dialect accepts, as its wire writes it, is a ``CreateEmbeddingRequest``. What it
answers is checked with real processes (simulator upstream), read raw with httpx2:
a float answer is a ``CreateEmbeddingResponse``, a base64 one is once its vectors are
decoded (OpenAI's schema types ``embedding`` as floats only, though its API answers
base64 strings when asked), and a refusal is an ``ErrorResponse``.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import orjson
import pytest

from tests.contract.openai_contract import assert_valid, require_openapi
from tollgate_orchestrator.dialects.embeddings import DIALECT, WIRE
from tollgate_orchestrator.validation import Limits
from tools.stack import DEV_KEY, Stack

REQUEST = "CreateEmbeddingRequest"
RESPONSE = "CreateEmbeddingResponse"
ERROR = "ErrorResponse"
BODIES: dict[str, dict[str, Any]] = {
    "string": {"input": "The food was delicious."},
    "strings": {"input": ["one", "two", "three"], "encoding_format": "float"},
    "tokens": {"input": [1212, 318, 257, 1332, 13], "encoding_format": "base64"},
    "token_lists": {"input": [[1212, 318], [257]], "dimensions": 256},
    "everything": {
        "input": ["x"],
        "encoding_format": "float",
        "dimensions": 8,
        "user": "contract-test",
        "not_openai": True,  # dropped: OpenAI's request allows no other property
    },
}


@pytest.mark.parametrize("case", sorted(BODIES))
def test_what_goes_upstream_is_a_create_embedding_request(case: str) -> None:
    req = DIALECT.parse(orjson.dumps({"model": "auto", **BODIES[case]}), Limits())
    assert_valid(REQUEST, orjson.loads(WIRE.payload(req, "text-embedding-3-small")))


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx2.Client]:
    require_openapi()
    stack = Stack(log_dir=Path(tmp_path_factory.mktemp("embeddings-contract")))
    stack.start()
    try:
        with httpx2.Client(
            base_url=stack.base_url, timeout=30, headers={"authorization": f"Bearer {DEV_KEY}"}
        ) as c:
            yield c
    finally:
        stack.stop()


def post(http: httpx2.Client, **body: Any) -> httpx2.Response:
    return http.post("/v1/embeddings", json={"model": "auto", **body})


@pytest.mark.integration
@pytest.mark.parametrize("case", sorted(BODIES))
def test_answers_are_create_embedding_responses(http: httpx2.Client, case: str) -> None:
    r = post(http, **BODIES[case])
    assert r.status_code == 200, r.text
    body = r.json()
    if BODIES[case].get("encoding_format") == "base64":
        for d in body["data"]:
            assert isinstance(d["embedding"], str), "base64 was asked for"
            raw = base64.b64decode(d["embedding"])
            d["embedding"] = list(struct.unpack(f"<{len(raw) // 4}f", raw))
    assert_valid(RESPONSE, body)


@pytest.mark.integration
@pytest.mark.parametrize(
    "body",
    [
        {"input": ["ok", ""]},
        {"input": "x", "encoding_format": "int8"},
        {"input": "x", "model": "gpt-4o-mini"},
        {"input": "x", "model": "no-such-model"},
    ],
)
def test_refusals_are_error_responses(http: httpx2.Client, body: dict[str, Any]) -> None:
    r = post(http, **body)
    assert 400 <= r.status_code < 500
    assert_valid(ERROR, r.json())
