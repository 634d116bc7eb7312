"""Start tollgate's processes on loopback: used by `make run`, the tests and the benchmarks.

Every process runs in its own session so that stopping the stack kills whatever
it spawned. Ports default to free ones; `make run` passes the documented defaults.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHONPATH = os.pathsep.join(str(ROOT / p) for p in ("services", "proto/gen/python"))
# The orchestrator's ``config.DEV_KEY``, spelled here because this module runs before the
# services are importable (``make run``); tests/unit/test_run_env.py holds them equal.
DEV_KEY = "sk-tollgate-dev-key-for-local-use-only"

# The control-plane callers (tollgate_common.grpc.auth): each gets a random token per stack.
CALLER_NAMES = ("orchestrator", "operator")
TOKEN_HEADER = "x-tollgate-caller-token"  # tollgate_common.grpc.auth.TOKEN_HEADER


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The caller's env without its ``TOLLGATE_*`` and ``OTEL_*``: a developer's settings
    never leak into a test's stack. ``make run`` passes them on explicitly (tools/run.py)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOLLGATE_", "OTEL_"))}
    env["PYTHONPATH"] = PYTHONPATH + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    env.setdefault("TOLLGATE_LOG_LEVEL", "WARNING")
    env.update(extra or {})
    return env


def _exited_unreaped(pid: int) -> bool:
    """Whether ``pid`` (our child) has exited, leaving it a zombie: while it is one, its
    pid and process group id cannot be reused, so signalling the group stays safe."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:  # reaped already
        return True
    return info is not None


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    _stopped: bool = field(default=False, repr=False)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def exited(self) -> bool:
        """Like ``not alive()`` but without reaping, so ``stop()`` can still clean up
        the process group safely."""
        return self.popen.returncode is not None or _exited_unreaped(self.popen.pid)

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    def _wait_exit(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.exited():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the process group, SIGKILL after ``timeout``; then SIGKILL what is left
        of the group (children of children that outlived the leader) and reap the leader.
        Idempotent."""
        if self._stopped:
            return self.popen.returncode
        if self.popen.returncode is None:
            if not self.exited():
                self.signal(signal.SIGTERM)
                if not self._wait_exit(timeout):
                    self.signal(signal.SIGKILL)
                    self._wait_exit(5)
            # The leader is a zombie now: the group id is still ours.
            self.signal(signal.SIGKILL)
        else:
            self.signal(signal.SIGKILL)  # reaped by someone else: best effort
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)
        self._stopped = True
        return self.popen.returncode


def spawn(
    name: str, args: list[str], env: Mapping[str, str], log_dir: Path, *, append: bool = False
) -> Proc:
    """Start ``args`` in a new session, output to ``log_dir/name.log`` (appended to when
    ``append``: a restart keeps the crash's traceback)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with log_path.open("ab" if append else "wb") as log:
        popen = subprocess.Popen(
            args,
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )
    return Proc(name, popen, log_path)


def probe_http(url: str, expect: int = 200, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return bool(resp.status == expect)
    except OSError:
        return False


def probe_grpc(port: int, timeout: float = 1.0) -> bool:
    """One gRPC health check of the whole server: SERVING or not."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        try:
            resp = health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(), timeout=timeout
            )
        except grpc.RpcError:
            return False
    return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)


def wait_http(url: str, proc: Proc, timeout: float = 30.0, expect: int = 200) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited ({proc.popen.returncode}):\n{proc.log_tail()}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == expect:
                    return
        except OSError as exc:
            last = str(exc)
        time.sleep(0.05)
    raise TimeoutError(f"{proc.name} not ready at {url}: {last}\n{proc.log_tail()}")


def wait_grpc(port: int, proc: Proc, timeout: float = 30.0) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while time.monotonic() < deadline:
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited:\n{proc.log_tail()}")
            try:
                resp = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if resp.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.05)
    raise TimeoutError(f"{proc.name} gRPC not SERVING on {port}\n{proc.log_tail()}")


@dataclass(frozen=True)
class Service:
    """How to start one process and tell that it is ready: kept so that a restart
    (tools/supervise.py) reuses exactly the same command, env and ports."""

    name: str
    args: list[str]
    env: dict[str, str]
    ready_url: str | None = None  # HTTP 200 here: ready
    grpc_port: int | None = None  # or gRPC health SERVING here

    def ready(self) -> bool:
        if self.grpc_port is not None:
            return probe_grpc(self.grpc_port, timeout=0.5)
        return self.ready_url is not None and probe_http(self.ready_url, timeout=0.5)

    def wait(self, proc: Proc, timeout: float = 30.0) -> None:
        if self.grpc_port is not None:
            wait_grpc(self.grpc_port, proc, timeout)
        elif self.ready_url is not None:
            wait_http(self.ready_url, proc, timeout)


@dataclass
class Ports:
    sim: int = field(default_factory=free_port)
    router: int = field(default_factory=free_port)
    router_metrics: int = field(default_factory=free_port)
    cache: int = field(default_factory=free_port)
    cache_metrics: int = field(default_factory=free_port)
    http: int = field(default_factory=free_port)
    orch_grpc: int = field(default_factory=free_port)
    orch_metrics: int = field(default_factory=free_port)

    @classmethod
    def defaults(cls) -> Ports:
        return cls(8090, 50051, 9101, 50052, 9102, 8080, 50053, 9103)


@dataclass
class Stack:
    """The four processes of a local tollgate. Start with ``start()``; ``stop()`` ends all."""

    log_dir: Path
    ports: Ports = field(default_factory=Ports)
    env: dict[str, str] = field(default_factory=dict)  # extra env for every process
    # Per process; these win over what the stack sets (ports, peer addresses, upstream).
    sim_env: dict[str, str] = field(default_factory=dict)
    router_env: dict[str, str] = field(default_factory=dict)
    cache_env: dict[str, str] = field(default_factory=dict)
    orch_env: dict[str, str] = field(default_factory=dict)
    procs: dict[str, Proc] = field(default_factory=dict)
    # The simulator checks a key as a provider does; the orchestrator sends it upstream.
    sim_key: str = field(default_factory=lambda: "sk-sim-" + secrets.token_urlsafe(16))
    # False: no simulator, and the orchestrator uses the policy's provider base URLs.
    simulator: bool = True
    services: dict[str, Service] = field(default_factory=dict)  # what was started, in order
    # Caller tokens for the gRPC control plane, random per stack; servers get only their
    # sha256 (the callers file), clients their own token file, all under log_dir/grpc-auth.
    tokens: dict[str, str] = field(
        default_factory=lambda: {name: secrets.token_urlsafe(32) for name in CALLER_NAMES},
        repr=False,
    )
    _auth_written: bool = field(default=False, init=False, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.http}"

    @property
    def orchestrator_metrics_url(self) -> str:
        """The main orchestrator's Prometheus endpoint (its own port, not the API's)."""
        return self.metrics_url("orchestrator")

    def metrics_url(self, name: str = "orchestrator") -> str:
        """The /metrics URL of orchestrator ``name`` (or of the one serving the API base
        URL ``name``, e.g. ``http://127.0.0.1:8080``) as it was (or will be) started."""
        if name.startswith("http"):
            ready = f"{name.rstrip('/')}/readyz"
            name = next(n for n, svc in self.services.items() if svc.ready_url == ready)
        service = self.services.get(name)
        env = service.env if service is not None else self.orchestrator_service(name).env
        return f"http://127.0.0.1:{env['TOLLGATE_ORCHESTRATOR_METRICS_PORT']}/metrics"

    @property
    def auth_dir(self) -> Path:
        return self.log_dir / "grpc-auth"

    def _auth_files(self) -> Path:
        """Write the callers file and each caller's token file (once per stack, over
        what an earlier stack in the same log_dir left; owner-only)."""
        d = self.auth_dir
        callers = d / "callers.yaml"
        if not self._auth_written:
            self._auth_written = True
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o700)
            for name, token in self.tokens.items():
                path = d / f"{name}.token"
                path.write_text(token + "\n")
                path.chmod(0o600)
            lines = [
                f"{n}: {hashlib.sha256(t.encode()).hexdigest()}" for n, t in self.tokens.items()
            ]
            callers.write_text("\n".join(lines) + "\n")
        return callers

    def _signing_key(self) -> Path:
        """The orchestrators' shared cache signing key (owner-only), written once."""
        path = self._auth_files().parent / "cache-signing.key"
        if not path.exists():
            path.write_text(secrets.token_urlsafe(48) + "\n")
            path.chmod(0o600)
        return path

    @property
    def callers_file(self) -> Path:
        """The servers' ``grpc_callers_file`` (sha256 of each caller's token): for a
        process a test starts beside the stack."""
        return self._auth_files()

    def token_file(self, caller: str) -> Path:
        """The token file of ``caller`` (``orchestrator`` or ``operator``)."""
        self._auth_files()
        return self.auth_dir / f"{caller}.token"

    @property
    def operator_token(self) -> Path:
        """The operator's token file: for tests and tools that call control RPCs, and
        for an operator process run against this stack (TOLLGATE_OPERATOR_GRPC_TOKEN_FILE)."""
        return self.token_file("operator")

    def caller_metadata(self, caller: str = "operator") -> tuple[tuple[str, str], ...]:
        """gRPC metadata that makes a call come from ``caller``."""
        return ((TOKEN_HEADER, self.tokens[caller]),)

    def caller_channel(self, port: int, caller: str = "operator") -> Any:
        """A blocking ``grpc.Channel`` to ``127.0.0.1:port`` whose unary calls come from
        ``caller`` (its token in every call's metadata)."""
        import grpc

        metadata = self.caller_metadata(caller)

        class _Details(grpc.ClientCallDetails):  # type: ignore[misc]
            def __init__(self, d: Any) -> None:
                self.method, self.timeout, self.credentials = d.method, d.timeout, d.credentials
                self.wait_for_ready, self.compression = d.wait_for_ready, d.compression
                self.metadata = [*(d.metadata or ()), *metadata]

        class _Token(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
            def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
                return continuation(_Details(details), request)

        return grpc.intercept_channel(grpc.insecure_channel(f"127.0.0.1:{port}"), _Token())

    def _grpc_auth_env(self, prefix: str, *, client: bool = False) -> dict[str, str]:
        env = {f"{prefix}GRPC_CALLERS_FILE": str(self._auth_files())}
        if client:
            env[f"{prefix}GRPC_TOKEN_FILE"] = str(self.token_file("orchestrator"))
        return env

    @property
    def sim_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.sim}"

    def _env(self, own: Mapping[str, str]) -> dict[str, str]:
        return base_env({**self.env, **own})

    def sim_service(self) -> Service:
        env = self._env(
            {
                "TOLLGATE_SIM_PORT": str(self.ports.sim),
                "TOLLGATE_SIM_API_KEY": self.sim_key,
                **self.sim_env,
            }
        )
        args = [sys.executable, "-m", "tollgate_simulator"]
        return Service("simulator", args, env, ready_url=f"{self.sim_url}/healthz")

    def router_service(self) -> Service:
        env = self._env(
            {
                "TOLLGATE_ROUTER_GRPC_PORT": str(self.ports.router),
                "TOLLGATE_ROUTER_METRICS_PORT": str(self.ports.router_metrics),
                **self._grpc_auth_env("TOLLGATE_ROUTER_"),
                **self.router_env,
            }
        )
        args = [sys.executable, "-m", "tollgate_router"]
        return Service("router", args, env, grpc_port=self.ports.router)

    def cache_service(self) -> Service:
        env = self._env(
            {
                "TOLLGATE_CACHE_GRPC_PORT": str(self.ports.cache),
                "TOLLGATE_CACHE_METRICS_PORT": str(self.ports.cache_metrics),
                **self._grpc_auth_env("TOLLGATE_CACHE_"),
                **self.cache_env,
            }
        )
        args = [sys.executable, "-m", "tollgate_cache"]
        return Service("cache", args, env, grpc_port=self.ports.cache)

    def orchestrator_service(
        self,
        name: str = "orchestrator",
        http_port: int | None = None,
        grpc_port: int | None = None,
        **extra: str,
    ) -> Service:
        # The main orchestrator's metrics port is fixed per stack; another one gets its own.
        main = name == "orchestrator" and http_port in (None, self.ports.http)
        metrics_port = self.ports.orch_metrics if main else free_port()
        http_port = http_port or self.ports.http
        upstream = (
            {
                "TOLLGATE_ORCHESTRATOR_UPSTREAM_BASE_URL": f"{self.sim_url}/v1",
                "TOLLGATE_ORCHESTRATOR_UPSTREAM_API_KEY": self.sim_key,
            }
            if self.simulator
            else {}
        )
        env = self._env(
            {
                "TOLLGATE_ORCHESTRATOR_HTTP_PORT": str(http_port),
                "TOLLGATE_ORCHESTRATOR_GRPC_PORT": str(grpc_port or self.ports.orch_grpc),
                "TOLLGATE_ORCHESTRATOR_METRICS_PORT": str(metrics_port),
                "TOLLGATE_ORCHESTRATOR_ROUTER_ADDR": f"127.0.0.1:{self.ports.router}",
                "TOLLGATE_ORCHESTRATOR_CACHE_ADDR": f"127.0.0.1:{self.ports.cache}",
                **self._grpc_auth_env("TOLLGATE_ORCHESTRATOR_", client=True),
                # One signing key for every orchestrator of the stack, as the chart's Secret.
                "TOLLGATE_ORCHESTRATOR_CACHE_SIGNING_KEY_FILE": str(self._signing_key()),
                **upstream,
                **self.orch_env,
                **extra,
            }
        )
        args = [sys.executable, "-m", "tollgate_orchestrator"]
        return Service(name, args, env, ready_url=f"http://127.0.0.1:{http_port}/readyz")

    def launch(self, service: Service, *, wait: bool = True, append: bool = False) -> Proc:
        """Start ``service`` (again, with ``append``: its log is kept) and record it."""
        self.services[service.name] = service
        p = self.procs[service.name] = spawn(
            service.name, service.args, service.env, self.log_dir, append=append
        )
        if wait:
            service.wait(p)
        return p

    def start_sim(self) -> Proc:
        return self.launch(self.sim_service())

    def start_router(self) -> Proc:
        return self.launch(self.router_service())

    def start_cache(self) -> Proc:
        return self.launch(self.cache_service())

    def start_orchestrator(
        self,
        name: str = "orchestrator",
        http_port: int | None = None,
        grpc_port: int | None = None,
        **extra: str,
    ) -> Proc:
        return self.launch(self.orchestrator_service(name, http_port, grpc_port, **extra))

    def planned(self) -> list[Service]:
        """The services ``start()`` starts, in order: dependencies before the orchestrator."""
        first = [self.sim_service()] if self.simulator else []
        return [*first, self.router_service(), self.cache_service(), self.orchestrator_service()]

    def start(self) -> Stack:
        try:
            for service in self.planned():
                self.launch(service)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        # Reverse order: the orchestrator drains before its dependencies go.
        for proc in reversed(list(self.procs.values())):
            proc.stop()
        self.procs.clear()


@contextlib.contextmanager
def running_stack(log_dir: Path, **kwargs: object) -> Iterator[Stack]:
    stack = Stack(log_dir=log_dir, **kwargs)  # type: ignore[arg-type]
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()
