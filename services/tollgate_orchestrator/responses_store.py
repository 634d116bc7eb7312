"""Stored Responses, per tenant: in this process's memory, or in a Redis every replica shares.

A ``Record`` is one stored response: the ``Response`` object as it was returned, the
whole input that turn sent (the previous turn's expanded, item references resolved)
and the catalog model and provider that answered (for affinity). Items are stored as
they went upstream; the ids they are listed and referenced by are kept beside them,
because an input message has no ``id`` field upstream and one we invent must never
be sent there.

Items are found by id through a pointer to the newest record holding them: a later
turn holds every item of the earlier ones, so it is also the one that lives longest.
Deleting that record makes its items unreachable, even from earlier records.

Both stores keep a record for ``ttl_seconds`` from when it was stored, at most
``max_per_tenant`` per tenant (the least recently used go first in memory, the oldest
in Redis), and refuse a record over ``max_bytes`` (counted in ``dropped``). Memory is
also bounded in total bytes: the tenant holding the most gives way first.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import orjson

from tollgate_common.breaker import BreakerConfig, BreakerOpen, CircuitBreaker
from tollgate_common.redis import guarded, make_client
from tollgate_orchestrator.config import OrchestratorSettings

log = logging.getLogger(__name__)

T = TypeVar("T")
PREFIX = "tollgate:responses:"
MAX_ID_CHARS = 256  # a longer id (from a URL or a body) is no id we gave out
MEMORY_MAX_TOTAL_BYTES = 512 * 1024 * 1024
REDIS_TIMEOUT_SECONDS = 1.0  # a record is up to responses_max_bytes: room to move it
STORE_BREAKER = BreakerConfig(
    consecutive_failures=3, failure_ratio=1.0, window_seconds=10, min_requests=10
)
_ID_PREFIX = {"message": "msg", "function_call": "fc", "reasoning": "rs"}
_FORMAT = 1


class StoreUnavailable(Exception):
    """The store did not answer (Redis down, slow, or its breaker open)."""


def new_item_id(item: dict[str, Any]) -> str:
    kind = item.get("type") or ("message" if "role" in item else "item")
    prefix = _ID_PREFIX.get(kind, "item") if isinstance(kind, str) else "item"
    return f"{prefix}_{secrets.token_hex(24)}"


def item_ids(items: list[dict[str, Any]]) -> list[str]:
    """Each item's own id, or a new one where it has none."""
    return [i["id"] if isinstance(i.get("id"), str) and i["id"] else new_item_id(i) for i in items]


