"""What the HTTP and gRPC faces share: the engine, keys, limits, the concurrency cap,
and the state that readiness reports."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from tollgate_common.policy import Policy
from tollgate_orchestrator.auth import KeyRing
from tollgate_orchestrator.config import OrchestratorSettings
from tollgate_orchestrator.engine import Engine
from tollgate_orchestrator.errors import SERVER, ApiError
from tollgate_orchestrator.metrics import OrchestratorMetrics
from tollgate_orchestrator.validation import Limits

_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")


def request_id(incoming: str | None) -> str:
    """Honour a caller's request id when it is short and plain; else make one."""
    if incoming and len(incoming) <= 128 and set(incoming) <= _ID_CHARS:
        return incoming
    return uuid.uuid4().hex


class Slots:
    """The concurrency cap: a counter, refused at once when full, never a queue."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def acquire(self) -> None:
        if self.used >= self.limit:
            raise ApiError(
                503,
                "The gateway is at its concurrency limit; retry shortly.",
                type_=SERVER,
                code="overloaded",
                headers={"retry-after": "1"},
                reason="concurrency",
            )
        self.used += 1

    def release(self) -> None:
        self.used -= 1


@dataclass
class Gateway:
    settings: OrchestratorSettings
    policy: Policy
    engine: Engine
    keys: KeyRing
    metrics: OrchestratorMetrics
    limits: Limits
    slots: Slots
    ready: bool = False
    draining: bool = False
    dependencies: dict[str, bool] = field(default_factory=dict)

    def readiness(self) -> tuple[bool, dict[str, object]]:
        ok = self.ready and not self.draining
        status = "draining" if self.draining else ("ready" if ok else "starting")
        deps = {k: ("up" if v else "down") for k, v in sorted(self.dependencies.items())}
        # A dependency that is down degrades requests, it does not fail them: still ready.
        return ok, {"status": status, "dependencies": deps}
