"""Budgets per tenant and period: reserve an estimate before the call, settle after it.

Counters hold integer nano-dollars (exact sums, no float drift). A request is
admitted while the counter is below the limit, and its estimate is added at once,
so concurrent requests overshoot by at most one request's estimate. Over a limit
the budget's action applies: ``reject`` (429 insufficient_quota) or ``downgrade``
(the router's cheapest tier). With Redis the check-and-add is one Lua script, so
replicas share counters atomically; Redis is called with short timeouts, no
retries, and behind a breaker. That Redis is the budgets' own (``budget_redis_url``),
never the cache's, and must not evict: a counter evicted is spend reset to $0, so a
Redis whose ``maxmemory-policy`` is anything but ``noeviction`` is refused at start
(``eviction_problem``). Without Redis the counters are per replica (``MemoryCounters``).

When the store cannot answer (down, slow, or answering errors such as OOM when full),
the stated ``budget_unchecked_policy`` applies, counted either way as
``action="unchecked"``: ``refuse`` (the default: fail closed, 429 with
``x-should-retry: false``) or ``allow`` (admitted uncounted).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol, TypeVar

from redis.exceptions import RedisError, ResponseError

from tollgate_common.breaker import BreakerOpen, CircuitBreaker
from tollgate_common.budgets import to_nano
from tollgate_common.redis import guarded, make_client
from tollgate_orchestrator.config import BudgetSpec
from tollgate_orchestrator.errors import ApiError

log = logging.getLogger(__name__)

T = TypeVar("T")
_TTL = {"day": 2 * 86_400, "month": 32 * 86_400}  # a counter outlives its period a little
_ADJECTIVE = {"day": "daily", "month": "monthly"}
# Budget counters carry a TTL, so volatile-* policies evict them as readily as allkeys-*:
# only a Redis that refuses writes when full keeps them (and a refused write fails closed).
SAFE_EVICTION_POLICY = "noeviction"


def eviction_problem(policy: str | None) -> str | None:
    """Why a budget Redis with this ``maxmemory-policy`` cannot keep budgets, or None."""
    if policy is None or policy == SAFE_EVICTION_POLICY:
        return None
    return (
        f"budget_redis_url: the budget Redis has maxmemory-policy {policy}, so it may evict "
        "budget counters (spend would reset to $0); give budgets their own Redis with "
        f"maxmemory-policy {SAFE_EVICTION_POLICY}"
    )


class _Throttled:
    """Logs a warning at most once per ``every`` seconds: a dead store must not flood logs."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self._last: dict[str, float] = {}

    def warning(self, msg: str) -> None:
        now = time.monotonic()
        if now - self._last.get(msg, -self.every) >= self.every:
            self._last[msg] = now
            log.warning(msg)


_warn = _Throttled()


def period_key(period: str, now: datetime) -> str:
    return now.strftime("%Y-%m-%d") if period == "day" else now.strftime("%Y-%m")


def counter_key(spec: BudgetSpec, now: datetime) -> str:
    # The hash tag keeps one tenant's counters in one Redis Cluster slot.
    return f"tollgate:budget:{{{spec.tenant}}}:{spec.period}:{period_key(spec.period, now)}"


def decide(specs: Sequence[BudgetSpec], spent: Sequence[int]) -> tuple[int | None, bool]:
    """(index of the rejecting budget or None, downgrade?) given counters in nano-dollars."""
    downgrade = False
    for i, (spec, value) in enumerate(zip(specs, spent, strict=True)):
        if value >= to_nano(spec.limit_usd):
            if spec.action == "reject":
                return i, False
            downgrade = True
    return None, downgrade


class StoreUnavailable(Exception):
    """The budget store did not answer in time."""


class BudgetStore(Protocol):
    async def reserve(
        self, keys: Sequence[str], specs: Sequence[BudgetSpec], amount: int
    ) -> tuple[bool, list[int]]:
        """Atomically: if no reject budget is at its limit, add ``amount`` to every key.
        Returns (admitted, the counters before)."""
        ...

    async def adjust(self, keys: Sequence[str], delta: int) -> list[int]:
        """Add ``delta`` to every key; returns the new values."""
        ...

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...


