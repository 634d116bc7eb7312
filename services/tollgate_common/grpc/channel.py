"""Client channels that always carry a deadline, with metrics and optional TLS."""

from __future__ import annotations

from pathlib import Path

import grpc

from tollgate_common.grpc.interceptors import ClientInterceptor
from tollgate_common.metrics import Families

# Keep the connection warm and fail fast rather than hang when a peer vanishes.
CHANNEL_OPTIONS: list[tuple[str, int]] = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2_000),
    ("grpc.enable_retries", 0),  # the orchestrator owns retries and fallbacks
]


def make_channel(
    target: str,
    *,
    default_timeout: float,
    families: Families | None = None,
    tls_ca: Path | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
) -> grpc.aio.Channel:
    """One channel per peer, created once and reused for every call.

    ``default_timeout`` becomes the deadline of any call that sets none, so no
    call can wait forever on a frozen peer. With ``tls_ca`` the channel uses TLS;
    with a client cert and key as well, mutual TLS.
    """
    interceptors = [ClientInterceptor(families, default_timeout)]
    if tls_ca is None:
        return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS, interceptors=interceptors)
    creds = grpc.ssl_channel_credentials(
        root_certificates=tls_ca.read_bytes(),
        private_key=tls_key.read_bytes() if tls_key else None,
        certificate_chain=tls_cert.read_bytes() if tls_cert else None,
    )
    return grpc.aio.secure_channel(
        target, creds, options=CHANNEL_OPTIONS, interceptors=interceptors
    )
