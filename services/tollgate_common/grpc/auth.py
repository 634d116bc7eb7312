"""Who may call which gRPC method: caller identities and the per-method check.

A caller proves who it is with a token in the ``x-tollgate-caller-token`` metadata
(the server holds only sha256 digests, from ``grpc_callers_file``) or, under mutual
TLS, with its client certificate (the CN, or a DNS SAN, names the caller). Each
servicer declares next to itself which callers each of its methods allows
(``CALLERS``: full method name -> a frozenset of caller names, or ``PUBLIC``).

The check is wrapped around each method handler once, at registration
(``server.MeteredRegistrar``), not through a grpc.aio server interceptor, which runs
extra coroutines on every RPC. A call with no accepted identity gets
UNAUTHENTICATED, a known caller the method does not allow gets PERMISSION_DENIED;
either way the handler never runs and ``tollgate_grpc_auth_denied_total`` counts
it. A method missing from the table allows nobody.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import grpc
import yaml

from tollgate_common.config import ConfigError, ServiceSettings
from tollgate_common.metrics import Families

log = logging.getLogger(__name__)

TOKEN_HEADER = "x-tollgate-caller-token"
CALLER_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
_HEX_DIGEST = re.compile(r"^[0-9a-f]{64}$")
MAX_TOKEN_CHARS = 512  # longer metadata values are refused without hashing them


class Public(enum.Enum):
    PUBLIC = "public"


PUBLIC = Public.PUBLIC  # any caller, with or without an identity
Allowed = frozenset[str] | Public
CallerTable = Mapping[str, Allowed]

# The health service answers probes (kubelet, load balancers): no identity needed.
HEALTH_CALLERS: dict[str, Allowed] = {
    "/grpc.health.v1.Health/Check": PUBLIC,
    "/grpc.health.v1.Health/Watch": PUBLIC,
}

REASONS = ("unauthenticated", "permission_denied")


def token_digest(token: str) -> str:
    """The sha256 hex a callers file holds for ``token``."""
    return hashlib.sha256(token.encode()).hexdigest()


def load_callers_file(path: Path) -> dict[str, tuple[bytes, ...]]:
    """``grpc_callers_file``: caller name -> sha256 hex of its token, or a list of them
    (two are accepted while a token rotates). Raises ``ConfigError`` naming the field."""
    where = f"grpc_callers_file {path}"
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{where}: cannot read: {exc}") from exc
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{where}: expected a mapping of caller name to sha256 hex")
    out: dict[str, tuple[bytes, ...]] = {}
    for name, value in data.items():
        if not isinstance(name, str) or not CALLER_NAME.match(name):
            raise ConfigError(f"{where}: {name!r} is not a caller name ([a-z][a-z0-9-]*)")
        values = value if isinstance(value, list) else [value]
        digests = []
        for v in values:
            hexd = v.strip().lower() if isinstance(v, str) else ""
            if not _HEX_DIGEST.match(hexd):
                raise ConfigError(f"{where}: {name}: expected the sha256 hex of a token")
            digests.append(bytes.fromhex(hexd))
        if not digests:
            raise ConfigError(f"{where}: {name}: no token digest")
        out[name] = tuple(digests)
    return out


def read_token_file(path: Path) -> str:
    """``grpc_token_file``: this process's own token (first line). ``ConfigError`` when
    unreadable or empty."""
    try:
        lines = path.read_text().strip().splitlines()
    except OSError as exc:
        raise ConfigError(f"grpc_token_file {path}: cannot read: {exc}") from exc
    token = lines[0].strip() if lines else ""
    if not token:
        raise ConfigError(f"grpc_token_file {path}: empty")
    if len(token) > MAX_TOKEN_CHARS:
        raise ConfigError(f"grpc_token_file {path}: longer than {MAX_TOKEN_CHARS} characters")
    return token


class Identities:
    """Tells the caller of one RPC from its metadata or its client certificate."""

    def __init__(self, digests: Mapping[str, tuple[bytes, ...]], *, mtls: bool) -> None:
        self._digests = [(d, name) for name, ds in digests.items() for d in ds]
        self.names = frozenset(digests)
        self.mtls = mtls

    def _by_token(self, token: str) -> str | None:
        if len(token) > MAX_TOKEN_CHARS:
            return None
        presented = hashlib.sha256(token.encode()).digest()
        found = None
        for digest, name in self._digests:  # every digest compared: no early exit
            if hmac.compare_digest(presented, digest):
                found = name
        return found

    def _by_certificate(
        self, context: grpc.aio.ServicerContext, known: frozenset[str]
    ) -> str | None:
        auth = context.auth_context()
        candidates = [
            *auth.get("x509_common_name", ()),
            *auth.get("x509_subject_alternative_name", ()),
        ]
        for raw in candidates:
            name = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
            if name in known:
                return name
        return None

    def caller(self, context: grpc.aio.ServicerContext, known: frozenset[str]) -> str | None:
        """The caller's name, or None. A token, when sent, must be valid: a wrong one is
        not rescued by a certificate."""
        for key, value in context.invocation_metadata() or ():
            if key == TOKEN_HEADER:
                return self._by_token(value if isinstance(value, str) else value.decode())
        if self.mtls:
            return self._by_certificate(context, known | self.names)
        return None


class Guard:
    """Wraps each method handler with its caller check, once per method."""

    def __init__(self, identities: Identities, table: CallerTable, families: Families) -> None:
        self.identities = identities
        self.table = {**table, **HEALTH_CALLERS}
        self._denied = (
            families.counter("tollgate_grpc_auth_denied_total")
            if "tollgate_grpc_auth_denied_total" in families
            else None
        )
        self._service = families.service
        # Every caller name a certificate may carry: the declared ones and the file's.
        names: set[str] = set(identities.names)
        for allowed in self.table.values():
            if isinstance(allowed, frozenset):
                names |= allowed
        self._known = frozenset(names)

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        allowed = self.table.get(method, frozenset())
        if allowed is PUBLIC:
            return handler
        assert isinstance(allowed, frozenset)
        service, _, name = method.lstrip("/").rpartition("/")
        counts: dict[grpc.StatusCode, Any] = {}
        if self._denied is not None:
            for reason, code in zip(
                REASONS,
                (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED),
                strict=True,
            ):
                counts[code] = self._denied.labels(
                    service=self._service, grpc_service=service, grpc_method=name, reason=reason
                )
        identities, known = self.identities, self._known

        def refusal(context: grpc.aio.ServicerContext) -> tuple[grpc.StatusCode, str] | None:
            caller = identities.caller(context, known)
            if caller is None:
                code, text = grpc.StatusCode.UNAUTHENTICATED, "no accepted caller identity"
            elif caller in allowed:
                return None
            else:
                code, text = grpc.StatusCode.PERMISSION_DENIED, f"{caller} may not call {name}"
            child = counts.get(code)
            if child is not None:
                child.inc()
            log.warning(
                "grpc call refused",
                extra={"grpc_method": method, "reason": code.name, "caller": caller or ""},
            )
            return code, text

        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                denied = refusal(context)
                if denied is not None:
                    await context.abort(*denied)
                return await inner(request, context)

            return grpc.unary_unary_rpc_method_handler(
                unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            inner_stream = handler.unary_stream

            async def stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                denied = refusal(context)
                if denied is not None:
                    await context.abort(*denied)
                result = inner_stream(request, context)
                if hasattr(result, "__aiter__"):
                    async for item in result:
                        yield item
                else:
                    await result

            return grpc.unary_stream_rpc_method_handler(
                stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        # Client- or bidi-streaming methods: tollgate declares none. Refuse them whole.
        return _refuse_all(handler)


def _refuse_all(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    async def refuse(request_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, "streaming calls are not allowed")

    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(
            refuse,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    async def refuse_stream(request_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, "streaming calls are not allowed")
        yield  # pragma: no cover - makes this an async generator

    return grpc.stream_stream_rpc_method_handler(
        refuse_stream,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def guard_from_settings(
    settings: ServiceSettings, table: CallerTable | None, families: Families
) -> Guard | None:
    """The guard a server of ``settings`` runs, or None when it checks no identity
    (``grpc_allow_unauthenticated``). Without a callers file, without mutual TLS and
    without that opt-out, a ``ConfigError`` naming ``grpc_callers_file``: a control
    plane must not start open."""
    prefix = str(settings.model_config.get("env_prefix", ""))
    if settings.grpc_allow_unauthenticated:
        log.warning(
            "gRPC caller checks are OFF (grpc_allow_unauthenticated): anyone who reaches "
            "the port may call every method; for in-process tests only"
        )
        return None
    mtls = settings.grpc_tls_client_ca is not None
    if settings.grpc_callers_file is None and not mtls:
        raise ConfigError(
            "grpc_callers_file: required to serve gRPC (or grpc_tls_client_ca for mutual "
            f"TLS) (env {prefix}GRPC_CALLERS_FILE); grpc_allow_unauthenticated=true turns "
            "caller checks off, for tests only"
        )
    digests = load_callers_file(settings.grpc_callers_file) if settings.grpc_callers_file else {}
    return Guard(Identities(digests, mtls=mtls), table or {}, families)


def caller_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """The metadata a client sends with every call: built once, reused."""
    return ((TOKEN_HEADER, token),)
