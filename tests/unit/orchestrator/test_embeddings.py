"""POST /v1/embeddings without processes: parsing and its 400s, the wire (payload, cache
key, answers), the route by name (catalog, router client, router), policy validation,
and one request through the pipeline (cached by default, priced per input token)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
import orjson
import pytest
import yaml
from prometheus_client import CollectorRegistry

from tollgate.router.v1 import router_pb2, router_pb2_grpc
from tollgate_common.breaker import BreakerConfig, CircuitBreaker
from tollgate_common.config import ServiceSettings
from tollgate_common.grpc.channel import make_channel
from tollgate_common.grpc.server import start_grpc_server
from tollgate_common.metrics import create_families
from tollgate_common.policy import (
    DEFAULT_POLICY_FILE,
    INTENTS,
    PRICE_TABLE_FILE,
    Policy,
    PolicyError,
    parse_policy,
)
from tollgate_orchestrator.accounting import Usage
from tollgate_orchestrator.catalog import Catalog, embedding_chain
from tollgate_orchestrator.clients import RouterClient, degraded_model
from tollgate_orchestrator.dialects import DIALECTS, WIRES
from tollgate_orchestrator.dialects.chat import WIRE as CHAT_WIRE
from tollgate_orchestrator.dialects.embeddings import (
    DIALECT,
    MAX_INPUTS,
    WIRE,
    parse_embeddings_request,
)
from tollgate_orchestrator.errors import ApiError
from tollgate_orchestrator.types import EMBEDDINGS_API, LlmRequest, Target, Whole
from tollgate_orchestrator.validation import Limits
from tollgate_router.classifier import Features
from tollgate_router.metrics import RouterMetrics
from tollgate_router.policy_store import PolicyStore
from tollgate_router.routing import ModelNotAllowed, NotAChatModel, RouteInput, decide
from tollgate_router.service import RouterService

from .fakes import POLICY, Rig

SMALL = "text-embedding-3-small"
LARGE = "text-embedding-3-large"
ADA = "text-embedding-ada-002"
TEXT = DEFAULT_POLICY_FILE.read_text()


def parse(body: dict[str, Any]) -> LlmRequest:
    return DIALECT.parse(orjson.dumps(body), Limits())


def bad(body: Any) -> ApiError:
    with pytest.raises(ApiError) as info:
        DIALECT.parse(orjson.dumps(body), Limits())
    assert info.value.status == 400
    return info.value


def answer(n: int = 2, prompt_tokens: int = 7, encoding: str = "float") -> dict[str, Any]:
    vector: Any = [0.1, -0.2, 0.3] if encoding == "float" else "zczMPc3MTL6amZk+"
    return {
        "object": "list",
        "data": [{"object": "embedding", "embedding": vector, "index": i} for i in range(n)],
        "model": SMALL,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


# --- the dialect ----------------------------------------------------------------------


def test_registered_under_its_path_and_api() -> None:
    assert DIALECTS["/v1/embeddings"] is DIALECT
    assert WIRES[EMBEDDINGS_API] is WIRE
    assert (DIALECT.name, DIALECT.api, WIRE.path, WIRE.done_event) == (
        "embeddings",
        EMBEDDINGS_API,
        "embeddings",
        b"",
    )
    assert WIRE.deterministic and not CHAT_WIRE.deterministic


@pytest.mark.parametrize(
    ("value", "chars", "first"),
    [
        ("hello world", 11, "hello world"),
        (["one", "three"], 8, "one"),
        ([1, 2, 3], 12, ""),  # token ids count 4 characters each
        ([[1, 2], [3]], 12, ""),
    ],
)
def test_every_input_form_parses(value: Any, chars: int, first: str) -> None:
    r = parse({"model": "auto", "input": value})
    assert r.api == EMBEDDINGS_API
    assert r.body["input"] == value
    assert (r.prompt_chars, r.last_user_text, r.turns) == (chars, first, 0)
    assert (r.stream, r.include_usage, r.max_tokens, r.n) == (False, True, 0, 1)
    assert r.est_prompt_tokens == chars // 4 + 3  # what the budget reserves: prompt only


def test_known_fields_pass_unknown_ones_are_dropped() -> None:
    r = parse(
        {
            "model": " text-embedding-3-small ",
            "input": "x",
            "encoding_format": "base64",
            "dimensions": 256.0,  # JSON Schema's integer: forwarded as 256
            "user": "u-1",
            "stream": True,
            "temperature": 0.5,
            "extra": {"a": 1},
        }
    )
    assert r.model == SMALL
    assert r.body == {
        "model": " text-embedding-3-small ",
        "input": "x",
        "encoding_format": "base64",
        "dimensions": 256,
        "user": "u-1",
    }
    assert not r.stream
    assert parse({"model": "auto", "input": "x", "encoding_format": None}).body == {
        "model": "auto",
        "input": "x",
    }


def test_the_feature_text_is_bounded() -> None:
    r = parse({"model": "auto", "input": ["y" * 5000, "z"]})
    assert r.last_user_text == "y" * 2000
    assert r.prompt_chars == 5001


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x"}, "model"),
        ({"model": "", "input": "x"}, "model"),
        ({"model": 3, "input": "x"}, "model"),
        ({"model": "auto"}, "input"),
        ({"model": "auto", "input": ""}, "input"),
        ({"model": "auto", "input": []}, "input"),
        ({"model": "auto", "input": {"text": "x"}}, "input"),
        ({"model": "auto", "input": ["x"] * (MAX_INPUTS + 1)}, "input"),
        ({"model": "auto", "input": ["a", "b", "c", ""]}, "input[3]"),
        ({"model": "auto", "input": ["a", 1]}, "input[1]"),
        ({"model": "auto", "input": [1, "a"]}, "input[1]"),
        ({"model": "auto", "input": [1, -2]}, "input[1]"),
        ({"model": "auto", "input": [1, True]}, "input[1]"),
        ({"model": "auto", "input": [1, 2.5]}, "input[1]"),
        ({"model": "auto", "input": [[1], []]}, "input[1]"),
        ({"model": "auto", "input": [[1], 2]}, "input[1]"),
        ({"model": "auto", "input": [[1], [2, "x"]]}, "input[1][1]"),
        ({"model": "auto", "input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({"model": "auto", "input": "x", "dimensions": 0}, "dimensions"),
        ({"model": "auto", "input": "x", "dimensions": "256"}, "dimensions"),
        ({"model": "auto", "input": "x", "dimensions": True}, "dimensions"),
        ({"model": "auto", "input": "x", "user": 7}, "user"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(body: dict[str, Any], param: str) -> None:
    err = bad(body)
    assert err.param == param, err.message
    assert orjson.loads(DIALECT.error_body(err))["error"]["param"] == param


def test_not_json_or_not_an_object_is_a_400() -> None:
    for raw in (b"{", b"[1]", b"\xff"):
        with pytest.raises(ApiError) as info:
            DIALECT.parse(raw, Limits())
        assert info.value.status == 400 and info.value.param is None


def test_the_largest_input_list_is_accepted() -> None:
    assert len(parse({"model": "auto", "input": ["x"] * MAX_INPUTS}).body["input"]) == MAX_INPUTS


def test_openapi_fragment_describes_the_request_and_the_errors() -> None:
    op = DIALECT.openapi(Limits())
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    assert schema["required"] == ["model", "input"]
    assert set(schema["properties"]) == {"model", "input", "encoding_format", "dimensions", "user"}
    assert {"200", "400", "401", "403", "404", "429"} <= set(op["responses"])


# --- the wire ---------------------------------------------------------------------------


def test_payload_replaces_the_model_only() -> None:
    r = parse({"model": "auto", "input": ["a"], "dimensions": 8, "user": "u"})
    sent = orjson.loads(WIRE.payload(r, "upstream-embedder"))
    assert sent == {"model": "upstream-embedder", "input": ["a"], "dimensions": 8, "user": "u"}
    assert r.body["model"] == "auto"  # the request itself is untouched


def test_cache_key_covers_what_changes_the_answer() -> None:
    def key(model: str = SMALL, tenant: str = "t", **body: Any) -> str:
        return WIRE.cache_key(model, parse({"model": "auto", "input": "a", **body}), tenant)

    base = key()
    assert key(user="someone-else") == base  # end users of a tenant share its cache
    assert key(encoding_format="float") == base  # float is the default
    different = {
        key(input="b"),
        key(input=["a"]),
        key(encoding_format="base64"),
        key(dimensions=256),
        key(model=LARGE),
        key(tenant="other"),
    }
    assert base not in different and len(different) == 6


@pytest.mark.parametrize("encoding", ["float", "base64"])
def test_answer_reads_prompt_tokens(encoding: str) -> None:
    assert WIRE.answer(orjson.dumps(answer(prompt_tokens=42, encoding=encoding))) == Usage(
        prompt=42
    )


def test_an_answer_without_usage_costs_nothing_but_is_an_answer() -> None:
    body = answer()
    del body["usage"]
    assert WIRE.answer(orjson.dumps(body)) == Usage()


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        orjson.dumps({**answer(), "object": "chat.completion"}),
        orjson.dumps({**answer(), "data": "x"}),
        orjson.dumps({**answer(), "data": [{"object": "embedding", "index": 0}]}),
        orjson.dumps({**answer(), "data": [{"object": "x", "embedding": [], "index": 0}]}),
        orjson.dumps({**answer(), "data": [{"object": "embedding", "embedding": [1.0]}]}),
        orjson.dumps({"choices": [{"message": {"content": "hi"}}]}),
    ],
)
def test_answer_refuses_what_is_not_an_embedding_list(raw: bytes) -> None:
    assert WIRE.answer(raw) is None


def test_the_stream_side_is_inert() -> None:
    r = parse({"model": "auto", "input": "a"})
    parser = WIRE.parser(r, assemble=True)
    assert parser.feed(b'{"x":1}', lambda u: 0.0) is None
    assert (parser.usage, parser.chunks, parser.assembled()) == (None, 0, None)
    assert parser.error("boom", "upstream_error", 0.0).startswith(b"data: ")
    assert WIRE.replay(orjson.dumps(answer()), True) is None
    assert WIRE.end_of(b'{"error":{"message":"x"}}') == "error"
    assert WIRE.end_of(b"{}") is None


# --- routing by name --------------------------------------------------------------------


def policy_with(extra: str = "", **replace: str) -> Policy:
    text = TEXT
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new)
    return parse_policy(text + extra)


TENANTS = """tenants:
  chatonly:
    allowed_models: [gpt-4o-mini]
  large:
    allowed_models: [gpt-4o-mini, text-embedding-3-large]
  small:
    allowed_models: [text-embedding-3-small]
