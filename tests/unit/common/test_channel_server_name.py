"""The operator dials pods by IP; with TLS the certificate names the Service, and the
channel checks that name instead of the address (``tls_server_name``)."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from tollgate_common.config import ServiceSettings
from tollgate_common.grpc.channel import make_channel
from tollgate_common.grpc.server import start_grpc_server
from tollgate_common.metrics import create_families


def _ssl(d: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)


def certs(d: Path) -> None:
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _ssl(d, "req", "-x509", *ec, "-subj", "/CN=ca", "-keyout", "ca.key", "-out", "ca.crt")
    _ssl(d, "req", *ec, "-subj", "/CN=tollgate-router", "-keyout", "s.key", "-out", "s.csr")
    (d / "san.ext").write_text("subjectAltName=DNS:tollgate-router\n")
    _ssl(d, "x509", "-req", "-in", "s.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
         "-CAcreateserial", "-out", "s.crt", "-days", "1", "-extfile", "san.ext")  # fmt: skip


async def test_a_pod_ip_is_verified_against_the_services_name(tmp_path: Path) -> None:
    certs(tmp_path)
    settings = ServiceSettings(
        grpc_tls_cert=tmp_path / "s.crt",
        grpc_tls_key=tmp_path / "s.key",
        grpc_allow_unauthenticated=True,
    )

    def register(server: grpc.aio.Server) -> Sequence[str]:
        return []

    fam = create_families("router", CollectorRegistry())
    server = await start_grpc_server(settings=settings, port=0, families=fam, register=register)
    addr = f"127.0.0.1:{server.port}"
    req = health_pb2.HealthCheckRequest()
    try:
        named = make_channel(
            addr, default_timeout=5, tls_ca=tmp_path / "ca.crt", tls_server_name="tollgate-router"
        )
        resp = await health_pb2_grpc.HealthStub(named).Check(req)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
        await named.close()
        bare = make_channel(addr, default_timeout=2, tls_ca=tmp_path / "ca.crt")
        try:
            await health_pb2_grpc.HealthStub(bare).Check(req)
            raise AssertionError("an IP the certificate does not name was accepted")
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE
        await bare.close()
    finally:
        await server.stop(0)