class MemoryCounters:
    """Counters in this process: exact for one replica, per replica with several (each
    replica admits up to the limit) and reset on restart. Atomic because nothing awaits."""

    def __init__(self) -> None:
        self.values: dict[str, int] = {}

    async def reserve(
        self, keys: Sequence[str], specs: Sequence[BudgetSpec], amount: int
    ) -> tuple[bool, list[int]]:
        before = [self.values.get(k, 0) for k in keys]
        rejected, _ = decide(specs, before)
        if rejected is not None:
            return False, before
        for k in keys:
            if k not in self.values:
                self._forget_old(k)
            self.values[k] = self.values.get(k, 0) + amount
        return True, before

    def _forget_old(self, key: str) -> None:
        prefix = key.rsplit(":", 1)[0] + ":"
        for old in [k for k in self.values if k.startswith(prefix)]:
            del self.values[old]

    async def adjust(self, keys: Sequence[str], delta: int) -> list[int]:
        out = []
        for k in keys:
            if k in self.values:  # a counter of a past period may be gone; nothing to settle
                self.values[k] += delta
            out.append(self.values.get(k, 0))
        return out

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        return None


# KEYS: the counters. ARGV[1]: amount; then, per key: limit, reject (1|0), ttl seconds.
_RESERVE_LUA = """
local before = {}
for i = 1, #KEYS do
  before[i] = tonumber(redis.call('GET', KEYS[i]) or '0')
end
for i = 1, #KEYS do
  local b = 2 + (i - 1) * 3
  if ARGV[b + 1] == '1' and before[i] >= tonumber(ARGV[b]) then
    table.insert(before, 1, 0)
    return before
  end
end
for i = 1, #KEYS do
  local b = 2 + (i - 1) * 3
  redis.call('INCRBY', KEYS[i], ARGV[1])
  redis.call('EXPIRE', KEYS[i], ARGV[b + 2], 'NX')
end
table.insert(before, 1, 1)
return before
"""


