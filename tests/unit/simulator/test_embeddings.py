"""The simulator's embeddings: OpenAI's schema, deterministic unit vectors, dimensions,
base64 as OpenAI encodes it, token arrays, usage and field-naming 400s."""

from __future__ import annotations

import base64
import math
from array import array
from typing import Any

import orjson
import pytest

from tests.contract.openai_contract import assert_valid
from tollgate_simulator import embeddings
from tollgate_simulator.generate import RequestError


def embed(**body: Any) -> dict[str, Any]:
    body.setdefault("model", "text-embedding-3-small")
    body.setdefault("input", "The food was delicious.")
    req = embeddings.parse_request(orjson.dumps(body))
    out: dict[str, Any] = orjson.loads(req.reply("", 0).body())
    return out


def vectors(answer: dict[str, Any]) -> list[list[float]]:
    return [d["embedding"] for d in answer["data"]]


def test_answer_matches_openais_schema_with_usage() -> None:
    answer = embed(input=["one", "two words", "three words here"])
    assert_valid("CreateEmbeddingResponse", answer)
    assert [d["index"] for d in answer["data"]] == [0, 1, 2]
    assert answer["model"] == "text-embedding-3-small"
    assert answer["usage"] == {"prompt_tokens": 1 + 3 + 4, "total_tokens": 8}


@pytest.mark.parametrize(
    ("model", "dims"),
    [
        ("text-embedding-3-small", 1536),
        ("text-embedding-3-large", 3072),
        ("text-embedding-ada-002", 1536),
        ("nomic-embed-text", embeddings.DEFAULT_DIMENSIONS),
    ],
)
def test_unit_vectors_of_the_models_size(model: str, dims: int) -> None:
    (vec,) = vectors(embed(model=model))
    assert len(vec) == dims and math.isclose(math.hypot(*vec), 1.0, rel_tol=1e-5)


def test_deterministic_per_input_and_model() -> None:
    a, b, c = vectors(embed(input=["same", "same", "other"]))
    assert a == b != c
    assert vectors(embed(input="same"))[0] == a
    assert vectors(embed(input="same", model="text-embedding-3-large"))[0][:8] != a[:8]


def test_dimensions_shorten_and_renormalise_as_the_3_models_do() -> None:
    (full,) = vectors(embed(model="text-embedding-3-large"))
    (short,) = vectors(embed(model="text-embedding-3-large", dimensions=256))
    assert len(short) == 256 and math.isclose(math.hypot(*short), 1.0, rel_tol=1e-5)
    # The same direction as the full vector's first 256 components.
    scale = math.hypot(*full[:256])
    assert all(
        math.isclose(s * scale, f, rel_tol=1e-4, abs_tol=1e-7)
        for s, f in zip(short, full[:256], strict=True)
    )
    with pytest.raises(RequestError) as err:
        embeddings.parse_request(
            orjson.dumps({"model": "text-embedding-ada-002", "input": "x", "dimensions": 8})
        )
    assert err.value.param == "dimensions"


def test_base64_is_little_endian_float32_of_the_float_vector() -> None:
    (floats,) = vectors(embed())
    (encoded,) = vectors(embed(encoding_format="base64"))
    assert isinstance(encoded, str)
    raw = base64.b64decode(encoded)
    decoded = array("f", raw)
    if array("f", [1.0]).tobytes() != b"\x00\x00\x80\x3f":  # a big-endian host
        decoded.byteswap()
    assert len(raw) == 4 * 1536 and decoded.tolist() == floats


def test_token_arrays_are_inputs_and_cost_their_length() -> None:
    one = embed(input=[1, 2, 3])
    assert len(one["data"]) == 1 and one["usage"]["prompt_tokens"] == 3
    many = embed(input=[[1, 2], [3, 4, 5]])
    assert len(many["data"]) == 2 and many["usage"]["prompt_tokens"] == 5
    assert vectors(embed(input=[1, 2, 3]))[0] != vectors(embed(input="[1, 2, 3]"))[0]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x"}, "model"),
        ({"model": "m"}, "input"),
        ({"model": "m", "input": ""}, "input"),
        ({"model": "m", "input": []}, "input"),
        ({"model": "m", "input": ["a", ""]}, "input[1]"),
        ({"model": "m", "input": ["a", 3]}, "input[1]"),
        ({"model": "m", "input": {"text": "x"}}, "input"),
        ({"model": "m", "input": ["x"] * (embeddings.MAX_INPUTS + 1)}, "input"),
        ({"model": "m", "input": "word " * 8000}, "input"),
        ({"model": "m", "input": "x", "encoding_format": "hex"}, "encoding_format"),
        ({"model": "text-embedding-3-small", "input": "x", "dimensions": 4000}, "dimensions"),
    ],
)
def test_bad_requests_name_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(RequestError) as err:
        embeddings.parse_request(orjson.dumps(body))
    assert err.value.status == 400 and err.value.param == param and param in err.value.message
