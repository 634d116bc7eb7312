"""Stored Responses against real processes, kept in the orchestrator's memory and in a real
Redis: a second turn continues the first (on the same model), the response and its input
items can be read back and deleted by its own tenant only, and what was deleted cannot be
continued. With Redis, another replica serves what the first one stored."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import redis
from openai import OpenAI
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import RedisServer, start_redis
from tollgate_orchestrator.responses_store import PREFIX
from tools.stack import DEV_KEY, Stack, free_port

pytestmark = pytest.mark.integration

KEY_B = "sk-team-b-" + "b" * 32
KEYS = f"dev:{DEV_KEY},team-b:{KEY_B}"


class Rig:
    def __init__(self, stack: Stack, redis_server: RedisServer | None) -> None:
        self.stack = stack
        self.redis = redis_server
        self.a = self.client(stack.base_url, DEV_KEY)
        self.b = self.client(stack.base_url, KEY_B)

    @staticmethod
    def client(base_url: str, key: str) -> OpenAI:
        return OpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0, timeout=20)


@pytest.fixture(scope="module", params=["memory", "redis"])
def rig(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    logs: Path = tmp_path_factory.mktemp(f"responses-{request.param}")
    env = {"TOLLGATE_ORCHESTRATOR_API_KEYS": KEYS}
    server = start_redis(logs) if request.param == "redis" else None
    if server is not None:
        env["TOLLGATE_ORCHESTRATOR_RESPONSES_REDIS_URL"] = server.url
    stack = Stack(log_dir=logs, orch_env=env)
    try:
        stack.start()
        yield Rig(stack, server)
    finally:
        stack.stop()
        if server is not None:
            server.proc.kill()
            server.proc.wait(5)


def text_of(response: openai.types.responses.Response) -> str:
    return response.output_text


def test_two_turns_read_back_and_delete(rig: Rig) -> None:
    a = rig.a
    raw1 = a.responses.with_raw_response.create(model="auto", input="My name is Ada.")
    r1 = raw1.parse()
    raw2 = a.responses.with_raw_response.create(
        model="auto", input="What is my name?", previous_response_id=r1.id
    )
    r2 = raw2.parse()
    # Affinity: the follow-up went to the model that answered the first turn.
    assert raw2.headers["x-tollgate-model"] == raw1.headers["x-tollgate-model"]

    got = a.responses.retrieve(r2.id)
    assert got.id == r2.id and text_of(got) == text_of(r2)

    items = a.responses.input_items.list(r2.id)  # newest first
    kinds = [(i.type, getattr(i, "role", None)) for i in items.data]
    assert kinds == [("message", "user"), ("message", "assistant"), ("message", "user")]
    assert items.data[1].id == r1.output[0].id  # the first answer, by its own id
    first = a.responses.input_items.list(r2.id, order="asc", limit=1)
    listed: Any = first.data[0].to_dict()
    assert listed["content"][0]["text"] == "My name is Ada."
    assert first.has_more

    deleted = a.responses.with_raw_response.delete(r2.id)
    assert deleted.http_response.json() == {"id": r2.id, "object": "response", "deleted": True}
    with pytest.raises(openai.NotFoundError):
        a.responses.retrieve(r2.id)
    with pytest.raises(openai.BadRequestError) as e:
        a.responses.create(model="auto", input="And now?", previous_response_id=r2.id)
    assert e.value.code == "previous_response_not_found"
    assert e.value.param == "previous_response_id"
    assert a.responses.retrieve(r1.id).id == r1.id  # the first turn is still there


def test_another_tenant_can_neither_read_delete_nor_continue(rig: Rig) -> None:
    r = rig.a.responses.create(model="auto", input="A secret for tenant dev.")
    b = rig.b
    with pytest.raises(openai.NotFoundError) as read:
        b.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError):
        b.responses.input_items.list(r.id)
    with pytest.raises(openai.NotFoundError):
        b.responses.delete(r.id)
    with pytest.raises(openai.BadRequestError) as cont:
        b.responses.create(model="auto", input="Tell me.", previous_response_id=r.id)
    assert cont.value.code == "previous_response_not_found"
    with pytest.raises(openai.NotFoundError) as unknown:
        b.responses.retrieve("resp_never_stored")
    # Not found, word for word as an id never stored, but for the id.
    assert str(read.value.body) == str(unknown.value.body).replace("resp_never_stored", r.id)
    assert rig.a.responses.retrieve(r.id).id == r.id  # untouched by the attempts


def test_a_streamed_turn_is_kept_and_continued(rig: Rig) -> None:
    a = rig.a
    with a.responses.stream(model="auto", input="Count to three.") as stream:
        final = stream.get_final_response()
    follow = a.responses.create(model="auto", input="Again.", previous_response_id=final.id)
    assert follow.status == "completed"
    assert a.responses.retrieve(final.id).id == final.id
    assert len(a.responses.input_items.list(follow.id).data) == 3


def test_store_false_keeps_nothing(rig: Rig) -> None:
    r = rig.a.responses.create(model="auto", input="Forget this.", store=False)
    with pytest.raises(openai.NotFoundError):
        rig.a.responses.retrieve(r.id)
    with pytest.raises(openai.BadRequestError) as e:
        rig.a.responses.create(model="auto", input="?", previous_response_id=r.id)
    assert e.value.code == "previous_response_not_found"


def test_routes_are_counted_by_template(rig: Rig) -> None:
    r = rig.a.responses.create(model="auto", input="Count me.")
    rig.a.responses.retrieve(r.id)
    rig.a.responses.input_items.list(r.id)
    rig.a.responses.delete(r.id)
    with urllib.request.urlopen(rig.stack.orchestrator_metrics_url, timeout=5) as resp:
        text = resp.read().decode()
    routes = {
        (s.labels["method"], s.labels["route"])
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == "tollgate_http_requests_total" and s.value > 0
    }
    assert ("GET", "/v1/responses/{response_id}") in routes
    assert ("DELETE", "/v1/responses/{response_id}") in routes
    assert ("GET", "/v1/responses/{response_id}/input_items") in routes
    assert not any("resp_" in route for _, route in routes)


def test_with_redis_every_replica_serves_what_one_stored(rig: Rig) -> None:
    if rig.redis is None:
        pytest.skip("memory is per replica by design")
    r = rig.a.responses.create(model="auto", input="Shared across replicas.")
    port = free_port()
    rig.stack.start_orchestrator("orchestrator-2", http_port=port, grpc_port=free_port())
    other = Rig.client(f"http://127.0.0.1:{port}", DEV_KEY)
    assert other.responses.retrieve(r.id).id == r.id
    follow = other.responses.create(model="auto", input="More.", previous_response_id=r.id)
    assert rig.a.responses.retrieve(follow.id).id == follow.id
    keys = [str(k) for k in redis.Redis(port=rig.redis.port, decode_responses=True).keys("*")]
    assert keys and all(k.startswith(PREFIX) for k in keys)
    assert not any("dev" in k.removeprefix(PREFIX) for k in keys)  # the tenant is hashed