"""
# A second deployment of 3-small under another catalog name: the one kind of fallback
# that keeps vectors comparable.
MIRROR = (
    "  text-embedding-3-small-mirror: {provider: openai, upstream_model: "
    "text-embedding-3-small, kind: embedding, dimensions: 1536, input_per_mtok: 0.02, "
    "cached_input_per_mtok: 0, output_per_mtok: 0}\n"
)


def test_auto_is_the_default_embedding_model() -> None:
    assert embedding_chain(POLICY, "auto", "") == [SMALL]
    assert embedding_chain(POLICY, LARGE, "") == [LARGE]


def test_fallbacks_follow_the_named_model_within_allowed_models() -> None:
    p = policy_with(
        TENANTS,
        **{
            "  o4-mini:": MIRROR + "  o4-mini:",
            "fallbacks: {}": "fallbacks: {text-embedding-3-small: [text-embedding-3-small-mirror]}",
        },
    )
    assert embedding_chain(p, "auto", "") == [SMALL, "text-embedding-3-small-mirror"]
    assert embedding_chain(p, "auto", "small") == [SMALL]  # the mirror is not allowed there


@pytest.mark.parametrize(
    ("model", "tenant", "status", "code"),
    [
        ("gpt-4o-mini", "", 400, None),
        ("nope", "", 404, "model_not_found"),
        (LARGE, "small", 403, "model_not_allowed"),
        ("auto", "chatonly", 403, "model_not_allowed"),
    ],
)
def test_refusals(model: str, tenant: str, status: int, code: str | None) -> None:
    p = policy_with(TENANTS)
    with pytest.raises(ApiError) as info:
        embedding_chain(p, model, tenant)
    assert (info.value.status, info.value.param, info.value.code) == (status, "model", code)
    if status == 400:
        assert "is not an embedding model" in info.value.message


def test_auto_without_a_default_is_a_400() -> None:
    doc = yaml.safe_load(TEXT)
    doc["embeddings"] = {}
    p = parse_policy(yaml.safe_dump(doc))
    with pytest.raises(ApiError) as info:
        embedding_chain(p, "auto", "")
    assert (info.value.status, info.value.param) == (400, "model")
    assert "no default embedding model" in info.value.message.lower()


def test_catalog_route_is_priced_and_bounded() -> None:
    d = Catalog(POLICY).embedding_route("auto", "")
    assert [t.name for t in d.chain] == [SMALL]
    assert d.chain[0].entry.input_per_mtok == 0.02
    assert (d.intent, d.tier, d.baseline, d.degraded) == ("other", "", None, False)
    assert d.intent not in INTENTS  # a bounded label value, and no chat intent


class NoRouter:
    """A router stub that must not be called."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the router's {name} was called for an embeddings request")


