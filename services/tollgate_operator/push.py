"""gRPC pushes to every router and orchestrator replica, each call with a deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from tollgate.orchestrator.v1 import orchestrator_pb2, orchestrator_pb2_grpc
from tollgate.router.v1 import router_pb2, router_pb2_grpc
from tollgate_common.grpc.auth import read_token_file
from tollgate_common.grpc.channel import make_channel
from tollgate_common.metrics import Families


@dataclass(frozen=True)
class PushResult:
    address: str
    code: str  # a grpc.StatusCode name; "OK" on success
    message: str = ""
    changed: bool = False
    version: str = ""

    @property
    def ok(self) -> bool:
        return self.code == "OK"

    @property
    def rejected(self) -> bool:
        return self.code == "INVALID_ARGUMENT"


def summarize(results: Sequence[PushResult]) -> str:
    """One line for a status message: counts, then the first failure with its address."""
    ok = sum(r.ok for r in results)
    text = f"{ok}/{len(results)} replicas updated"
    failed = [r for r in results if not r.ok]
    if failed:
        text += f"; {failed[0].address}: {failed[0].code} {failed[0].message}".rstrip()
    return text


class Pusher:
    """One channel per replica address, kept while the address is discovered.

    Every call carries the operator's caller token (``token_file``, read and checked
    here, at start) and, with ``tls_ca``, goes over TLS (mutual with a client
    certificate and key)."""

    def __init__(
        self,
        families: Families,
        timeout: float,
        *,
        token_file: Path | None = None,
        tls_ca: Path | None = None,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        tls_server_names: dict[str, str] | None = None,
    ) -> None:
        self._families = families
        # Pushes go to pod IPs; with TLS the certificate names the Service instead.
        self._server_names = tls_server_names or {}
        self._timeout = timeout
        if token_file is not None:
            read_token_file(token_file)  # a ConfigError now, not a failed push later
        self._peer: dict[str, Path | None] = {
            "token_file": token_file,
            "tls_ca": tls_ca,
            "tls_cert": tls_cert,
            "tls_key": tls_key,
        }
        self._channels: dict[str, dict[str, grpc.aio.Channel]] = {
            "router": {},
            "orchestrator": {},
        }
        pushes = families.counter("tollgate_operator_pushes_total")
        self._count = {
            (t, r): pushes.labels(target=t, result=r)
            for t in ("router", "orchestrator")
            for r in ("ok", "changed", "unchanged", "rejected", "error")
        }

    def _channel(self, target: str, address: str) -> grpc.aio.Channel:
        pool = self._channels[target]
        ch = pool.get(address)
        if ch is None:
            ch = pool[address] = make_channel(
                address,
                default_timeout=self._timeout,
                families=self._families,
                tls_server_name=self._server_names.get(target),
                **self._peer,
            )
        return ch

    async def forget_except(self, target: str, keep: Iterable[str]) -> None:
        """Close the channels of replicas that are gone."""
        pool, keep = self._channels[target], set(keep)
        for addr in [a for a in pool if a not in keep]:
            await pool.pop(addr).close()

    async def close(self) -> None:
        for target in self._channels:
            await self.forget_except(target, ())

    async def push_policy(
        self, addresses: Sequence[str], policy_yaml: str, source: str
    ) -> list[PushResult]:
        request = router_pb2.UpdatePolicyRequest(policy_yaml=policy_yaml, source=source)

        async def call(address: str, ch: grpc.aio.Channel) -> PushResult:
            resp = await router_pb2_grpc.RouterStub(ch).UpdatePolicy(request, timeout=self._timeout)
            return PushResult(address, "OK", changed=resp.changed, version=resp.version)

        return await self._gather("router", addresses, call)

    async def push_budgets(
        self,
        addresses: Sequence[str],
        budgets: Sequence[dict[str, Any]],
        removed: Sequence[tuple[str, str]] = (),
    ) -> list[PushResult]:
        request = orchestrator_pb2.UpdateBudgetsRequest(
            budgets=[orchestrator_pb2.Budget(**b) for b in budgets],
            removed=[orchestrator_pb2.BudgetRef(tenant=t, period=p) for t, p in removed],
        )

        async def call(address: str, ch: grpc.aio.Channel) -> PushResult:
            await orchestrator_pb2_grpc.OrchestratorStub(ch).UpdateBudgets(
                request, timeout=self._timeout
            )
            return PushResult(address, "OK")

        return await self._gather("orchestrator", addresses, call)

    async def _gather(
        self,
        target: str,
        addresses: Sequence[str],
        call: Callable[[str, grpc.aio.Channel], Awaitable[PushResult]],
    ) -> list[PushResult]:
        async def one(address: str) -> PushResult:
            try:
                result = await call(address, self._channel(target, address))
            except grpc.aio.AioRpcError as exc:
                result = PushResult(address, exc.code().name, exc.details() or "")
            self._count[(target, _outcome(target, result))].inc()
            return result

        return list(await asyncio.gather(*(one(a) for a in addresses)))


def _outcome(target: str, result: PushResult) -> str:
    if result.rejected:
        return "rejected"
    if not result.ok:
        return "error"
    if target == "orchestrator":  # UpdateBudgets replaces by key and has no change flag
        return "ok"
    return "changed" if result.changed else "unchanged"
