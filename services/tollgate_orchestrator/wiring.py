"""The orchestrator's composition root: build everything from the settings, then run HTTP
and gRPC in one process and one event loop.

One uvicorn worker per process, on purpose: a pod runs one process and scales with
replicas. Several workers would each hold their own registry (scrapes would
undercount and gauges flip-flop), and prometheus_client's multiprocess mode cannot
run the process collectors or remove label sets. Budget counters that must be
shared across replicas live in Redis.

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
from tollgate_common.grpc.channel import make_channel
from tollgate_common.grpc.server import GrpcServer, start_grpc_server
from tollgate_common.metrics import Families, create_families
from tollgate_common.policy import load_policy
from tollgate_common.service import shutdown, uvicorn_config, wait_for_signal
from tollgate_orchestrator.accounting import Accounting
from tollgate_orchestrator.admission import Admissions, Slots
from tollgate_orchestrator.auth import KeyRing
from tollgate_orchestrator.budget import Budgets, BudgetStore, MemoryCounters, RedisCounters
from tollgate_orchestrator.catalog import Catalog
from tollgate_orchestrator.clients import CacheClient, RouterClient
from tollgate_orchestrator.config import OrchestratorSettings, load_keys
from tollgate_orchestrator.fallback import Attempts
from tollgate_orchestrator.http_api import build_app, routes
from tollgate_orchestrator.metrics import OrchestratorMetrics
from tollgate_orchestrator.pipeline import Pipeline
from tollgate_orchestrator.providers.openai import Upstreams
from tollgate_orchestrator.service import SERVICE_NAME, OrchestratorService
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
            budget_store=s.redis_url is not None,
        )
        self.catalog.subscribe(m.follow)
        tls = {"tls_ca": s.peer_tls_ca, "tls_cert": s.peer_tls_cert, "tls_key": s.peer_tls_key}
        self.router_channel = make_channel(
            s.router_addr, default_timeout=s.router_timeout_seconds, families=self.families, **tls
        )
        self.cache_channel = make_channel(
            s.cache_addr, default_timeout=s.cache_timeout_seconds, families=self.families, **tls
        )
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
        )
        self.store: BudgetStore = (
            RedisCounters(
                s.redis_url.get_secret_value(),
                s.redis_timeout_seconds,
                CircuitBreaker(DEPENDENCY_BREAKER),
            )
            if s.redis_url is not None
            else MemoryCounters()
        )
        self.budgets = Budgets(s.budgets, self.store, s.budget_unchecked_policy, m)
        self.upstreams = Upstreams(
            policy,
            base_url=s.upstream_base_url,
            base_url_key=s.upstream_api_key.get_secret_value() if s.upstream_api_key else "",
            insecure_hosts=s.upstream_insecure_hosts,
            connect_timeout=s.upstream_connect_timeout_seconds,
            read_timeout=s.upstream_timeout_seconds,
        )
        attempts = Attempts(s, m)
        self.admissions = Admissions(Slots(s.max_concurrency), self.budgets, attempts.budget, m)
        self.pipeline = Pipeline(
            settings=s,
            catalog=self.catalog,
            router=self.router,
            cache=cache,
            upstreams=self.upstreams,
            budgets=self.budgets,
            attempts=attempts,
            accounting=Accounting(m),
        )
        self.ready = False
        self.draining = False
        self.dependencies = {"router": True, "cache": True}
        if s.redis_url is not None:
            self.dependencies["budget_store"] = True

    def readiness(self) -> tuple[bool, dict[str, object]]:
        ok = self.ready and not self.draining
        status = "draining" if self.draining else ("ready" if ok else "starting")
        deps = {k: ("up" if v else "down") for k, v in sorted(self.dependencies.items())}
        # A dependency that is down degrades requests, it does not fail them: still ready.
        return ok, {"status": status, "dependencies": deps}

    async def close(self) -> None:
        await self.pipeline.drain_background(1.0)
        await self.upstreams.close()
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


class _Uvicorn(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # Signals are ours: readiness and gRPC health must flip before uvicorn stops.
        yield


async def serve(settings: OrchestratorSettings) -> int:
    gw = Gateway(settings, None)
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
            settings=settings, port=settings.grpc_port, families=gw.families, register=register
        )
    except (OSError, RuntimeError) as exc:  # grpc reports a taken port as RuntimeError
        sock.close()
        await gw.close()
        raise OSError(f"gRPC {settings.host}:{settings.grpc_port}: cannot bind") from exc
    config = uvicorn_config(
        build_app(gw), settings.host, settings.http_port, grace_seconds=settings.grace_seconds
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
        extra={"http": f"{settings.host}:{settings.http_port}", "grpc_port": grpc_server.port},
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