def router_client(policy: Policy = POLICY, **breaker: Any) -> RouterClient:
    from tollgate_orchestrator.metrics import OrchestratorMetrics

    fam = create_families("orchestrator", CollectorRegistry())
    models = {n: m.provider for n, m in policy.models.items()}
    metrics = OrchestratorMetrics(fam, models=models, tenants=["t"], routes=[], budget_store=False)
    cfg = BreakerConfig(consecutive_failures=1, cooldown_seconds=60)
    cb = CircuitBreaker(cfg)
    if breaker.get("open"):
        cb.record_failure()
    return RouterClient(NoRouter(), Catalog(policy), 0.2, cb, metrics)  # type: ignore[arg-type]


@pytest.mark.parametrize("open_breaker", [False, True])
async def test_router_client_routes_embeddings_itself(open_breaker: bool) -> None:
    client = router_client(open=open_breaker)
    d = await client.route(parse({"model": "auto", "input": "a"}), "t", "r", downgrade=True)
    assert [t.name for t in d.chain] == [SMALL] and not d.degraded
    with pytest.raises(ApiError) as info:
        await client.route(parse({"model": "gpt-4o", "input": "a"}), "t", "r", False)
    assert (info.value.status, info.value.param) == (400, "model")


def test_degraded_chat_never_picks_an_embedding_model() -> None:
    p = policy_with(TENANTS)
    with pytest.raises(ApiError) as info:
        degraded_model(p, SMALL, "")
    assert (info.value.status, info.value.param) == (400, "model")
    # A tenant allowed an embedding model and a chat model off every chain.
    doc = yaml.safe_load(TEXT)
    doc["tenants"] = {"odd": {"allowed_models": [SMALL, "o3"]}}
    p = parse_policy(yaml.safe_dump(doc))
    assert degraded_model(p, "auto", "odd") == "o3"


