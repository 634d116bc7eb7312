"""LangChain ``OpenAIEmbeddings`` (langchain-openai) against tollgate's /v1/embeddings.

By default LangChain tokenizes every text with tiktoken and sends token-id arrays
(``check_embedding_ctx_length=True``), and the openai SDK under it asks for base64
and decodes it: the test checks that this default works as it is. tiktoken downloads
its BPE files at run time, which a machine without the internet cannot; so
``cl100k_base`` is replaced in this process by a byte-level encoding (one token per
UTF-8 byte). LangChain's path is the same: the texts still go out as token arrays.

Requests and responses are recorded through the client's own ``http_client``.
"""

from __future__ import annotations

import importlib.metadata
import uuid
from collections.abc import Iterator
from typing import Any

import httpx2
import orjson
import pytest
import tiktoken
from langchain_openai import OpenAIEmbeddings
from tiktoken.core import Encoding

from tests.clients import settle

pytestmark = pytest.mark.integration

VERSION = importlib.metadata.version("langchain-openai")
SMALL = "text-embedding-3-small"
BYTES = Encoding(
    name="cl100k_base",
    pat_str=r"\S+|\s+",
    mergeable_ranks={bytes([i]): i for i in range(256)},
    special_tokens={},
)


@pytest.fixture(autouse=True)
def offline_tokenizer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(tiktoken.registry.ENCODINGS, "cl100k_base", BYTES)


class Recorder:
    """The bodies LangChain sends and the tollgate headers it gets back."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.headers: list[httpx2.Headers] = []

    def request(self, request: httpx2.Request) -> None:
        if request.url.path.endswith("/embeddings"):
            self.sent.append(orjson.loads(request.content))

    def response(self, response: httpx2.Response) -> None:
        if response.request.url.path.endswith("/embeddings"):
            self.headers.append(response.headers)

    async def arequest(self, request: httpx2.Request) -> None:
        self.request(request)

    async def aresponse(self, response: httpx2.Response) -> None:
        self.response(response)

    def cache(self) -> list[str]:
        return [h["x-tollgate-cache"] for h in self.headers]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def embedder(api_base: str, api_key: str, recorder: Recorder) -> Iterator[Any]:
    clients: list[Any] = []

    def make(**kwargs: Any) -> OpenAIEmbeddings:
        sync = httpx2.Client(
            event_hooks={"request": [recorder.request], "response": [recorder.response]}
        )
        aio = httpx2.AsyncClient(
            event_hooks={"request": [recorder.arequest], "response": [recorder.aresponse]}
        )
        clients.append((sync, aio))
        return OpenAIEmbeddings(
            model=kwargs.pop("model", SMALL),
            base_url=api_base,
            api_key=api_key,  # type: ignore[arg-type]
            max_retries=0,
            timeout=20,
            http_client=sync,
            http_async_client=aio,
            **kwargs,
        )

    yield make
    for sync, _ in clients:
        sync.close()


def texts(n: int, case: str) -> list[str]:
    """Texts no other test sends, so the first request is a cache miss."""
    tag = uuid.uuid4().hex[:8]
    return [f"langchain {case} {tag} document {i} about rivers" for i in range(n)]


def check_vectors(vectors: list[list[float]], n: int) -> int:
    assert len(vectors) == n, f"langchain-openai {VERSION}: {len(vectors)} vectors for {n} texts"
    width = len(vectors[0])
    assert width > 0
    for v in vectors:
        assert len(v) == width and all(isinstance(x, float) for x in v)
    return width


def test_embed_documents_sends_token_arrays_by_default(embedder: Any, recorder: Recorder) -> None:
    docs = texts(3, "documents")
    vectors = embedder().embed_documents(docs)
    check_vectors(vectors, 3)
    assert len(recorder.sent) == 1
    sent = recorder.sent[0]
    # LangChain's default: token ids (here one per byte), and the SDK's default: base64.
    assert sent["input"] == [list(d.encode()) for d in docs]
    assert sent["encoding_format"] == "base64"
    assert sent["model"] == SMALL
    h = recorder.headers[0]
    assert (h["x-tollgate-model"], h["x-tollgate-cache"]) == (SMALL, "miss")
    assert float(h["x-tollgate-cost-usd"]) > 0


def test_embed_query_repeats_are_cache_hits(embedder: Any, recorder: Recorder) -> None:
    emb = embedder()
    [query] = texts(1, "query")
    first = emb.embed_query(query)
    settle()
    second = emb.embed_query(query)
    assert first == second
    assert recorder.cache() == ["miss", "hit"]
    assert recorder.headers[1]["x-tollgate-cost-usd"] == "0"
    # The query is a one-text document: the same width as documents embedded alike.
    assert len(first) == check_vectors(emb.embed_documents(texts(2, "width")), 2)


def test_raw_text_when_length_checks_are_off(embedder: Any, recorder: Recorder) -> None:
    docs = texts(2, "raw")
    vectors = embedder(check_embedding_ctx_length=False).embed_documents(docs)
    check_vectors(vectors, 2)
    assert recorder.sent[0]["input"] == docs
    assert recorder.cache() == ["miss"]


async def test_async_clients_share_the_cache_with_sync_ones(
    embedder: Any, recorder: Recorder
) -> None:
    emb = embedder()
    docs = texts(2, "async")
    sync = emb.embed_documents(docs)
    settle()
    again = await emb.aembed_documents(docs)
    await emb.http_async_client.aclose()
    assert again == sync
    assert recorder.cache() == ["miss", "hit"]


def test_an_explicit_large_model_and_dimensions(embedder: Any, recorder: Recorder) -> None:
    vectors = embedder(model="text-embedding-3-large", dimensions=64).embed_documents(
        texts(1, "dimensions")
    )
    assert check_vectors(vectors, 1) == 64  # passed through: the upstream shortens
    assert recorder.sent[0]["dimensions"] == 64
    assert recorder.headers[0]["x-tollgate-model"] == "text-embedding-3-large"
