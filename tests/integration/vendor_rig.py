"""What the vendor adapters' end-to-end tests share (``test_anthropic_upstream``,
``test_vendor_upstreams``): a rig that sends chat requests through the orchestrator's real
transport and dispatch (``Upstreams``, ``Dispatch``) for the models of a test policy, the
simulator and aimock started for a module, and an in-process gateway whose router sends
every request to a fixed chain of that policy.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2
import orjson
import pytest
from openai import AsyncOpenAI
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from prometheus_client import CollectorRegistry

from tests.upstream_mocks import AIMock, start_aimock
from tollgate_common.config import load_settings
from tollgate_common.policy import Policy, parse_policy
from tollgate_orchestrator.config import OrchestratorSettings
from tollgate_orchestrator.http_api import build_app
from tollgate_orchestrator.providers.dispatch import Dispatch
from tollgate_orchestrator.providers.openai import Upstreams
from tollgate_orchestrator.sse import DONE
from tollgate_orchestrator.types import RouteDecision, Target
from tollgate_orchestrator.validation import Limits, parse_body
from tollgate_orchestrator.wiring import Gateway
from tools.stack import DEV_KEY, Stack, free_port

KEY = "sim-key"  # the simulator's key, and aimock's where it checks one
TOOL: Any = {  # Any: the SDK types its params as TypedDicts
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
WEATHER = "What is the weather in Paris? Use the tool."


def target_of(policy: Policy, name: str) -> Target:
    m = policy.models[name]
    return Target(name, m.provider, m.upstream_model or name, m)


class Rig:
    """Chat requests to a model of ``policy_yaml``, through the real transport and dispatch."""

    def __init__(self, policy_yaml: str) -> None:
        self.policy = parse_policy(policy_yaml)
        self.upstreams = Upstreams(
            self.policy, base_url=None, connect_timeout=5.0, read_timeout=10.0
        )
        self.dispatch = Dispatch(self.upstreams)

    def target(self, name: str) -> Target:
        return target_of(self.policy, name)

    async def complete(self, name: str, **body: Any) -> dict[str, Any]:
        raw, _ = await self.dispatch.complete(self.target(name), request(**body), 10.0)
        ChatCompletion.model_validate_json(raw)  # what openai-python accepts
        parsed: dict[str, Any] = orjson.loads(raw)
        return parsed

    async def stream(self, name: str, **body: Any) -> list[dict[str, Any]]:
        up = await self.dispatch.stream(self.target(name), request(stream=True, **body), 10.0)
        out: list[bytes] = list(up.first)
        try:
            async for p in up:
                out.append(p)
                if p == DONE:
                    break
        finally:
            await up.aclose()
        assert out[-1] == DONE
        return [orjson.loads(p) for p in out[:-1]]

    async def close(self) -> None:
        await self.upstreams.close()


def request(**body: Any) -> Any:
    body.setdefault("messages", [{"role": "user", "content": WEATHER}])
    return parse_body(orjson.dumps({"model": "m", **body}), Limits())


def assembled(chunks: list[dict[str, Any]]) -> Any:
    """The stream as openai-python assembles it."""
    state = ChatCompletionStreamState()
    for c in chunks:
        if c["choices"] or c.get("usage"):  # not Azure's prompt-filter chunk (object "")
            state.handle_chunk(ChatCompletionChunk.model_validate(c))
    return state.get_final_completion()


# --- upstreams -----------------------------------------------------------------------------


@contextmanager
def running_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """An instant simulator (latency scale 0) that checks ``KEY``."""
    stack = Stack(
        log_dir=tmp_path_factory.mktemp("sim"),
        sim_env={"TOLLGATE_SIM_LATENCY_SCALE": "0"},
        sim_key=KEY,
    )
    try:
        stack.start_sim()
        yield stack
    finally:
        stack.stop()


async def sim_call(sim: Stack, method: str, path: str, body: Any = None) -> Any:
    """The simulator's control API (``/_sim/...``): its JSON answer."""
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}) as c:
        r = await c.request(method, f"{sim.sim_url}{path}", json=body)
        return r.json()


@contextmanager
def running_aimock(
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    fixtures: list[dict[str, Any]],
    api_keys: tuple[str, ...] = (),
) -> Iterator[AIMock]:
    """aimock serving ``fixtures`` (from ``{name}.json``)."""
    folder = tmp_path_factory.mktemp("aimock-fixtures")
    (folder / f"{name}.json").write_text(json.dumps({"fixtures": fixtures}))
    mock = start_aimock(tmp_path_factory.mktemp("aimock-log"), folder, api_keys=api_keys)
    try:
        yield mock
    finally:
        mock.stop()


# --- the whole gateway, the openai SDK as its client ---------------------------------------


class ChainRouter:
    """Routes every request to a fixed chain of the test's policy (no router service)."""

    def __init__(self, policy: Policy, *names: str) -> None:
        self.chain = tuple(target_of(policy, n) for n in names)

    async def route(self, req: Any, tenant: str, request_id: str, downgrade: bool) -> Any:
        return RouteDecision("chat", "small", self.chain, self.chain[0])


def gateway_on(
    policy_yaml: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *chain: str
) -> Gateway:
    """A ready gateway serving ``policy_yaml``, routing to ``chain`` (close it after)."""
    for k in [k for k in os.environ if k.startswith("TOLLGATE_")]:
        monkeypatch.delenv(k)
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_yaml)
    dead = f"127.0.0.1:{free_port()}"
    settings = load_settings(
        OrchestratorSettings, "orchestrator", router_addr=dead, cache_addr=dead, policy_file=policy
    )
    gw = Gateway(settings, CollectorRegistry())
    gw.ready = True
    gw.pipeline.router = ChainRouter(parse_policy(policy.read_text()), *chain)
    return gw


def sdk(gateway: Gateway) -> AsyncOpenAI:
    """openai-python, in process, against the gateway's app."""
    http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=build_app(gateway)))
    return AsyncOpenAI(base_url="http://gw/v1", api_key=DEV_KEY, http_client=http, max_retries=0)
