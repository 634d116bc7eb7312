"""The operator's pushes carry its caller token and can speak TLS (H-1, H-3, M-6)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry

from tollgate.router.v1 import router_pb2, router_pb2_grpc
from tollgate_common.config import ConfigError, ServiceSettings, load_settings
from tollgate_common.grpc.server import start_grpc_server
from tollgate_common.metrics import create_families
from tollgate_operator.config import OperatorSettings
from tollgate_operator.push import Pusher
from tollgate_router.service import CALLERS

TOKEN = "operator-token-" + "e" * 40


class Router(router_pb2_grpc.RouterServicer):
    def __init__(self) -> None:
        self.pushed: list[str] = []

    async def UpdatePolicy(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.pushed.append(request.source)
        return router_pb2.UpdatePolicyResponse(version="v", changed=True)

    async def Route(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "fake")

    async def GetPolicy(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "fake")


async def test_pushes_send_the_operator_token(tmp_path: Path) -> None:
    callers = tmp_path / "callers.yaml"
    callers.write_text(f"operator: {hashlib.sha256(TOKEN.encode()).hexdigest()}\n")
    token = tmp_path / "operator.token"
    token.write_text(TOKEN + "\n")
    router = Router()

    def register(server: grpc.aio.Server) -> Sequence[str]:
        router_pb2_grpc.add_RouterServicer_to_server(router, server)
        return ["tollgate.router.v1.Router"]

    server = await start_grpc_server(
        settings=ServiceSettings(grpc_callers_file=callers),
        port=0,
        families=create_families("router", CollectorRegistry()),
        register=register,
        callers=CALLERS,
    )
    addr = [f"127.0.0.1:{server.port}"]
    fam = create_families("operator", CollectorRegistry())
    with_token = Pusher(fam, 5, token_file=token)
    without = Pusher(create_families("operator", CollectorRegistry()), 5)
    try:
        (ok,) = await with_token.push_policy(addr, "x: 1", "operator:ns/p")
        assert ok.ok and ok.changed
        (refused,) = await without.push_policy(addr, "x: 1", "someone")
        assert refused.code == "UNAUTHENTICATED"
        assert router.pushed == ["operator:ns/p"]
    finally:
        await with_token.close()
        await without.close()
        await server.stop(0)


def test_a_bad_token_file_stops_the_operator_at_start(tmp_path: Path) -> None:
    fam = create_families("operator", CollectorRegistry())
    with pytest.raises(ConfigError, match="grpc_token_file"):
        Pusher(fam, 5, token_file=tmp_path / "missing.token")


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"peer_tls_cert": "c.pem"}, "peer_tls_key"),
        ({"peer_tls_key": "k.pem"}, "peer_tls_cert"),
        ({"peer_tls_cert": "c.pem", "peer_tls_key": "k.pem"}, "peer_tls_ca"),
    ],
)
def test_partial_peer_tls_settings_are_refused(fields: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_settings(OperatorSettings, "operator", namespace="ns", **fields)


def test_peer_tls_settings_load(tmp_path: Path) -> None:
    s = load_settings(
        OperatorSettings,
        "operator",
        namespace="ns",
        peer_tls_ca="ca.pem",
        peer_tls_cert="c.pem",
        peer_tls_key="k.pem",
        grpc_token_file=str(tmp_path / "t"),
    )
    assert s.peer_tls_ca == Path("ca.pem") and s.grpc_token_file == tmp_path / "t"