class RedisCounters:
    """Counters in Redis, shared by every replica; bounded time per call, no retries."""

    def __init__(self, url: str, timeout: float, breaker: CircuitBreaker) -> None:
        self._redis = make_client(url, timeout)
        self._timeout = timeout
        self._breaker = breaker
        self._script = self._redis.register_script(_RESERVE_LUA)
        # Set (to the reason) while Redis' eviction policy makes it unfit to keep budgets.
        self.refused: str | None = None

    async def _call(self, fn: Callable[[], Awaitable[T]]) -> T:
        # Any error counts against the breaker: a store that answers with errors (a full
        # Redis refusing writes) cannot keep budgets either.
        if self.refused is not None:
            raise StoreUnavailable("budget store may evict counters")
        try:
            return await guarded(
                self._breaker, self._timeout * 2, fn, failure=(Exception,), success=()
            )
        except BreakerOpen:
            raise StoreUnavailable("budget store circuit open") from None
        except Exception as exc:
            raise StoreUnavailable(type(exc).__name__) from exc

    async def reserve(
        self, keys: Sequence[str], specs: Sequence[BudgetSpec], amount: int
    ) -> tuple[bool, list[int]]:
        args: list[int | str] = [amount]
        for spec in specs:
            args += [to_nano(spec.limit_usd), "1" if spec.action == "reject" else "0"]
            args.append(_TTL[spec.period])
        result: list[int] = await self._call(lambda: self._script(keys=list(keys), args=args))
        return bool(result[0]), [int(v) for v in result[1:]]

    async def adjust(self, keys: Sequence[str], delta: int) -> list[int]:
        async def run() -> list[int]:
            pipe = self._redis.pipeline(transaction=False)
            for k in keys:
                pipe.incrby(k, delta)
            return [int(v) for v in await pipe.execute()]

        return await self._call(run)

    async def ping(self) -> bool:
        try:
            await self._call(self._ping)
        except StoreUnavailable:
            return False
        return True

    async def _ping(self) -> bool:
        return bool(await self._redis.ping())

    async def eviction_policy(self) -> str | None:
        """Redis' ``maxmemory-policy``; None when CONFIG GET is refused (managed Redis often
        disables or renames it). Raises ``StoreUnavailable`` when Redis does not answer."""
        try:
            async with asyncio.timeout(self._timeout * 2):
                reply = await self._redis.config_get("maxmemory-policy")
        except ResponseError:
            return None
        except (RedisError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(type(exc).__name__) from exc
        for key, value in dict(reply or {}).items():
            name = key.decode() if isinstance(key, bytes) else str(key)
            if name == "maxmemory-policy":
                return value.decode() if isinstance(value, bytes) else str(value)
        return None

    async def close(self) -> None:
        await self._redis.aclose()


@dataclass(slots=True)
class Reservation:
    tenant: str
    specs: tuple[BudgetSpec, ...] = ()
    keys: tuple[str, ...] = ()
    amount: int = 0  # nano-dollars reserved
    downgrade: bool = False
    settled: bool = field(default=False)

    @property
    def empty(self) -> bool:
        return not self.keys


class BudgetHooks(Protocol):
    def reset(self) -> None: ...

    def limit(self, spec: BudgetSpec) -> None: ...

    def values(self, spec: BudgetSpec, spent_nano: int) -> None: ...

    def action(self, spec: BudgetSpec, action: str) -> None: ...


class Budgets:
    """The budgets in force and their enforcement against a store."""

    def __init__(
        self,
        specs: Iterable[BudgetSpec],
        store: BudgetStore,
        unchecked_policy: str,
        hooks: BudgetHooks | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.unchecked_policy = unchecked_policy
        self._hooks = hooks
        self._clock = clock
        self._by_tenant: dict[str, tuple[BudgetSpec, ...]] = {}
        self.replace(specs)

    @property
    def specs(self) -> list[BudgetSpec]:
        return [s for specs in self._by_tenant.values() for s in specs]

    def replace(self, specs: Iterable[BudgetSpec]) -> None:
        by: dict[str, list[BudgetSpec]] = {}
        for s in specs:
            by.setdefault(s.tenant, []).append(s)
        self._by_tenant = {t: tuple(v) for t, v in by.items()}
        if self._hooks is not None:
            self._hooks.reset()
            for s in self.specs:
                self._hooks.limit(s)

    def update(self, added: Iterable[BudgetSpec], removed: Iterable[tuple[str, str]]) -> int:
        """Add or replace budgets by (tenant, period), drop the removed ones."""
        current: dict[tuple[str, str], BudgetSpec] = {(s.tenant, s.period): s for s in self.specs}
        n = 0
        for ref in removed:
            if current.pop(ref, None) is not None:
                n += 1
        for s in added:
            current[(s.tenant, s.period)] = s
            n += 1
        self.replace(current.values())
        return n

    def for_tenant(self, tenant: str) -> tuple[BudgetSpec, ...]:
        return self._by_tenant.get(tenant, ())

    async def reserve(self, tenant: str, estimate_usd: float) -> Reservation:
        """Admit or refuse one request; raises ``ApiError`` 429 (over budget, or unchecked
        under the ``refuse`` policy)."""
        specs = self._by_tenant.get(tenant)
        if not specs:
            return Reservation(tenant)
        now = self._clock()
        keys = tuple(counter_key(s, now) for s in specs)
        amount = max(0, to_nano(estimate_usd))
        try:
            admitted, before = await self.store.reserve(keys, specs, amount)
        except StoreUnavailable:
            return self._unchecked(tenant, specs)
        rejected, downgrade = decide(specs, before)
        if not admitted or rejected is not None:
            spec = specs[rejected if rejected is not None else 0]
            self._emit(specs, before)
            if self._hooks is not None:
                self._hooks.action(spec, "reject")
            raise ApiError(
                429,
                f"You exceeded your {_ADJECTIVE[spec.period]} budget of ${spec.limit_usd:g}.",
                type_="insufficient_quota",
                code="insufficient_quota",
                headers={"x-should-retry": "false"},
                reason="budget",
            )
        self._emit(specs, [v + amount for v in before])
        if downgrade and self._hooks is not None:
            for s, v in zip(specs, before, strict=True):
                if s.action == "downgrade" and v >= to_nano(s.limit_usd):
                    self._hooks.action(s, "downgrade")
        return Reservation(tenant, specs, keys, amount, downgrade)

    def _unchecked(self, tenant: str, specs: tuple[BudgetSpec, ...]) -> Reservation:
        if self._hooks is not None:
            for s in specs:
                self._hooks.action(s, "unchecked")
        if self.unchecked_policy == "refuse":
            # Fail closed, and as a quota refusal: an SDK that retried a 5xx would only
            # add load to a store that is already failing.
            raise ApiError(
                429,
                "Your budget cannot be checked right now (the budget store is unavailable), "
                "so the request is refused.",
                type_="insufficient_quota",
                code="budget_unavailable",
                headers={"x-should-retry": "false"},
                reason="budget",
            )
        _warn.warning("budget store unreachable: requests allowed unchecked")
        return Reservation(tenant)

    async def settle(self, res: Reservation, actual_usd: float) -> None:
        """Replace the reserved estimate with what the request really cost."""
        if res.empty or res.settled:
            return
        res.settled = True
        delta = max(0, to_nano(actual_usd)) - res.amount
        try:
            after = await self.store.adjust(res.keys, delta)
        except StoreUnavailable:
            _warn.warning("budget store unreachable: settle skipped")
            return
        self._emit(res.specs, after)

    def _emit(self, specs: Sequence[BudgetSpec], values: Sequence[int]) -> None:
        if self._hooks is None:
            return
        for s, v in zip(specs, values, strict=True):
            self._hooks.values(s, v)