def router_policy() -> Policy:
    """A small catalog where the embedding model is the cheapest and roomiest of all."""

    def model(price: float, ctx: int, **kw: Any) -> dict[str, Any]:
        return {
            "provider": "openai",
            "input_per_mtok": price,
            "cached_input_per_mtok": 0,
            "output_per_mtok": price,
            "context_window": ctx,
            "capabilities": ["tools", "json", "streaming"],
            **kw,
        }

    doc = {
        "providers": {"openai": {"base_url": "https://api.openai.com/v1"}},
        "models": {
            "mid": model(0.4, 8_000),
            "big": model(2.0, 16_000),
            "emb": model(0.01, 10_000_000, kind="embedding"),
        },
        "routes": {i: {t: ["mid"] for t in ("small", "medium", "large")} for i in INTENTS},
        "default_model": "mid",
        "baseline_model": "big",
        "tenants": {"embonly": {"allowed_models": ["emb"]}},
    }
    return parse_policy(yaml.safe_dump(doc), prices={})


def test_router_substitutes_are_chat_models_only() -> None:
    p = router_policy()
    # Nothing in the chain fits 12k tokens: big does, and emb would be cheaper and roomier.
    d = decide(
        p, RouteInput(features=Features(last_user_text="hi", estimated_prompt_tokens=12_000))
    )
    assert d.chain == ("big",)
    # Nothing fits anywhere: the largest chat context, never the embedding model.
    d = decide(p, RouteInput(features=Features(last_user_text="hi", estimated_prompt_tokens=10**8)))
    assert "emb" not in d.chain