@dataclass(frozen=True, slots=True)
class Record:
    id: str
    response: bytes  # the Response object as returned
    output: list[dict[str, Any]]  # its output items
    output_ids: list[str]
    input_items: list[dict[str, Any]]  # everything this turn sent, as it went upstream
    input_ids: list[str]  # the ids they are listed and referenced by
    model: str  # the catalog model that answered ("" when not known)
    provider: str
    created_at: float  # unix seconds

    @classmethod
    def build(
        cls,
        response: bytes,
        input_items: list[dict[str, Any]],
        input_ids: list[str],
        model: str,
        provider: str,
        created_at: float,
    ) -> Record | None:
        """The record of a ``Response`` object; None when ``response`` is not one."""
        try:
            parsed = orjson.loads(response)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(parsed, dict) or parsed.get("object") != "response":
            return None
        rid = parsed.get("id")
        if not isinstance(rid, str) or not rid or len(rid) > MAX_ID_CHARS:
            return None
        raw_output = parsed.get("output")
        output = (
            [o for o in raw_output if isinstance(o, dict)] if isinstance(raw_output, list) else []
        )
        return cls(
            rid,
            response,
            output,
            item_ids(output),
            input_items,
            input_ids,
            model,
            provider,
            created_at,
        )

    def all_ids(self) -> list[str]:
        return [*self.input_ids, *self.output_ids]

    def item(self, item_id: str) -> dict[str, Any] | None:
        """An input or output item by id, as it went (or came) from upstream."""
        for items, ids in ((self.output, self.output_ids), (self.input_items, self.input_ids)):
            for item, i in zip(items, ids, strict=False):
                if i == item_id:
                    return item
        return None

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "v": _FORMAT,
                "response": orjson.Fragment(self.response),
                "output_ids": self.output_ids,
                "input": self.input_items,
                "input_ids": self.input_ids,
                "model": self.model,
                "provider": self.provider,
                "created_at": self.created_at,
            }
        )

    @classmethod
    def decode(cls, raw: bytes) -> Record | None:
        """A stored record; None for one this version cannot read (a miss, never a 500)."""
        try:
            d = orjson.loads(raw)
            if not isinstance(d, dict) or d.get("v") != _FORMAT:
                return None
            resp = d["response"]
            output = resp.get("output") or []
            rec = cls(
                str(resp["id"]),
                orjson.dumps(resp),
                [o for o in output if isinstance(o, dict)],
                [str(i) for i in d["output_ids"]],
                [i for i in d["input"] if isinstance(i, dict)],
                [str(i) for i in d["input_ids"]],
                str(d["model"]),
                str(d["provider"]),
                float(d["created_at"]),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            return None
        return rec


class ResponseStore(Protocol):
    """Records per (tenant, response id), items per (tenant, item id). The Redis store
    raises ``StoreUnavailable`` when Redis does not answer."""

    dropped: Counter[str]  # records not stored, by reason ("oversize")

    async def get(self, tenant: str, response_id: str) -> Record | None: ...

    async def put(self, tenant: str, record: Record) -> bool:
        """False when the record was not stored (over ``max_bytes``)."""

    async def delete(self, tenant: str, response_id: str) -> bool:
        """Whether there was such a record."""

    async def item(self, tenant: str, item_id: str) -> dict[str, Any] | None: ...

    async def close(self) -> None: ...


def _oversize(dropped: Counter[str], size: int, limit: int) -> bool:
    if size <= limit:
        return False
    dropped["oversize"] += 1
    log.warning(
        "stored response not kept: larger than responses_max_bytes",
        extra={"bytes": size, "limit": limit},
    )
    return True


@dataclass(slots=True)
class _Entry:
    blob: bytes
    expires: float
    ids: tuple[str, ...]


class _Tenant:
    __slots__ = ("bytes", "items", "records")

    def __init__(self) -> None:
        self.records: OrderedDict[str, _Entry] = OrderedDict()  # least recently used first
        self.items: dict[str, str] = {}  # item id -> response id
        self.bytes = 0


class MemoryStore:
    """This process's store: lost on restart, not shared between replicas. Records are
    kept encoded, so no caller can change what another reads."""

    def __init__(
        self,
        ttl_seconds: float,
        max_per_tenant: int,
        max_bytes: int,
        max_total_bytes: int = MEMORY_MAX_TOTAL_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl_seconds
        self._cap = max_per_tenant
        self._max_bytes = max_bytes
        self._max_total = max_total_bytes
        self._clock = clock
        self._tenants: dict[str, _Tenant] = {}
        self._total = 0
        self.dropped: Counter[str] = Counter()

    def _remove(self, t: _Tenant, rid: str) -> bool:
        e = t.records.pop(rid, None)
        if e is None:
            return False
        t.bytes -= len(e.blob)
        self._total -= len(e.blob)
        for i in e.ids:
            if t.items.get(i) == rid:
                del t.items[i]
        return True

    def _entry(self, tenant: str, rid: str) -> tuple[_Tenant, _Entry] | None:
        t = self._tenants.get(tenant)
        e = t.records.get(rid) if t is not None else None
        if t is None or e is None:
            return None
        if e.expires <= self._clock():
            self._remove(t, rid)
            return None
        t.records.move_to_end(rid)
        return t, e

    async def get(self, tenant: str, response_id: str) -> Record | None:
        found = self._entry(tenant, response_id)
        return Record.decode(found[1].blob) if found is not None else None

    async def put(self, tenant: str, record: Record) -> bool:
        blob = record.encode()
        if _oversize(self.dropped, len(blob), self._max_bytes):
            return False
        t = self._tenants.setdefault(tenant, _Tenant())
        self._remove(t, record.id)
        now = self._clock()
        while t.records:  # the expired at the front go first
            rid, e = next(iter(t.records.items()))
            if e.expires > now and len(t.records) < self._cap:
                break
            self._remove(t, rid)
        while self._total + len(blob) > self._max_total:
            biggest = max(self._tenants.values(), key=lambda x: x.bytes)
            if not biggest.records:
                break
            self._remove(biggest, next(iter(biggest.records)))
        ids = tuple(record.all_ids())
        t.records[record.id] = _Entry(blob, now + self._ttl, ids)
        t.bytes += len(blob)
        self._total += len(blob)
        for i in ids:
            t.items[i] = record.id
        return True

    async def delete(self, tenant: str, response_id: str) -> bool:
        found = self._entry(tenant, response_id)
        return found is not None and self._remove(found[0], response_id)

    async def item(self, tenant: str, item_id: str) -> dict[str, Any] | None:
        t = self._tenants.get(tenant)
        rid = t.items.get(item_id) if t is not None else None
        if rid is None:
            return None
        rec = await self.get(tenant, rid)
        return rec.item(item_id) if rec is not None else None

    async def close(self) -> None:
        return None


# KEYS: the record, the tenant's index (a sorted set: response id by stored time in ms).
# ARGV: the record, ttl seconds, now ms, cap, response id, the record key prefix, the item
# key prefix, then the record's item ids (each pointed at this record).
_PUT_LUA = """
local ttl = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
redis.call('SET', KEYS[1], ARGV[1], 'EX', ttl)
redis.call('ZADD', KEYS[2], now, ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - ttl * 1000)
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4])
if over > 0 then
  local old = redis.call('ZPOPMIN', KEYS[2], over)
  for i = 1, #old, 2 do
    redis.call('UNLINK', ARGV[6] .. old[i])
  end
end
redis.call('EXPIRE', KEYS[2], ttl)
for i = 8, #ARGV do
  redis.call('SET', ARGV[7] .. ARGV[i], ARGV[5], 'EX', ttl)
end
return 1
"""


def tenant_prefix(tenant: str) -> str:
    """Where a tenant's keys live: the tenant hashed (no name in Redis), as a hash tag so
    that one tenant's keys share a Redis Cluster slot."""
    digest = hashlib.sha256(tenant.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return f"{PREFIX}{{{digest}}}:"


class RedisStore:
    """Records in Redis, shared by every replica: SET with EX, a per-tenant index that
    enforces the cap, and one pointer key per item. Bounded time per call, no retries,
    behind a breaker (``tollgate_common.redis``)."""

    def __init__(
        self,
        url: str,
        ttl_seconds: int,
        max_per_tenant: int,
        max_bytes: int,
        timeout: float = REDIS_TIMEOUT_SECONDS,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self._redis = make_client(url, timeout)
        self._timeout = timeout
        self._breaker = breaker or CircuitBreaker(STORE_BREAKER)
        self._ttl = ttl_seconds
        self._cap = max_per_tenant
        self._max_bytes = max_bytes
        self._put = self._redis.register_script(_PUT_LUA)
        self.dropped: Counter[str] = Counter()

    async def _call(self, fn: Callable[[], Awaitable[T]]) -> T:
        try:
            return await guarded(self._breaker, self._timeout * 2, fn)
        except BreakerOpen:
            raise StoreUnavailable("responses store circuit open") from None
        except Exception as exc:
            raise StoreUnavailable(type(exc).__name__) from exc

    async def _record(self, tenant: str, response_id: str) -> Record | None:
        if not response_id or len(response_id) > MAX_ID_CHARS:
            return None
        key = tenant_prefix(tenant) + "r:" + response_id
        raw: Any = await self._call(lambda: self._redis.get(key))
        return Record.decode(bytes(raw)) if raw is not None else None

    async def get(self, tenant: str, response_id: str) -> Record | None:
        return await self._record(tenant, response_id)

    async def put(self, tenant: str, record: Record) -> bool:
        blob = record.encode()
        if _oversize(self.dropped, len(blob), self._max_bytes):
            return False
        p = tenant_prefix(tenant)
        ids = [i for i in record.all_ids() if len(i) <= MAX_ID_CHARS]
        args: list[bytes | str | int] = [
            blob,
            self._ttl,
            int(time.time() * 1000),
            self._cap,
            record.id,
            p + "r:",
            p + "i:",
            *ids,
        ]
        keys = [p + "r:" + record.id, p + "index"]
        await self._call(lambda: self._put(keys=keys, args=args))
        return True

    async def delete(self, tenant: str, response_id: str) -> bool:
        if not response_id or len(response_id) > MAX_ID_CHARS:
            return False
        p = tenant_prefix(tenant)

        async def run() -> int:
            pipe = self._redis.pipeline(transaction=True)
            pipe.unlink(p + "r:" + response_id)
            pipe.zrem(p + "index", response_id)
            removed, _ = await pipe.execute()
            return int(removed)

        return bool(await self._call(run))

    async def item(self, tenant: str, item_id: str) -> dict[str, Any] | None:
        if not item_id or len(item_id) > MAX_ID_CHARS:
            return None
        key = tenant_prefix(tenant) + "i:" + item_id
        rid: Any = await self._call(lambda: self._redis.get(key))
        if rid is None:
            return None
        rec = await self._record(tenant, bytes(rid).decode("utf-8", "replace"))
        return rec.item(item_id) if rec is not None else None

    async def close(self) -> None:
        await self._redis.aclose()


def open_store(settings: OrchestratorSettings) -> ResponseStore:
    s = settings
    if s.responses_redis_url is not None:
        return RedisStore(
            s.responses_redis_url.get_secret_value(),
            s.responses_ttl_seconds,
            s.responses_max_per_tenant,
            s.responses_max_bytes,
        )
    return MemoryStore(s.responses_ttl_seconds, s.responses_max_per_tenant, s.responses_max_bytes)
