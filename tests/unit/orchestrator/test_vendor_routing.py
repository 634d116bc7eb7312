"""Routing across vendors, the orchestrator's side: ``has_images`` from each dialect, the
skip list (providers without a key) sent to the router once built, a named model of such
a provider refused in the client's shape, and the degraded and embedding routes skipping
those providers too."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Sequence
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
from tollgate_common.policy import INTENTS, TIERS, Policy, parse_policy
from tollgate_orchestrator.catalog import Catalog
from tollgate_orchestrator.clients import RouterClient, degraded_model
from tollgate_orchestrator.dialects import DIALECTS
from tollgate_orchestrator.dialects.messages_request import parse_messages_request
from tollgate_orchestrator.dialects.responses_request import parse_responses_request
from tollgate_orchestrator.errors import ApiError
from tollgate_orchestrator.metrics import OrchestratorMetrics
from tollgate_orchestrator.types import EMBEDDINGS_API, LlmRequest
from tollgate_orchestrator.validation import Limits, parse_chat_request

PNG = (  # a 1x1 PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
DATA_URL = f"data:image/png;base64,{PNG}"


def policy_doc() -> dict[str, Any]:
    price = {"input_per_mtok": 1.0, "cached_input_per_mtok": 0.1, "output_per_mtok": 4.0}
    return {
        "version": "mixed-1",
        "providers": {
            "openai": {"base_url": "https://api.openai.com/v1", "api_key_env": "H4_OPENAI_KEY"},
            "gemini": {
                "type": "gemini",
                "base_url": "https://generativelanguage.googleapis.com/v1beta/openai/",
                "api_key_env": "H4_GEMINI_KEY",
            },
            "vault": {
                "type": "compatible",
                "base_url": "https://llm.internal/v1",
                "api_key_file": "/run/secrets/vault-llm-key",
            },
            "local": {"type": "compatible", "base_url": "http://127.0.0.1:8000/v1"},
        },
        "models": {
            "g-flash": {"provider": "gemini", **price},
            "o-mini": {"provider": "openai", **price},
            "v-big": {"provider": "vault", **price},
            "l-llama": {"provider": "local", **price},
            "g-embed": {"provider": "gemini", "kind": "embedding", "capabilities": [], **price},
            "l-embed": {"provider": "local", "kind": "embedding", "capabilities": [], **price},
        },
        "routes": {i: {t: ["g-flash", "o-mini"] for t in TIERS} for i in INTENTS},
        "default_model": "g-flash",
        "baseline_model": "o-mini",
        "embeddings": {"default_model": "g-embed", "fallbacks": {"g-embed": ["l-embed"]}},
    }


POLICY: Policy = parse_policy(yaml.safe_dump(policy_doc()), prices={})


# --- has_images, per dialect ----------------------------------------------------------


def chat(content: Any) -> LlmRequest:
    return parse_chat_request(
        {"model": "auto", "messages": [{"role": "user", "content": content}]}, Limits()
    )


def test_chat_image_url_parts_set_has_images() -> None:
    assert not chat("describe a cat").has_images
    assert not chat([{"type": "text", "text": "describe a cat"}]).has_images
    img = {"type": "image_url", "image_url": {"url": DATA_URL}}
    assert chat([{"type": "text", "text": "what is this?"}, img]).has_images
    # An image in an earlier turn still needs a model that can see it.
    earlier = parse_chat_request(
        {
            "model": "auto",
            "messages": [
                {"role": "user", "content": [img]},
                {"role": "assistant", "content": "a dot"},
                {"role": "user", "content": "and its colour?"},
            ],
        },
        Limits(),
    )
    assert earlier.has_images and earlier.last_user_text == "and its colour?"


def responses(input_: Any) -> LlmRequest:
    return parse_responses_request({"model": "auto", "input": input_}, Limits())


def test_responses_input_image_parts_set_has_images() -> None:
    assert not responses("describe a cat").has_images
    text = {"type": "input_text", "text": "what is this?"}
    assert not responses([{"role": "user", "content": [text]}]).has_images
    image = {"type": "input_image", "image_url": DATA_URL}
    assert responses([{"role": "user", "content": [text, image]}]).has_images
    by_id = {"type": "input_image", "file_id": "file-abc"}
    assert responses([{"role": "user", "content": [by_id]}]).has_images
    # A tool's output that is an image.
    call = {"type": "function_call", "call_id": "c1", "name": "shot", "arguments": "{}"}
    out = {"type": "function_call_output", "call_id": "c1", "output": [image]}
    assert responses([{"role": "user", "content": "look"}, call, out]).has_images


def messages(content: Any) -> LlmRequest:
    body = {"model": "auto", "max_tokens": 64, "messages": [{"role": "user", "content": content}]}
    return parse_messages_request(body, Limits())


def test_messages_image_blocks_set_has_images() -> None:
    assert not messages("describe a cat").has_images
    assert not messages([{"type": "text", "text": "hi"}]).has_images
    b64 = {"type": "base64", "media_type": "image/png", "data": PNG}
    assert messages([{"type": "image", "source": b64}]).has_images
    url = {"type": "url", "url": "https://example.com/cat.png"}
    assert messages(
        [{"type": "text", "text": "what?"}, {"type": "image", "source": url}]
    ).has_images
    # Inside a tool result, and inside a document's content.
    result = {
        "type": "tool_result",
        "tool_use_id": "t1",
        "content": [{"type": "image", "source": b64}],
    }
    turns = [
        {"role": "user", "content": "take a screenshot"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t1", "name": "s", "input": {}}],
        },
        {"role": "user", "content": [result]},
    ]
    body = {"model": "auto", "max_tokens": 64, "messages": turns}
    assert parse_messages_request(body, Limits()).has_images
    doc = {
        "type": "document",
        "source": {"type": "content", "content": [{"type": "image", "source": b64}]},
    }
    assert messages([doc]).has_images


def test_every_chat_dialect_reports_images_through_its_parser() -> None:
    # The HTTP faces parse with the dialect's own parse(): the flag survives it.
    bodies = {
        "chat": {
            "model": "auto",
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": DATA_URL}}]}
            ],
        },
        "responses": {
            "model": "auto",
            "input": [
                {"role": "user", "content": [{"type": "input_image", "image_url": DATA_URL}]}
            ],
        },
        "messages": {
            "model": "auto",
            "max_tokens": 16,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                        }
                    ],
                }
            ],
        },
    }
    seen = 0
    for d in DIALECTS.values():
        body = bodies.get(d.name)
        if body is None:
            continue
        req = d.parse(orjson.dumps(body), Limits())
        assert req.has_images, d.name
        seen += 1
    assert seen == 3


# --- the router client ------------------------------------------------------------------


class Recorder(router_pb2_grpc.RouterServicer):
    """Answers every route with o-mini, and records what it was asked."""

    def __init__(self) -> None:
        self.requests: list[router_pb2.RouteRequest] = []

    async def Route(
        self, request: router_pb2.RouteRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.RouteResponse:
        self.requests.append(request)
        chain = [
            router_pb2.ModelTarget(name=n, provider=POLICY.models[n].provider) for n in ("o-mini",)
        ]
        return router_pb2.RouteResponse(
            intent="chat", tier="small", chain=chain, baseline=chain[0], reason="fake"
        )

    async def GetPolicy(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "fake")

    async def UpdatePolicy(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "fake")


class Env:
    def __init__(self, port: int, recorder: Recorder) -> None:
        self.recorder = recorder
        self.registry = CollectorRegistry()
        fam = create_families("orchestrator", self.registry)
        models = {n: m.provider for n, m in POLICY.models.items()}
        self.metrics = OrchestratorMetrics(
            fam, models=models, tenants=["t"], routes=[], budget_store=False
        )
        self.channel = make_channel(f"127.0.0.1:{port}", default_timeout=0.5, families=fam)
        self.breaker = CircuitBreaker(BreakerConfig(consecutive_failures=1, cooldown_seconds=60))

    def client(self, unavailable: Collection[str] = ()) -> RouterClient:
        return RouterClient(
            router_pb2_grpc.RouterStub(self.channel),
            Catalog(POLICY),
            0.5,
            self.breaker,
            self.metrics,
            unavailable=unavailable,
        )


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    recorder = Recorder()

    def register(server: grpc.aio.Server) -> Sequence[str]:
        router_pb2_grpc.add_RouterServicer_to_server(recorder, server)
        return ["tollgate.router.v1.Router"]

    srv = await start_grpc_server(
        settings=ServiceSettings(grpc_allow_unauthenticated=True),
        port=0,
        families=create_families("router", CollectorRegistry()),
        register=register,
    )
    e = Env(srv.port, recorder)
    yield e
    await e.channel.close()
    await srv.stop(0)


async def test_images_and_the_skip_list_reach_the_router(env: Env) -> None:
    client = env.client(unavailable={"vault", "gemini"})
    img = [{"type": "image_url", "image_url": {"url": DATA_URL}}]
    await client.route(chat(img), "t", "r1", False)
    await client.route(chat("hello"), "t", "r2", False)
    first, second = env.recorder.requests
    assert first.has_images and not second.has_images
    # Sorted, built once: the same names on every request.
    assert list(first.skip_providers) == list(second.skip_providers) == ["gemini", "vault"]
    assert client.unavailable == frozenset({"gemini", "vault"})


async def test_every_key_present_sends_no_skip_list(env: Env) -> None:
    await env.client().route(chat("hello"), "t", "r", False)
    assert list(env.recorder.requests[-1].skip_providers) == []


async def test_set_unavailable_replaces_the_list(env: Env) -> None:
    client = env.client()
    client.set_unavailable(["openai"])
    await client.route(chat("hello"), "t", "r", False)
    assert list(env.recorder.requests[-1].skip_providers) == ["openai"]


def _named(model: str) -> LlmRequest:
    return parse_chat_request(
        {"model": model, "messages": [{"role": "user", "content": "hi"}]}, Limits()
    )


async def test_a_named_model_without_a_key_is_refused_before_the_router(env: Env) -> None:
    client = env.client(unavailable={"gemini", "vault"})
    with pytest.raises(ApiError) as info:
        await client.route(_named("g-flash"), "t", "r", False)
    err = info.value
    assert (err.status, err.param, err.code, err.reason) == (
        400,
        "model",
        "model_not_available",
        "invalid",
    )
    assert "`gemini`" in err.message and "H4_GEMINI_KEY" in err.message
    assert env.recorder.requests == []  # the router was not asked
    # A key file: named as such, its path is the deployment's business.
    with pytest.raises(ApiError) as info:
        await client.route(_named("v-big"), "t", "r", False)
    assert "api_key_file" in info.value.message and "/run/secrets" not in info.value.message
    # A model of a provider with a key, and a keyless local server, route as before.
    assert (await client.route(_named("o-mini"), "t", "r", False)).chain[0].name == "o-mini"
    await client.route(_named("l-llama"), "t", "r", False)
    assert [r.model for r in env.recorder.requests] == ["o-mini", "l-llama"]


async def test_the_refusal_comes_in_each_clients_shape(env: Env) -> None:
    client = env.client(unavailable={"gemini"})
    with pytest.raises(ApiError) as info:
        await client.route(_named("g-flash"), "t", "r", False)
    by_name = {d.name: d for d in DIALECTS.values()}
    openai_shape = orjson.loads(info.value.body())["error"]
    assert openai_shape["code"] == "model_not_available" and openai_shape["param"] == "model"
    anthropic_shape = orjson.loads(by_name["messages"].error_body(info.value))
    assert anthropic_shape["type"] == "error"
    assert anthropic_shape["error"]["type"] == "invalid_request_error"  # no retry, not overloaded
    assert "H4_GEMINI_KEY" in anthropic_shape["error"]["message"]


async def test_degraded_route_skips_providers_without_a_key(env: Env) -> None:
    client = env.client(unavailable={"gemini"})
    d = client.local("auto", "t")
    assert d.degraded and d.chain[0].name != "g-flash"  # the default is gemini's
    assert d.chain[0].provider != "gemini"
    with pytest.raises(ApiError) as info:
        client.local("g-flash", "t")
    assert info.value.code == "model_not_available"
    # Everything unreachable: served as without the list (its attempt fails over at once).
    everyone = {"gemini", "openai", "vault", "local"}
    assert degraded_model(POLICY, "auto", "", everyone) == "g-flash"
    assert degraded_model(POLICY, "auto", "", {"gemini"}) == "o-mini"  # the chat chain next
    assert degraded_model(POLICY, "auto", "", {"gemini", "openai"}) in ("v-big", "l-llama")


async def test_embedding_routes_drop_providers_without_a_key(env: Env) -> None:
    client = env.client(unavailable={"gemini"})
    req = parse_chat_request(
        {"model": "auto", "messages": [{"role": "user", "content": "x"}]}, Limits()
    )
    req.api = EMBEDDINGS_API
    d = await client.route(req, "t", "r", False)
    assert [t.name for t in d.chain] == ["l-embed"]  # the default's listed fallback
    req.model = "g-embed"
    with pytest.raises(ApiError) as info:
        await client.route(req, "t", "r", False)
    assert info.value.code == "model_not_available" and "H4_GEMINI_KEY" in info.value.message
    assert env.recorder.requests == []  # embeddings never ask the router
