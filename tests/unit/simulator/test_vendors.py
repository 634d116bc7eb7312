"""The simulator's vendor flavours (tollgate_simulator/vendors.py), served in process."""

from __future__ import annotations

from typing import Any

import httpx2
import orjson

from tollgate_simulator.http_api import SimulatorApp

KEY = "k1"
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
BODY: dict[str, Any] = {
    "model": "gemini-2.5-flash",
    "messages": [{"role": "user", "content": "What is the weather in Paris? Use the tool."}],
    "tools": [TOOL],
}


def client(**kw: Any) -> httpx2.AsyncClient:
    app = SimulatorApp(["gemini-2.5-flash", "gpt-4o-mini"], latency_scale=0, api_key=KEY, **kw)
    return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://sim")


def events(text: str) -> list[Any]:
    return [orjson.loads(line[6:]) for line in text.split("\n\n") if line.startswith("data: {")]


async def test_gemini_chat_has_its_quirks_whole_and_streamed() -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    async with client() as c:
        whole = (await c.post("/v1beta/openai/chat/completions", json=BODY, headers=auth)).json()
        body = {**BODY, "stream": True, "stream_options": {"include_usage": True}}
        r = await c.post("/v1beta/openai/chat/completions", json=body, headers=auth)
    choice = whole["choices"][0]
    assert choice["finish_reason"] == "stop" and choice["message"]["tool_calls"][0]["id"] == ""
    chunks = events(r.text)
    call = chunks[0]["choices"][0]["delta"]["tool_calls"][0]
    assert "index" not in call and "id" not in call and "extra_content" in call
    last = chunks[-1]
    assert last["choices"][0]["finish_reason"] == "stop" and last["choices"][0]["delta"] == {}
    assert last["usage"]["prompt_tokens"] > 0  # on the finish chunk, no choices: [] chunk
    assert r.text.endswith("data: [DONE]\n\n")


async def test_gemini_errors_are_a_list_with_a_grpc_status() -> None:
    async with client() as c:
        wrong = await c.post(
            "/v1beta/openai/chat/completions", json=BODY, headers={"Authorization": "Bearer no"}
        )
        await c.post("/_sim/faults", json={"model": "gemini-2.5-flash", "status": 429})
        limited = await c.post(
            "/v1beta/openai/chat/completions", json=BODY, headers={"x-goog-api-key": KEY}
        )
    assert wrong.status_code == 400 and wrong.json()[0]["error"]["status"] == "INVALID_ARGUMENT"
    assert limited.status_code == 429
    assert limited.json()[0]["error"] == {
        "code": 429,
        "message": "Simulated 429 error.",
        "status": "RESOURCE_EXHAUSTED",
    }


async def test_azure_classic_answers_as_the_deployment_and_names_unknown_ones() -> None:
    q = "?api-version=2024-10-21"
    async with client(allowed_models=["gpt-4o-mini"]) as c:
        ok = await c.post(
            f"/openai/deployments/gpt-4o-mini/chat/completions{q}",
            json=BODY,
            headers={"api-key": KEY},
        )
        gone = await c.post(
            f"/openai/deployments/nope/chat/completions{q}", json=BODY, headers={"api-key": KEY}
        )
        bad = await c.post(
            "/openai/deployments/gpt-4o-mini/chat/completions?api-version=v9",
            json=BODY,
            headers={"api-key": KEY},
        )
        keyless = await c.post("/openai/v1/chat/completions", json=BODY)
        journal = (await c.get("/_sim/requests")).json()["requests"]
    assert ok.status_code == 200 and ok.json()["model"] == "gpt-4o-mini"
    assert "content_filter_results" in ok.json()["choices"][0]
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "DeploymentNotFound"
    assert bad.status_code == 400 and bad.json()["error"]["message"] == "API version not supported"
    assert keyless.status_code == 401 and keyless.json()["error"]["code"] == "401"
    assert journal[0]["query"] == "api-version=2024-10-21"
    assert journal[0]["body"]["model"] == "gemini-2.5-flash"  # journaled as sent
    assert "api-key" not in journal[0]["headers"]  # credentials are never kept
