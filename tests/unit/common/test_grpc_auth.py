"""Caller checks on every gRPC method (H-1..H-3): tokens, mutual TLS identities, the
per-method table, refusals counted and the handler never run; settings that refuse an
open or half-TLS server (M-6); reflection off by default and server limits (L-11)."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from tollgate_common.config import ConfigError, ServiceSettings, load_settings
from tollgate_common.grpc.auth import (
    PUBLIC,
    TOKEN_HEADER,
    Allowed,
    load_callers_file,
    read_token_file,
)
from tollgate_common.grpc.channel import make_channel
from tollgate_common.grpc.server import GrpcServer, start_grpc_server
from tollgate_common.metrics import create_families

SVC = "tollgate.test.v1.Control"
TOKENS = {"orchestrator": "tok-orchestrator-" + "a" * 32, "operator": "tok-operator-" + "b" * 32}
TABLE: dict[str, Allowed] = {
    f"/{SVC}/Push": frozenset({"operator"}),
    f"/{SVC}/Read": frozenset({"operator", "orchestrator"}),
    f"/{SVC}/Open": PUBLIC,
    f"/{SVC}/Watch": frozenset({"operator"}),
    # "/{SVC}/Forgotten" is registered but not declared: nobody may call it
}


@dataclass
class Calls:
    ran: list[str] = field(default_factory=list)


def _register(calls: Calls) -> Any:
    def unary(name: str) -> grpc.RpcMethodHandler:
        async def handle(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            calls.ran.append(name)
            return b"ok:" + request

        return grpc.unary_unary_rpc_method_handler(handle)

    async def watch(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        calls.ran.append("Watch")
        yield b"one"
        yield b"two"

    def register(server: grpc.aio.Server) -> Sequence[str]:
        handlers = {n: unary(n) for n in ("Push", "Read", "Open", "Forgotten")}
        handlers["Watch"] = grpc.unary_stream_rpc_method_handler(watch)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SVC, handlers),))
        return [SVC]

    return register


def callers_file(tmp: Path, tokens: dict[str, Any] = TOKENS) -> Path:
    path = tmp / "callers.yaml"
    lines = []
    for name, tok in tokens.items():
        toks = tok if isinstance(tok, list) else [tok]
        digests = ", ".join(hashlib.sha256(t.encode()).hexdigest() for t in toks)
        lines.append(f"{name}: [{digests}]")
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class Rig:
    server: GrpcServer
    registry: CollectorRegistry
    calls: Calls

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def denied(self, method: str, reason: str) -> float:
        labels = {"service": "router", "grpc_service": SVC, "grpc_method": method}
        value = self.registry.get_sample_value(
            "tollgate_grpc_auth_denied_total", {**labels, "reason": reason}
        )
        return value or 0.0


async def start(settings: ServiceSettings) -> Rig:
    registry = CollectorRegistry()
    calls = Calls()
    server = await start_grpc_server(
        settings=settings,
        port=0,
        families=create_families("router", registry),
        register=_register(calls),
        callers=TABLE,
    )
    return Rig(server, registry, calls)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    r = await start(ServiceSettings(grpc_callers_file=callers_file(tmp_path)))
    yield r
    await r.server.stop(0)


async def call(addr: str, method: str, token: str | None = None, **kw: Any) -> bytes:
    md = ((TOKEN_HEADER, token),) if token is not None else None
    async with grpc.aio.insecure_channel(addr) as ch:
        out: bytes = await ch.unary_unary(f"/{SVC}/{method}")(b"x", metadata=md, timeout=5)
        return out


async def code_of(addr: str, method: str, token: str | None = None) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(addr, method, token)
    code: grpc.StatusCode = err.value.code()
    return code


async def test_the_right_token_reaches_the_handler(rig: Rig) -> None:
    assert await call(rig.addr, "Push", TOKENS["operator"]) == b"ok:x"
    assert await call(rig.addr, "Read", TOKENS["orchestrator"]) == b"ok:x"
    assert rig.calls.ran == ["Push", "Read"]
    assert rig.denied("Push", "unauthenticated") == 0


async def test_no_or_a_wrong_token_is_unauthenticated_counted_and_never_runs(rig: Rig) -> None:
    assert await code_of(rig.addr, "Push") == grpc.StatusCode.UNAUTHENTICATED
    assert await code_of(rig.addr, "Push", "guess") == grpc.StatusCode.UNAUTHENTICATED
    assert (
        await code_of(rig.addr, "Push", TOKENS["operator"] + "x") == grpc.StatusCode.UNAUTHENTICATED
    )
    assert await code_of(rig.addr, "Push", "x" * 5000) == grpc.StatusCode.UNAUTHENTICATED
    assert rig.calls.ran == []
    assert rig.denied("Push", "unauthenticated") == 4
    # The refusal is in the ordinary gRPC metrics too, with its code.
    handled = rig.registry.get_sample_value(
        "grpc_server_handled_total",
        {
            "grpc_type": "unary",
            "grpc_service": SVC,
            "grpc_method": "Push",
            "grpc_code": "UNAUTHENTICATED",
        },
    )
    assert handled == 4


async def test_a_known_caller_the_method_does_not_allow_is_permission_denied(rig: Rig) -> None:
    code = await code_of(rig.addr, "Push", TOKENS["orchestrator"])
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert rig.calls.ran == []
    assert rig.denied("Push", "permission_denied") == 1
    assert rig.denied("Push", "unauthenticated") == 0


async def test_a_method_missing_from_the_table_allows_nobody(rig: Rig) -> None:
    for token in TOKENS.values():
        code = await code_of(rig.addr, "Forgotten", token)
        assert code == grpc.StatusCode.PERMISSION_DENIED
    assert await code_of(rig.addr, "Forgotten") == grpc.StatusCode.UNAUTHENTICATED
    assert rig.calls.ran == []


async def test_public_methods_and_health_need_no_identity(rig: Rig) -> None:
    assert await call(rig.addr, "Open") == b"ok:x"
    async with grpc.aio.insecure_channel(rig.addr) as ch:
        resp = await health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    assert resp.status == health_pb2.HealthCheckResponse.SERVING


async def test_streaming_methods_are_checked_too(rig: Rig) -> None:
    async with grpc.aio.insecure_channel(rig.addr) as ch:
        watch = ch.unary_stream(f"/{SVC}/Watch")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in watch(b"x", timeout=5):
                pass
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        got = [
            m async for m in watch(b"x", timeout=5, metadata=((TOKEN_HEADER, TOKENS["operator"]),))
        ]
    assert got == [b"one", b"two"]
    assert rig.calls.ran == ["Watch"]
    assert rig.denied("Watch", "unauthenticated") == 1


async def test_make_channel_sends_the_token_file_on_every_unary_call(
    rig: Rig, tmp_path: Path
) -> None:
    token = tmp_path / "operator.token"
    token.write_text(TOKENS["operator"] + "\n")
    ch = make_channel(rig.addr, default_timeout=5, token_file=token)
    push = ch.unary_unary(f"/{SVC}/Push")
    assert await push(b"a") == b"ok:a"
    assert await push(b"b", metadata=(("x-request-id", "r1"),)) == b"ok:b"  # merged
    await ch.close()
    plain = make_channel(rig.addr, default_timeout=5)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await plain.unary_unary(f"/{SVC}/Push")(b"c")
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    await plain.close()


async def test_two_tokens_per_caller_during_a_rotation(tmp_path: Path) -> None:
    old, new = "old-" + "c" * 40, "new-" + "d" * 40
    r = await start(
        ServiceSettings(grpc_callers_file=callers_file(tmp_path, {"operator": [old, new]}))
    )
    try:
        assert await call(r.addr, "Push", old) == b"ok:x"
        assert await call(r.addr, "Push", new) == b"ok:x"
    finally:
        await r.server.stop(0)


def test_token_and_callers_files_are_checked(tmp_path: Path) -> None:
    empty = tmp_path / "empty.token"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="grpc_token_file"):
        read_token_file(empty)
    with pytest.raises(ConfigError, match="grpc_token_file"):
        read_token_file(tmp_path / "missing")
    bad = tmp_path / "bad.yaml"
    for text in ("operator: not-a-digest\n", "- a\n", "Bad Name: " + "0" * 64 + "\n", ""):
        bad.write_text(text)
        with pytest.raises(ConfigError, match="grpc_callers_file"):
            load_callers_file(bad)
    # The digest is never echoed back (it is a secret's hash, but still).
    bad.write_text("operator: " + "f" * 63 + "\n")
    with pytest.raises(ConfigError) as err:
        load_callers_file(bad)
    assert "f" * 63 not in str(err.value)


async def test_a_server_without_any_caller_identity_refuses_to_start() -> None:
    with pytest.raises(ConfigError, match="grpc_callers_file"):
        await start(ServiceSettings())


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"grpc_tls_cert": "c.pem"}, "grpc_tls_key"),
        ({"grpc_tls_key": "k.pem"}, "grpc_tls_cert"),
        ({"grpc_tls_client_ca": "ca.pem"}, "grpc_tls_client_ca"),
        ({"grpc_tls_client_ca": "ca.pem", "grpc_tls_key": "k.pem"}, "grpc_tls_cert"),
    ],
)
def test_partial_tls_settings_are_a_config_error_naming_the_fields(
    fields: dict[str, str], named: str
) -> None:
    class Svc(ServiceSettings):
        model_config = {**ServiceSettings.model_config, "env_prefix": "TOLLGATE_TESTSVC_"}

    with pytest.raises(ConfigError) as err:
        load_settings(Svc, "testsvc", **fields)
    assert named in str(err.value)
    assert "TOLLGATE_TESTSVC_GRPC_TLS" in str(err.value)


async def test_reflection_is_off_unless_asked_for(tmp_path: Path) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    async def list_services(addr: str) -> list[str]:
        async with grpc.aio.insecure_channel(addr) as ch:
            stub = reflection_pb2_grpc.ServerReflectionStub(ch)
            req = reflection_pb2.ServerReflectionRequest(list_services="")
            names = []
            async for resp in stub.ServerReflectionInfo(iter([req]), timeout=5):
                names = [s.name for s in resp.list_services_response.service]
            return names

    off = await start(ServiceSettings(grpc_callers_file=callers_file(tmp_path)))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await list_services(off.addr)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    await off.server.stop(0)
    on = await start(
        ServiceSettings(grpc_callers_file=callers_file(tmp_path), grpc_reflection=True)
    )
    assert SVC in await list_services(on.addr)
    await on.server.stop(0)


async def test_calls_beyond_the_concurrency_bound_are_resource_exhausted(tmp_path: Path) -> None:
    import asyncio

    gate = asyncio.Event()
    registry = CollectorRegistry()

    async def slow(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await gate.wait()
        return request

    def register(server: grpc.aio.Server) -> Sequence[str]:
        h = {"Open": grpc.unary_unary_rpc_method_handler(slow)}
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SVC, h),))
        return [SVC]

    settings = ServiceSettings(grpc_allow_unauthenticated=True, grpc_max_concurrent_rpcs=2)
    server = await start_grpc_server(
        settings=settings, port=0, families=create_families("router", registry), register=register
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        m = ch.unary_unary(f"/{SVC}/Open")
        held = [asyncio.ensure_future(m(b"x", timeout=5)) for _ in range(2)]
        await asyncio.sleep(0.2)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await m(b"y", timeout=5)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        gate.set()
        assert await asyncio.gather(*held) == [b"x", b"x"]
    await server.stop(0)


# --- mutual TLS: the client certificate names the caller -----------------------------


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certs(d: Path, clients: Sequence[str]) -> None:
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-subj", "/CN=test-ca", "-keyout", "ca.key", "-out", "ca.crt",
             "-days", "1", cwd=d)  # fmt: skip
    for name in ("server", *clients):
        san = "DNS:localhost,IP:127.0.0.1" if name == "server" else f"DNS:{name}.svc"
        (d / f"{name}.ext").write_text(f"subjectAltName={san}\n")
        _openssl("req", *ec, "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out",
                 f"{name}.csr", cwd=d)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.crt", "-days", "1", "-extfile",
                 f"{name}.ext", cwd=d)  # fmt: skip


async def test_mutual_tls_identity_from_the_client_certificate(tmp_path: Path) -> None:
    make_certs(tmp_path, ["operator", "orchestrator", "stranger"])
    r = await start(
        ServiceSettings(
            grpc_tls_cert=tmp_path / "server.crt",
            grpc_tls_key=tmp_path / "server.key",
            grpc_tls_client_ca=tmp_path / "ca.crt",
        )
    )

    async def as_caller(name: str, method: str) -> bytes:
        ch = make_channel(
            r.addr,
            default_timeout=5,
            tls_ca=tmp_path / "ca.crt",
            tls_cert=tmp_path / f"{name}.crt",
            tls_key=tmp_path / f"{name}.key",
        )
        try:
            out: bytes = await ch.unary_unary(f"/{SVC}/{method}")(b"x")
            return out
        finally:
            await ch.close()

    try:
        assert await as_caller("operator", "Push") == b"ok:x"
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await as_caller("orchestrator", "Push")
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await as_caller("stranger", "Read")  # a valid certificate naming no caller
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert r.calls.ran == ["Push"]
        assert r.denied("Push", "permission_denied") == 1
        assert r.denied("Read", "unauthenticated") == 1
    finally:
        await r.server.stop(0)
