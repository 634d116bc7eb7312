"""The orchestrator's composition root: build everything from the settings, then run HTTP
and gRPC in one process and one event loop.

One uvicorn worker per process, on purpose: a pod runs one process and scales with
replicas. Several workers would each hold their own registry (scrapes would
undercount and gauges flip-flop), and prometheus_client's multiprocess mode cannot
run the process collectors or remove label sets. Budget counters that must be
shared across replicas live in the budgets' own Redis (``budget_redis_url``), checked
at start for a non-evicting ``maxmemory-policy``; without it they are per replica,
and ``/readyz`` says so (``"budget_store": "per-replica"``).

SIGTERM: the shared sequence of ``tollgate_common.service.shutdown``. Readiness goes
false and gRPC health NOT_SERVING at once; after ``drain_seconds`` (time for endpoints
to be removed) both servers stop taking new work, and in-flight requests and streams
get ``grace_seconds`` to finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Generator

import grpc
import uvicorn
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from tollgate.cache.v1 import cache_pb2_grpc
from tollgate.orchestrator.v1 import orchestrator_pb2_grpc
from tollgate.router.v1 import router_pb2_grpc
from tollgate_common.breaker import BreakerConfig, CircuitBreaker
from tollgate_common.config import ConfigError
from tollgate_common.grpc.channel import make_channel
from tollgate_common.grpc.server import GrpcServer, start_grpc_server
from tollgate_common.metrics import Families, create_families
from tollgate_common.metrics.exposition import start_metrics_server
from tollgate_common.policy import load_policy
from tollgate_common.service import shutdown, uvicorn_config, wait_for_signal
from tollgate_orchestrator.accounting import Accounting
from tollgate_orchestrator.admission import Admissions, Slots
from tollgate_orchestrator.auth import KeyRing
from tollgate_orchestrator.budget import (
    Budgets,
    BudgetStore,
    MemoryCounters,
    RedisCounters,
    StoreUnavailable,
    eviction_problem,
)
from tollgate_orchestrator.catalog import Catalog
from tollgate_orchestrator.clients import CacheClient, RouterClient
from tollgate_orchestrator.config import OrchestratorSettings, load_keys
from tollgate_orchestrator.dialects import Session
from tollgate_orchestrator.edge import EdgeLimits, edge_protocol
from tollgate_orchestrator.fallback import Attempts
from tollgate_orchestrator.http_api import build_app, routes
from tollgate_orchestrator.integrity import Signer
from tollgate_orchestrator.metrics import OrchestratorMetrics
from tollgate_orchestrator.pipeline import Pipeline
from tollgate_orchestrator.providers.dispatch import Dispatch
from tollgate_orchestrator.providers.openai import Bounds, Upstreams
from tollgate_orchestrator.responses_session import RESPONSES_PATH, ResponsesSession
from tollgate_orchestrator.responses_store import open_store
from tollgate_orchestrator.service import CALLERS, SERVICE_NAME, OrchestratorService
from tollgate_orchestrator.validation import Limits

log = logging.getLogger("tollgate.orchestrator")

# Dependency breakers: a dead router or cache costs one short timeout now and then,
# not one per request.
DEPENDENCY_BREAKER = BreakerConfig(
    consecutive_failures=3,
    failure_ratio=1.0,
    window_seconds=10,
    min_requests=10,
    cooldown_seconds=2.0,
)


def cache_signer(s: OrchestratorSettings) -> Signer | None:
    """The shared cache signing key, or None for a random one per process."""
    if s.cache_signing_key_file is None:
        return None
    try:
        secret = s.cache_signing_key_file.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"cache_signing_key_file: cannot read: {exc.strerror}") from None
    if len(secret) < 32:
        raise ConfigError("cache_signing_key_file: the key must be at least 32 bytes")
    return Signer(secret)


class Gateway:
    """Everything built from the settings, what the faces share, and the state readiness
    reports; closed in reverse on the way out."""

    def __init__(self, settings: OrchestratorSettings, registry: CollectorRegistry | None) -> None:
        self.settings = s = settings
        self.catalog = Catalog(load_policy(s.policy_file))
        digests, self.dev_key = load_keys(s)
        self.keys = KeyRing(digests)
        self.limits = Limits(s.max_messages, s.max_tokens_cap, s.max_n)
        self.families: Families = create_families("orchestrator", registry)
        policy = self.catalog.policy
        self.metrics = m = OrchestratorMetrics(
            self.families,
            models={name: e.provider for name, e in policy.models.items()},
            tenants=sorted(set(digests.values())),
            routes=routes(),
            budget_store=s.budget_redis_url is not None,
        )
        self.catalog.subscribe(m.follow)

        def channel(addr: str, timeout: float) -> grpc.aio.Channel:
            return make_channel(
                addr,
                default_timeout=timeout,
                families=self.families,
                tls_ca=s.peer_tls_ca,
                tls_cert=s.peer_tls_cert,
                tls_key=s.peer_tls_key,
                token_file=s.grpc_token_file,  # this orchestrator's caller token (H-1, H-2)
            )

        self.router_channel = channel(s.router_addr, s.router_timeout_seconds)
        self.cache_channel = channel(s.cache_addr, s.cache_timeout_seconds)
        self.router = RouterClient(
            router_pb2_grpc.RouterStub(self.router_channel),
            self.catalog,
            s.router_timeout_seconds,
            CircuitBreaker(DEPENDENCY_BREAKER),
            m,
        )
        cache = CacheClient(
            cache_pb2_grpc.CacheStub(self.cache_channel),
            s.cache_timeout_seconds,
            CircuitBreaker(DEPENDENCY_BREAKER),
            m,
            signer=cache_signer(s),
        )
        self.redis_counters = (
            RedisCounters(
                s.budget_redis_url.get_secret_value(),
                s.budget_redis_timeout_seconds,
                CircuitBreaker(DEPENDENCY_BREAKER),
            )
            if s.budget_redis_url is not None
            else None
        )
        self.store: BudgetStore = self.redis_counters or MemoryCounters()
        self._policy_unreadable_warned = False
        self.budgets = Budgets(s.budgets, self.store, s.budget_unchecked_policy, m)
        self.upstreams = Upstreams(
            policy,
            base_url=s.upstream_base_url,
            base_url_key=s.upstream_api_key.get_secret_value() if s.upstream_api_key else "",
            insecure_hosts=s.upstream_insecure_hosts,
            connect_timeout=s.upstream_connect_timeout_seconds,
            read_timeout=s.upstream_timeout_seconds,
            bounds=Bounds(
                max_body_bytes=s.upstream_max_body_bytes,
                max_line_bytes=s.sse_max_line_bytes,
                stream_max_seconds=s.stream_max_seconds,
                stream_idle_seconds=s.stream_idle_seconds,
            ),
        )
        # Providers without a key: the router skips their models (built once, here).
        self.router.set_unavailable(self.upstreams.unavailable())
        attempts = Attempts(s, m, provider_type=self.catalog.provider_type)
        slots = Slots(s.max_concurrency, s.tenant_concurrency_share)
        self.admissions = Admissions(slots, self.budgets, attempts.budget, m)
        self.pipeline = Pipeline(
            settings=s,
            catalog=self.catalog,
            router=self.router,
            cache=cache,
            upstreams=Dispatch(self.upstreams),
            budgets=self.budgets,
            attempts=attempts,
            accounting=Accounting(m),
        )
        # A dialect's state around the pipeline, by its path (the Responses store).
        self.sessions: dict[str, Session] = {}
        self.responses = ResponsesSession(
            open_store(s), self.catalog, on_drop=lambda reason: m.responses_dropped(reason).inc()
        )
        self.sessions[RESPONSES_PATH] = self.responses
        self.ready = False
        self.draining = False
        self.dependencies = {"router": True, "cache": True}
        if s.budget_redis_url is not None:
            self.dependencies["budget_store"] = True

    def readiness(self) -> tuple[bool, dict[str, object]]:
        ok = self.ready and not self.draining
        status = "draining" if self.draining else ("ready" if ok else "starting")
        deps = {k: ("up" if v else "down") for k, v in sorted(self.dependencies.items())}
        # A dependency that is down degrades requests, it does not fail them: still ready.
        # Without a budget Redis each replica counts alone: said here, loudly (M-2).
        store = "redis" if self.redis_counters is not None else "per-replica"
        return ok, {"status": status, "dependencies": deps, "budget_store": store}

    async def check_budget_store(self, at_start: bool) -> None:
        """The budget Redis must not evict (H-6). At start an evicting one stops the process
        (``ConfigError``): a configuration mistake with no safe way to serve. Found later (it
        was unreachable at start, or CONFIG SET changed it), the store is refused: budget
        checks fail (closed by default) and ``/readyz`` shows it down, until it is fixed.
        A policy that cannot be read (CONFIG disabled, as on some managed Redis) is a warning."""
        rc = self.redis_counters
        if rc is None:
            return
        try:
            policy = await rc.eviction_policy()
        except StoreUnavailable:
            return  # the probe asks again once Redis answers
        if policy is None:
            if not self._policy_unreadable_warned:
                self._policy_unreadable_warned = True
                log.warning(
                    "budget_redis_url: cannot read maxmemory-policy (CONFIG GET refused); make "
                    "sure the budget Redis runs with noeviction, or evicted counters reset spend"
                )
            rc.refused = None
            return
        problem = eviction_problem(policy)
        if problem is not None and at_start:
            raise ConfigError(problem)
        if problem is not None and rc.refused is None:
            log.error("%s; budget checks fail until it is fixed", problem)
        rc.refused = problem

    async def close(self) -> None:
        await self.pipeline.drain_background(1.0)
        await self.upstreams.close()
        await self.responses.close()
        await self.store.close()
        await self.router_channel.close()
        await self.cache_channel.close()


async def _grpc_up(channel: grpc.aio.Channel, seconds: float) -> bool:
    try:
        resp = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=seconds
        )
    except grpc.aio.AioRpcError:
        return False
    return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)


async def probe_dependencies(gw: Gateway, interval: float) -> None:
    """Keep readiness details and ``tollgate_dependency_up`` current between requests,
    and the followed policy current while no request brings a newer version."""
    s, m = gw.settings, gw.metrics
    while True:
        await gw.check_budget_store(at_start=False)  # a policy changed at runtime refuses
        results = await asyncio.gather(
            _grpc_up(gw.router_channel, max(s.router_timeout_seconds, 0.5)),
            _grpc_up(gw.cache_channel, max(s.cache_timeout_seconds, 0.5)),
            gw.store.ping(),
        )
        for name, up in zip(("router", "cache", "budget_store"), results, strict=True):
            if name in gw.dependencies:
                gw.dependencies[name] = up
                m.set_up(name, up)
        if results[0]:
            await gw.router.refresh()
        await asyncio.sleep(interval)


def edge_limits(s: OrchestratorSettings) -> EdgeLimits:
    return EdgeLimits(
        max_url_bytes=s.max_url_bytes,
        max_header_bytes=s.max_header_bytes,
        max_header_count=s.max_header_count,
        header_timeout=s.header_timeout_seconds,
        body_timeout=s.body_timeout_seconds,
    )


class _Uvicorn(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # Signals are ours: readiness and gRPC health must flip before uvicorn stops.
        yield


async def serve(settings: OrchestratorSettings) -> int:
    gw = Gateway(settings, None)
    try:
        await gw.check_budget_store(at_start=True)
    except ConfigError:
        await gw.close()
        raise
    if gw.redis_counters is None and gw.budgets.specs:
        log.warning(
            "no budget_redis_url: budget counters are per replica (each replica admits up to "
            "the limit) and reset on restart; give budgets a Redis when running several"
        )
    if gw.dev_key:
        log.warning(
            "no API keys configured: using the dev key for tenant 'dev'; for local use only"
        )

    def register(server: grpc.aio.Server) -> list[str]:
        orchestrator_pb2_grpc.add_OrchestratorServicer_to_server(OrchestratorService(gw), server)
        return [SERVICE_NAME]

    # Bind HTTP first and ourselves: a taken port is one clear error, before anything runs.
    try:
        sock = socket.create_server((settings.host, settings.http_port), backlog=4096)
    except OSError as exc:
        await gw.close()
        raise OSError(f"HTTP {settings.host}:{settings.http_port}: {exc.strerror}") from None
    try:
        grpc_server: GrpcServer = await start_grpc_server(
            settings=settings,
            port=settings.grpc_port,
            families=gw.families,
            register=register,
            callers=CALLERS,
        )
    except (OSError, RuntimeError) as exc:  # grpc reports a taken port as RuntimeError
        sock.close()
        await gw.close()
        raise OSError(f"gRPC {settings.host}:{settings.grpc_port}: cannot bind") from exc
    try:  # Prometheus on its own port (M-4), from a thread: scrapes work while the loop is busy
        metrics_server, _ = start_metrics_server(
            gw.families.registry, settings.metrics_port, settings.host
        )
    except OSError as exc:
        sock.close()
        await grpc_server.stop(0)
        await gw.close()
        raise OSError(f"metrics {settings.host}:{settings.metrics_port}: {exc.strerror}") from None
    config = uvicorn_config(
        build_app(gw),
        settings.host,
        settings.http_port,
        grace_seconds=settings.grace_seconds,
        http=edge_protocol(edge_limits(settings), gw.metrics.rejected),
        timeout_keep_alive=settings.keep_alive_timeout_seconds,
    )
    http = _Uvicorn(config)
    loop = asyncio.get_running_loop()
    http_task = loop.create_task(http.serve(sockets=[sock]))
    probe = loop.create_task(probe_dependencies(gw, settings.probe_interval_seconds))
    stop_task = loop.create_task(wait_for_signal())
    while not http.started and not http_task.done():  # noqa: ASYNC110 - uvicorn has only a flag
        await asyncio.sleep(0.01)
    gw.ready = http.started
    log.info(
        "orchestrator serving",
        extra={
            "http": f"{settings.host}:{settings.http_port}",
            "grpc_port": grpc_server.port,
            "metrics_port": metrics_server.server_port,
        },
    )
    await asyncio.wait({http_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
    code = 1 if http_task.done() else 0  # uvicorn gave up (e.g. the port was taken)

    def stop_http() -> None:
        http.should_exit = True

    await shutdown(
        grpc_server,
        drain_seconds=settings.drain_seconds if code == 0 else 0,
        grace_seconds=settings.grace_seconds,
        before_drain=lambda: setattr(gw, "draining", True),
        before_stop=stop_http,
    )
    result = (await asyncio.gather(http_task, return_exceptions=True))[0]
    if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
        code = code or 1
    probe.cancel()
    stop_task.cancel()
    await gw.close()
    return code
