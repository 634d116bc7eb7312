"""OpenAI Embeddings (``POST /v1/embeddings``): deterministic unit vectors.

A vector is SHAKE-256 of (model, input) read as int16s, normalised: the same input
always gets the same vector, other inputs and other models other ones (there is no
meaning in them: similar texts are not close). ``dimensions`` shortens a vector as
the -3 models do, keeping its first components and normalising again, so a short
vector is a prefix of the long one's direction; ada-002 refuses it, as OpenAI does.
``encoding_format: base64`` is the float32 vector, little-endian, as OpenAI sends it.
Input is a string, a list of strings, a token array or a list of token arrays; a
string costs ~4 characters per token, a token array its length.
"""

from __future__ import annotations

import base64
import hashlib
import math
import sys
from array import array
from dataclasses import dataclass
from typing import Any

import orjson

from tollgate_simulator.generate import (
    RequestError,
    invalid,
    is_int,
    load_object,
    missing,
    text_tokens,
)

_NATIVE = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
DEFAULT_DIMENSIONS = 1536  # any other model (a local one): honours ``dimensions``
MAX_INPUTS = 2048
MAX_TOKENS = 8192  # per input
_BIG_ENDIAN = sys.byteorder == "big"

Input = str | list[int]


def native_dimensions(model: str) -> int:
    return next((n for name, n in _NATIVE.items() if model.startswith(name)), DEFAULT_DIMENSIONS)


def _bad(message: str, param: str = "input") -> RequestError:
    return RequestError(400, message, param, "invalid_value")


def _inputs(raw: Any) -> list[Input]:
    if isinstance(raw, str):
        items: list[Any] = [raw]
    elif isinstance(raw, list) and raw and all(is_int(t) for t in raw):
        items = [raw]  # one token array
    elif isinstance(raw, list):
        items = raw
    else:
        raise invalid("input", "a string, an array of strings or an array of token arrays")
    if not items:
        raise _bad("Invalid 'input': empty array. Expected at least one input.")
    if len(items) > MAX_INPUTS:
        raise _bad(f"Invalid 'input': at most {MAX_INPUTS} inputs per request.")
    for i, item in enumerate(items):
        where = "input" if len(items) == 1 else f"input[{i}]"
        ok = isinstance(item, str) or (isinstance(item, list) and all(is_int(t) for t in item))
        if not ok:
            raise invalid(where, "a string or an array of integers (tokens)")
        if not item:
            raise _bad(f"Invalid '{where}': empty input.", where)
        tokens = text_tokens(item) if isinstance(item, str) else len(item)
        if tokens > MAX_TOKENS:
            raise _bad(
                f"This model's maximum context length is {MAX_TOKENS} tokens, however you "
                f"requested {tokens} tokens in '{where}'. Please reduce your input.",
                where,
            )
    return items


def parse_request(body: bytes) -> EmbeddingsRequest:
    data = load_object(body)
    model = data.get("model")
    if model is None:
        raise missing("model")
    if not isinstance(model, str) or not model:
        raise invalid("model", "a non-empty string")
    if data.get("input") is None:
        raise missing("input")
    inputs = _inputs(data["input"])
    fmt = data.get("encoding_format")
    if fmt is not None and fmt not in ("float", "base64"):
        raise _bad("Invalid 'encoding_format': expected float or base64.", "encoding_format")
    native = native_dimensions(model)
    dims = data.get("dimensions")
    if dims is not None:
        if "ada-002" in model:
            raise _bad("This model does not support specifying dimensions.", "dimensions")
        if not is_int(dims) or not 1 <= dims <= native:
            raise _bad(f"Invalid 'dimensions': expected an integer 1..{native}.", "dimensions")
    return EmbeddingsRequest(model, inputs, fmt == "base64", dims or native, native)


def vector(model: str, item: Input, dims: int, native: int) -> array[float]:
    """The unit float32 vector of ``item``: the first ``dims`` of ``native`` components."""
    key = b"s" + item.encode() if isinstance(item, str) else b"t" + orjson.dumps(item)
    raw = array("h", hashlib.shake_256(model.encode() + b"\0" + key).digest(2 * native))
    if _BIG_ENDIAN:  # the same vector on every machine
        raw.byteswap()
    head = raw[:dims]
    norm = math.hypot(*head) or 1.0
    return array("f", [v / norm for v in head])


def encode(vec: array[float]) -> str:
    if _BIG_ENDIAN:
        vec = array("f", vec)
        vec.byteswap()
    return base64.b64encode(vec.tobytes()).decode()


@dataclass(slots=True)
class EmbeddingsRequest:
    model: str
    inputs: list[Input]
    base64: bool
    dimensions: int
    native: int
    stream: bool = False

    @property
    def tokens(self) -> int:
        return sum(text_tokens(i) if isinstance(i, str) else len(i) for i in self.inputs)

    def reply(self, id_: str, created: int) -> EmbeddingsReply:
        return EmbeddingsReply(self)


@dataclass(slots=True)
class EmbeddingsReply:
    req: EmbeddingsRequest
    tokens: int = 0  # nothing generated: a whole answer takes the fixed latency
    think_tokens: int = 0
    preamble: int = 0
    closing: int = 0

    def body(self) -> bytes:
        req = self.req
        data = []
        for i, item in enumerate(req.inputs):
            vec = vector(req.model, item, req.dimensions, req.native)
            emb: Any = encode(vec) if req.base64 else vec.tolist()
            data.append({"object": "embedding", "index": i, "embedding": emb})
        n = req.tokens
        return orjson.dumps(
            {
                "object": "list",
                "data": data,
                "model": req.model,
                "usage": {"prompt_tokens": n, "total_tokens": n},
            }
        )

    def events(self) -> list[tuple[bytes, int]]:
        return []  # embeddings never stream
