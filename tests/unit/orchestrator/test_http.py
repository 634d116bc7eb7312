"""The HTTP face in process: OpenAI-shaped errors, limits, request ids, probes, metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx2
import orjson
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from tollgate_common.config import load_settings
from tollgate_orchestrator.config import DEV_KEY, OrchestratorSettings
from tollgate_orchestrator.http_api import build_app
from tollgate_orchestrator.wiring import Gateway
from tools.stack import free_port

AUTH = {"authorization": f"Bearer {DEV_KEY}"}


@pytest.fixture
async def rig(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[httpx2.AsyncClient, Gateway]]:
    import os

    for k in list(os.environ):
        if k.startswith("TOLLGATE_"):
            monkeypatch.delenv(k)
    dead = f"127.0.0.1:{free_port()}"
    settings = load_settings(
        OrchestratorSettings,
        "orchestrator",
        router_addr=dead,
        cache_addr=dead,
        upstream_base_url=f"http://{dead}/v1",
        max_body_bytes=4096,
        request_deadline_seconds=2,
    )
    parts = Gateway(settings, CollectorRegistry())
    parts.ready = True
    app = build_app(parts)
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://gw") as client:
        yield client, parts
    await parts.close()


def scrape(gw: Gateway) -> str:
    """The registry as the metrics port serves it (/metrics is off the API port)."""
    return generate_latest(gw.families.registry).decode()


def error_of(resp: httpx2.Response) -> dict[str, object]:
    assert resp.headers["content-type"].startswith("application/json")
    assert resp.headers.get("x-request-id")
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str)
    for k in ("type", "param", "code"):
        assert err[k] is None or (isinstance(err[k], str) and err[k] != "None")
    return err  # type: ignore[no-any-return]


async def test_auth_errors_are_401_and_alike(rig) -> None:
    client, _ = rig
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    missing = await client.post("/v1/chat/completions", json=body)
    wrong = await client.post(
        "/v1/chat/completions", json=body, headers={"authorization": "Bearer sk-nope"}
    )
    for resp in (missing, wrong):
        assert resp.status_code == 401
        assert error_of(resp)["code"] == "invalid_api_key"
        assert resp.headers["x-should-retry"] == "false"
    assert (await client.get("/v1/models")).status_code == 401


async def test_bad_bodies_are_400_naming_the_field(rig) -> None:
    client, _ = rig
    cases = [
        (b"{oops", None),
        (b"\xff\xfe\x00", None),
        (b'{"model": "auto", "messages": []}', "messages"),
        (b'{"model": "auto", "messages": [{"role": "x", "content": "a"}]}', "messages[0].role"),
        (
            b'{"model": "auto", "messages": [{"role": "user", "content": "a"}], "stream": "1"}',
            "stream",
        ),
    ]
    for raw, param in cases:
        resp = await client.post("/v1/chat/completions", content=raw, headers=AUTH)
        assert resp.status_code == 400, raw
        assert error_of(resp)["param"] == param


async def test_body_over_the_limit_is_413(rig) -> None:
    client, parts = rig
    big = orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": "x" * 5000}]})
    resp = await client.post("/v1/chat/completions", content=big, headers=AUTH)
    assert resp.status_code == 413
    assert error_of(resp)["code"] == "request_too_large"

    async def chunked() -> AsyncIterator[bytes]:  # no content-length: counted as it comes
        for _ in range(10):
            yield b" " * 1000

    resp = await client.post("/v1/chat/completions", content=chunked(), headers=AUTH)
    assert resp.status_code == 413
    assert parts.admissions.slots.used == 0


async def test_unknown_routes_and_methods_are_openai_shaped(rig) -> None:
    client, parts = rig
    resp = await client.get("/v1/nope/12345")
    assert resp.status_code == 404
    error_of(resp)
    resp = await client.get("/v1/chat/completions")
    assert resp.status_code == 405
    error_of(resp)
    text = scrape(parts)
    assert 'route="other"' in text
    assert "/v1/nope" not in text  # raw paths never become labels


async def test_request_id_is_honoured_or_made(rig) -> None:
    client, _ = rig
    resp = await client.get("/healthz", headers={"x-request-id": "abc-123"})
    assert resp.headers["x-request-id"] == "abc-123"
    resp = await client.get("/healthz", headers={"x-request-id": "bad id\twith spaces"})
    assert resp.headers["x-request-id"] != "bad id\twith spaces"
    assert len(resp.headers["x-request-id"]) == 32


async def test_concurrency_cap_refuses_at_once(rig) -> None:
    client, parts = rig
    parts.admissions.slots.used = parts.admissions.slots.limit
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    resp = await client.post("/v1/chat/completions", json=body, headers=AUTH)
    assert resp.status_code == 503
    assert resp.headers["retry-after"] == "1"
    assert error_of(resp)["code"] == "overloaded"
    parts.admissions.slots.used = 0


async def test_dead_upstream_is_a_clean_5xx_and_router_down_degrades(rig) -> None:
    client, parts = rig
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    resp = await client.post("/v1/chat/completions", json=body, headers=AUTH)
    assert resp.status_code in (502, 504)
    error_of(resp)
    resp = await client.post(
        "/v1/chat/completions", json={**body, "model": "no-such-model"}, headers=AUTH
    )
    assert resp.status_code == 404
    assert error_of(resp)["code"] == "model_not_found"
    assert error_of(resp)["param"] == "model"
    text = scrape(parts)
    assert 'tollgate_degraded_total{dependency="router"' in text


async def test_probes_and_models(rig) -> None:
    client, parts = rig
    assert (await client.get("/healthz")).status_code == 200
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    parts.draining = True
    assert (await client.get("/readyz")).status_code == 503
    assert (await client.get("/healthz")).status_code == 200
    parts.draining = False
    models = (await client.get("/v1/models", headers=AUTH)).json()
    ids = {m["id"] for m in models["data"]}
    assert {"auto", "gpt-4o-mini"} <= ids


async def test_openapi_describes_the_chat_body_and_the_key(rig) -> None:
    client, _ = rig
    schema = (await client.get("/openapi.json")).json()
    op = schema["paths"]["/v1/chat/completions"]["post"]
    body = op["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["model", "messages"]
    assert op["security"] == [{"bearerAuth": []}]
    assert {"400", "401", "404", "413", "429"} <= set(op["responses"])


async def test_metrics_are_off_the_api_port_unless_asked(rig) -> None:
    client, parts = rig
    resp = await client.get("/metrics")
    assert resp.status_code == 404  # M-4: tenant names and spend are not public
    settings = parts.settings.model_copy(update={"metrics_on_api_port": True})
    on = build_app(_with_settings(parts, settings))
    transport = httpx2.ASGITransport(app=on)
    async with httpx2.AsyncClient(transport=transport, base_url="http://gw") as c:
        resp = await c.get("/metrics")
    assert resp.status_code == 200 and "tollgate_http_requests_total" in resp.text


def _with_settings(gw: Gateway, settings: OrchestratorSettings) -> Gateway:
    gw.settings = settings
    return gw


async def test_a_response_header_the_server_refuses_still_gets_a_500(rig) -> None:
    """L-1: a model name with CR/LF reaches the response headers; the client gets a 500
    (counted as one), not an empty closed connection."""
    _client, parts = rig
    from tollgate_orchestrator import http_api
    from tollgate_orchestrator.types import Meta, Whole

    async def bad(*_: object, **__: object) -> Whole:
        meta = Meta("evil\r\nset-cookie: x", "chat", "", "miss", None, False)
        return Whole(b"{}", meta)

    parts.pipeline.handle = bad
    sent: list[dict[str, object]] = []
    app = build_app(parts)

    async def strict_send(msg: dict[str, object]) -> None:  # uvicorn's check, in process
        if msg["type"] == "http.response.start":
            http_api._check_headers(list(msg.get("headers", [])))  # type: ignore[call-overload]
        sent.append(msg)

    body = orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": "hi"}]})
    msgs = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, object]:
        return msgs.pop(0) if msgs else {"type": "http.disconnect"}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "headers": [(b"authorization", AUTH["authorization"].encode())],
        "http_version": "1.1",
        "scheme": "http",
        "server": ("gw", 80),
        "client": ("c", 1),
        "root_path": "",
    }
    await app(scope, receive, strict_send)  # type: ignore[arg-type]
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert [m["status"] for m in starts] == [500]
    assert 'code="500"' in scrape(parts) and "tollgate_http_requests_total" in scrape(parts)


async def test_a_tenant_holds_at_most_its_share_of_the_slots(rig) -> None:
    """M-3: with the default share (0.5), a tenant holding half the slots is refused
    with the overloaded 503, counted as tenant_concurrency; the slot is given back."""
    client, parts = rig
    slots = parts.admissions.slots
    assert slots.tenant_limit == slots.limit // 2
    slots.by_tenant["dev"] = slots.tenant_limit
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    resp = await client.post("/v1/chat/completions", json=body, headers=AUTH)
    assert resp.status_code == 503
    assert error_of(resp)["code"] == "overloaded"
    assert resp.headers["retry-after"] == "1"
    assert 'tollgate_http_rejections_total{reason="tenant_concurrency"} 1.0' in scrape(parts)
    assert slots.used == 0 and slots.by_tenant["dev"] == slots.tenant_limit
    slots.by_tenant.clear()
    resp = await client.post("/v1/chat/completions", json=body, headers=AUTH)
    assert resp.status_code != 503  # the dead upstream answers it; the share was free
    assert slots.by_tenant == {} and slots.used == 0


async def test_models_of_providers_without_a_key_are_not_listed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os

    for k in list(os.environ):
        if k.startswith("TOLLGATE_") or k in ("ANTHROPIC_API_KEY", "GEMINI_API_KEY"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-only")
    dead = f"127.0.0.1:{free_port()}"
    settings = load_settings(
        OrchestratorSettings, "orchestrator", router_addr=dead, cache_addr=dead
    )
    gw = Gateway(settings, CollectorRegistry())
    gw.ready = True
    transport = httpx2.ASGITransport(app=build_app(gw))
    try:
        async with httpx2.AsyncClient(transport=transport, base_url="http://gw") as client:
            models = (await client.get("/v1/models", headers=AUTH)).json()["data"]
            claude = await client.get("/v1/models/claude-haiku-4-5", headers=AUTH)
    finally:
        await gw.close()
    owners = {m["owned_by"] for m in models}
    assert owners == {"tollgate", "openai"}  # auto, and OpenAI's models: no Claude, no Gemini
    assert claude.status_code == 404