def test_router_refuses_an_explicit_embedding_model() -> None:
    with pytest.raises(NotAChatModel, match="embedding model"):
        decide(router_policy(), RouteInput(model="emb"))
    # A key allowed only an embedding model has no chat model to be routed to.
    with pytest.raises(ModelNotAllowed):
        decide(router_policy(), RouteInput(tenant="embonly"))


async def test_router_service_answers_invalid_argument_for_an_embedding_model() -> None:
    registry = CollectorRegistry()
    metrics = RouterMetrics(create_families("router", registry))
    store = PolicyStore(
        policy_file=None, override_file=None, price_table_file=PRICE_TABLE_FILE, listener=metrics
    )

    def register(server: grpc.aio.Server) -> Sequence[str]:
        router_pb2_grpc.add_RouterServicer_to_server(RouterService(store, metrics), server)
        return ["tollgate.router.v1.Router"]

    srv = await start_grpc_server(
        settings=ServiceSettings(grpc_allow_unauthenticated=True),
        port=0,
        families=metrics.families,
        register=register,
    )
    channel = make_channel(f"127.0.0.1:{srv.port}", default_timeout=5)
    try:
        stub: Any = router_pb2_grpc.RouterStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Route(router_pb2.RouteRequest(model=SMALL))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "embedding model" in (info.value.details() or "")
    finally:
        await channel.close()
        await srv.stop(0)


# --- policy validation ------------------------------------------------------------------


def test_the_default_policy_has_embedding_models_and_a_default() -> None:
    assert POLICY.embeddings.default_model == SMALL
    assert POLICY.embeddings.fallbacks == {}
    for name, price in ((SMALL, 0.02), (LARGE, 0.13), (ADA, 0.10)):
        m = POLICY.models[name]
        assert (m.kind, m.input_per_mtok, m.output_per_mtok, m.cached_input_per_mtok) == (
            "embedding",
            price,
            0.0,
            0.0,
        )
    assert (POLICY.models[SMALL].dimensions, POLICY.models[LARGE].dimensions) == (1536, 3072)
    assert POLICY.models["gpt-4o"].kind == "chat"


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (
            {"[claude-sonnet-4-5, gpt-5,": "[claude-sonnet-4-5, text-embedding-3-small,"},
            "routes.code.large[1]",
        ),
        ({"default_model: gpt-4o-mini": "default_model: text-embedding-3-small"}, "default_model"),
        ({"baseline_model: gpt-4o": "baseline_model: text-embedding-ada-002"}, "baseline_model"),
        (
            {"default_model: text-embedding-3-small": "default_model: gpt-4o"},
            "embeddings.default_model",
        ),
        (
            {"default_model: text-embedding-3-small": "default_model: nope"},
            "embeddings.default_model",
        ),
        (
            {"fallbacks: {}": "fallbacks: {gpt-4o: [text-embedding-3-small]}"},
            "embeddings.fallbacks.gpt-4o",
        ),
        (
            {"fallbacks: {}": "fallbacks: {nope: [text-embedding-3-small]}"},
            "embeddings.fallbacks.nope",
        ),
        (
            {"fallbacks: {}": "fallbacks: {text-embedding-3-small: [gpt-4o]}"},
            "embeddings.fallbacks.text-embedding-3-small[0]",
        ),
        (
            {"fallbacks: {}": "fallbacks: {text-embedding-3-small: [nope]}"},
            "embeddings.fallbacks.text-embedding-3-small[0]",
        ),
        (  # 3072 dimensions after 1536: the client's index could not take them
            {"fallbacks: {}": "fallbacks: {text-embedding-3-small: [text-embedding-3-large]}"},
            "embeddings.fallbacks.text-embedding-3-small[0]",
        ),
    ],
)
def test_kinds_are_checked_and_errors_name_the_field(edit: dict[str, str], field: str) -> None:
    text = TEXT
    for old, new in edit.items():
        assert old in text
        text = text.replace(old, new)
    with pytest.raises(PolicyError) as info:
        parse_policy(text)
    assert field + ":" in str(info.value), str(info.value)


