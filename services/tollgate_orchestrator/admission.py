"""One request's lifetime, from its concurrency slot to its budget settle, with one close.

Both faces open an ``Admission`` first and close it last, whatever happened in
between: a whole answer, a stream that completed, failed or was abandoned, an
error, a cancellation. ``close`` runs once: the stream's accounting (when one
registered), the budget settle with the cost the request ended with, the in-flight
counters, the tenant's share, the slot.

Slots are taken in two steps: a global one before anything is read (``open``), and
the tenant's share once the key names the tenant (``assign``): no tenant may hold
more than its share of the cap (M-3), so one tenant's slow bodies or endless
streams cannot refuse everyone else.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import anyio

from tollgate_orchestrator.budget import Budgets, Reservation
from tollgate_orchestrator.errors import ERROR_TYPE_SERVER, ApiError
from tollgate_orchestrator.metrics import REJECTION_REASONS, OrchestratorMetrics
from tollgate_orchestrator.retry import RetryBudget

_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")


def request_id(incoming: str | None) -> str:
    """Honour a caller's request id when it is short and plain; else make one."""
    if incoming and len(incoming) <= 128 and set(incoming) <= _ID_CHARS:
        return incoming
    return uuid.uuid4().hex


def _overloaded(message: str, reason: str) -> ApiError:
    return ApiError(
        503,
        message,
        type_=ERROR_TYPE_SERVER,
        code="overloaded",
        headers={"retry-after": "1"},
        reason=reason,
    )


class Slots:
    """The concurrency cap: a counter, refused at once when full, never a queue; and
    each tenant's share of it (``tenant_share`` of ``limit``, at least one slot)."""

    def __init__(self, limit: int, tenant_share: float = 1.0) -> None:
        self.limit = limit
        self.used = 0
        self.tenant_limit = max(1, int(limit * tenant_share))
        self.by_tenant: dict[str, int] = {}

    def acquire(self) -> None:
        if self.used >= self.limit:
            raise _overloaded(
                "The gateway is at its concurrency limit; retry shortly.", "concurrency"
            )
        self.used += 1

    def release(self) -> None:
        self.used -= 1

    def acquire_tenant(self, tenant: str) -> None:
        held = self.by_tenant.get(tenant, 0)
        if held >= self.tenant_limit:
            raise _overloaded(
                "This API key's tenant is at its share of the concurrency limit; retry shortly.",
                "tenant_concurrency",
            )
        self.by_tenant[tenant] = held + 1

    def release_tenant(self, tenant: str) -> None:
        held = self.by_tenant.get(tenant, 0) - 1
        if held > 0:
            self.by_tenant[tenant] = held
        else:
            self.by_tenant.pop(tenant, None)


class Admission:
    """Opened by ``Admissions.open`` with a slot held; ``close`` gives everything back."""

    __slots__ = (
        "_begun",
        "_closed",
        "_finish",
        "_owner",
        "_tenant_held",
        "cost",
        "request_id",
        "reservation",
        "tenant",
    )

    def __init__(self, owner: Admissions, rid: str) -> None:
        self._owner = owner
        self.request_id = rid
        self.tenant = ""
        self.reservation: Reservation | None = None
        self.cost = 0.0  # what the request has cost so far; settled on close
        self._finish: Callable[[], Awaitable[None]] | None = None
        self._begun = False
        self._closed = False
        self._tenant_held = False

    def assign(self, tenant: str) -> None:
        """The key named the tenant: take its share of the cap, or the 503 ``overloaded``
        (reason ``tenant_concurrency``). Released once, in ``close``."""
        self.tenant = tenant
        if not self._tenant_held and not self._closed:
            self._owner.slots.acquire_tenant(tenant)
            self._tenant_held = True

    def begin(self) -> None:
        """The request reaches the pipeline: it counts as in flight, for retries too."""
        if not self._begun:
            self._begun = True
            self._owner.metrics.llm_in_flight.inc()
            self._owner.retry_budget.requests += 1

    def on_close(self, finish: Callable[[], Awaitable[None]]) -> None:
        """A stream's accounting, to run before the settle (it fixes the cost)."""
        self._finish = finish

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        o = self._owner
        # Shielded: a client that vanished must not leave its estimate reserved.
        with anyio.CancelScope(shield=True):
            try:
                if self._finish is not None:
                    await self._finish()
                if self.reservation is not None:
                    await o.budgets.settle(self.reservation, self.cost)
            finally:
                if self._begun:
                    o.metrics.llm_in_flight.dec()
                    o.retry_budget.requests -= 1
                if self._tenant_held:
                    o.slots.release_tenant(self.tenant)
                o.slots.release()


class Admissions:
    """Opens admissions and counts the refused ones, for both faces alike."""

    def __init__(
        self,
        slots: Slots,
        budgets: Budgets,
        retry_budget: RetryBudget,
        metrics: OrchestratorMetrics,
    ) -> None:
        self.slots = slots
        self.budgets = budgets
        self.retry_budget = retry_budget
        self.metrics = metrics

    def open(self, rid: str) -> Admission:
        """A slot, or the 503 ``overloaded`` (counted) when none is free. ``rid`` is the
        request id the face already settled with ``request_id``."""
        try:
            self.slots.acquire()
        except ApiError as err:
            self.rejected(err)
            raise
        return Admission(self, rid)

    def rejected(self, err: ApiError) -> None:
        """Count a request refused before or by the pipeline (not an upstream's answer)."""
        if err.reason in REJECTION_REASONS:
            self.metrics.rejected(err.reason)
