"""Start tollgate's processes on loopback: used by `make run`, the tests and the benchmarks.

Every process runs in its own session so that stopping the stack kills whatever
it spawned. Ports default to free ones; `make run` passes the documented defaults.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHONPATH = os.pathsep.join(str(ROOT / p) for p in ("services", "proto/gen/python"))
DEV_KEY = "sk-tollgate-dev"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_")}
    env["PYTHONPATH"] = PYTHONPATH + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    env.setdefault("TOLLGATE_LOG_LEVEL", "WARNING")
    env.update(extra or {})
    return env


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.popen.wait(5)
        else:
            self.signal(signal.SIGKILL)  # children it may have left behind
        return self.popen.returncode


def spawn(name: str, args: list[str], env: Mapping[str, str], log_dir: Path) -> Proc:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    log = log_path.open("wb")
    popen = subprocess.Popen(
        args,
        env=dict(env),
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        start_new_session=True,
    )
    return Proc(name, popen, log_path)


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


@dataclass
class Ports:
    sim: int = field(default_factory=free_port)
    router: int = field(default_factory=free_port)
    router_metrics: int = field(default_factory=free_port)
    cache: int = field(default_factory=free_port)
    cache_metrics: int = field(default_factory=free_port)
    http: int = field(default_factory=free_port)
    orch_grpc: int = field(default_factory=free_port)

    @classmethod
    def defaults(cls) -> Ports:
        return cls(8090, 50051, 9101, 50052, 9102, 8080, 50053)


@dataclass
class Stack:
    """The four processes of a local tollgate. Start with ``start()``; ``stop()`` ends all."""

    log_dir: Path
    ports: Ports = field(default_factory=Ports)
    env: dict[str, str] = field(default_factory=dict)  # extra env for every process
    sim_env: dict[str, str] = field(default_factory=dict)
    router_env: dict[str, str] = field(default_factory=dict)
    cache_env: dict[str, str] = field(default_factory=dict)
    orch_env: dict[str, str] = field(default_factory=dict)
    procs: dict[str, Proc] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.http}"

    @property
    def sim_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.sim}"

    def _env(self, own: Mapping[str, str]) -> dict[str, str]:
        return base_env({**self.env, **own})

    def start_sim(self) -> Proc:
        env = self._env({"TOLLGATE_SIM_PORT": str(self.ports.sim), **self.sim_env})
        p = self.procs["simulator"] = spawn(
            "simulator", [sys.executable, "-m", "tollgate_simulator"], env, self.log_dir
        )
        wait_http(f"{self.sim_url}/v1/models", p)
        return p

    def start_router(self) -> Proc:
        env = self._env(
            {
                "TOLLGATE_ROUTER_GRPC_PORT": str(self.ports.router),
                "TOLLGATE_ROUTER_METRICS_PORT": str(self.ports.router_metrics),
                **self.router_env,
            }
        )
        p = self.procs["router"] = spawn(
            "router", [sys.executable, "-m", "tollgate_router"], env, self.log_dir
        )
        wait_grpc(self.ports.router, p)
        return p

    def start_cache(self) -> Proc:
        env = self._env(
            {
                "TOLLGATE_CACHE_GRPC_PORT": str(self.ports.cache),
                "TOLLGATE_CACHE_METRICS_PORT": str(self.ports.cache_metrics),
                **self.cache_env,
            }
        )
        p = self.procs["cache"] = spawn(
            "cache", [sys.executable, "-m", "tollgate_cache"], env, self.log_dir
        )
        wait_grpc(self.ports.cache, p)
        return p

    def start_orchestrator(
        self,
        name: str = "orchestrator",
        http_port: int | None = None,
        grpc_port: int | None = None,
        **extra: str,
    ) -> Proc:
        http_port = http_port or self.ports.http
        env = self._env(
            {
                "TOLLGATE_ORCHESTRATOR_HTTP_PORT": str(http_port),
                "TOLLGATE_ORCHESTRATOR_GRPC_PORT": str(grpc_port or self.ports.orch_grpc),
                "TOLLGATE_ORCHESTRATOR_ROUTER_ADDR": f"127.0.0.1:{self.ports.router}",
                "TOLLGATE_ORCHESTRATOR_CACHE_ADDR": f"127.0.0.1:{self.ports.cache}",
                "TOLLGATE_ORCHESTRATOR_UPSTREAM_BASE_URL": f"{self.sim_url}/v1",
                **self.orch_env,
                **extra,
            }
        )
        p = self.procs[name] = spawn(
            name, [sys.executable, "-m", "tollgate_orchestrator"], env, self.log_dir
        )
        wait_http(f"http://127.0.0.1:{http_port}/readyz", p)
        return p

    def start(self) -> Stack:
        try:
            self.start_sim()
            self.start_router()
            self.start_cache()
            self.start_orchestrator()
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