def test_tenant_routes_may_name_chat_models_only() -> None:
    extra = "tenants:\n  acme:\n    routes:\n      chat:\n        small: [text-embedding-3-large]\n"
    with pytest.raises(PolicyError, match=r"tenants\.acme\.routes\.chat\.small\[0\]: .*embedding"):
        parse_policy(TEXT + extra)
    # allowed_models may list both kinds: a key can be allowed to embed and to chat.
    parse_policy(TEXT + "tenants:\n  acme:\n    allowed_models: [gpt-4o, text-embedding-3-large]\n")


def test_a_fallback_of_the_same_length_is_accepted() -> None:
    p = policy_with(
        **{"fallbacks: {}": "fallbacks: {text-embedding-3-small: [text-embedding-ada-002]}"}
    )
    # Same length, so the policy allows it; the shipped one lists no fallback (see its comment).
    assert p.embeddings.fallbacks == {SMALL: [ADA]}


# --- through the pipeline ---------------------------------------------------------------


class EmbeddingUpstream:
    """Answers every attempt with an embeddings list, recording what it was sent."""

    def __init__(self, prompt_tokens: int = 1200) -> None:
        self.prompt_tokens = prompt_tokens
        self.sent: list[dict[str, Any]] = []

    async def complete(self, target: Target, req: LlmRequest, budget: float) -> tuple[bytes, Usage]:
        wire = WIRES[req.api]
        self.sent.append(orjson.loads(wire.payload(req, target.upstream_model)))
        raw = orjson.dumps({**answer(prompt_tokens=self.prompt_tokens), "model": target.name})
        usage = wire.answer(raw)
        assert usage is not None
        return raw, usage

    async def stream(self, target: Target, req: LlmRequest, budget: float) -> Any:
        raise AssertionError("embeddings never stream")


@pytest.fixture
def rig() -> Rig:
    r = Rig([])
    r.pipeline.router = router_client()
    r.pipeline.upstreams = r.upstream = EmbeddingUpstream()  # type: ignore[assignment]
    return r


async def test_cached_by_default_and_priced_per_input_token(rig: Rig) -> None:
    req = parse({"model": "auto", "input": ["a", "b"]})
    first = await rig.handle(req)
    assert isinstance(first, Whole) and first.meta.cache == "miss"
    assert first.meta.model == SMALL
    assert first.meta.cost == pytest.approx(1200 * 0.02 / 1e6)
    await rig.pipeline.drain_background(1)
    second = await rig.handle(parse({"model": "auto", "input": ["a", "b"]}))
    assert isinstance(second, Whole) and second.meta.cache == "hit"
    assert second.body == first.body
    assert len(rig.upstream.sent) == 1  # type: ignore[attr-defined]
    assert rig.upstream.sent[0]["model"] == SMALL  # type: ignore[attr-defined]
    labels = {"model": SMALL, "api": "embeddings"}
    assert rig.total("tollgate_llm_tokens_total", type="prompt", **labels) == 1200
    assert rig.total("tollgate_llm_tokens_total", type="completion", **labels) == 0
    assert rig.total("tollgate_llm_cost_usd_total", **labels) == pytest.approx(1200 * 0.02 / 1e6)


async def test_no_store_bypasses_the_cache(rig: Rig) -> None:
    for _ in range(2):
        out = await rig.handle(parse({"model": "auto", "input": "a"}), cache_control="no-store")
        assert isinstance(out, Whole) and out.meta.cache == "bypass"
        await rig.pipeline.drain_background(1)
    assert len(rig.upstream.sent) == 2  # type: ignore[attr-defined]


def test_the_budget_reserves_the_prompt_only_at_the_embedding_price(rig: Rig) -> None:
    req = parse({"model": "auto", "input": "x" * 4000})
    assert rig.pipeline.estimate_usd(req) == pytest.approx(1003 * 0.02 / 1e6)
    req = parse({"model": LARGE, "input": "x" * 4000})
    assert rig.pipeline.estimate_usd(req) == pytest.approx(1003 * 0.13 / 1e6)


def test_parse_embeddings_request_checks_decoded_bodies() -> None:
    assert parse_embeddings_request({"model": "m", "input": "x"}).model == "m"
    with pytest.raises(ApiError):
        parse_embeddings_request(["x"])
