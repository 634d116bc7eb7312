"""Shared fixtures: free ports, the local stack, a real redis-server."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tollgate_common import tracing
from tools.stack import Stack, free_port


@pytest.fixture
def stack_factory(tmp_path: Path) -> Iterator[type[Stack] | object]:
    """Build stacks on free ports; every one started is stopped at teardown."""
    made: list[Stack] = []

    def make(**kwargs: object) -> Stack:
        s = Stack(log_dir=tmp_path / f"stack{len(made)}", **kwargs)  # type: ignore[arg-type]
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


class RedisServer:
    def __init__(self, port: int, proc: subprocess.Popen[bytes]) -> None:
        self.port = port
        self.proc = proc
        self.url = f"redis://127.0.0.1:{port}/0"


def start_redis(tmp_path: Path, *args: str) -> RedisServer:
    """redis-server on a free loopback port, no persistence; ``args`` add settings
    (``--maxmemory-policy``, ...)."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not installed: run `make system-deps`")
    port = free_port()
    proc = subprocess.Popen(
        [
            exe,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
            *args,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    import redis

    client = redis.Redis(port=port, socket_timeout=0.5)
    for _ in range(100):
        try:
            if client.ping():
                break
        except redis.RedisError:
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("redis-server did not start")
    client.close()
    return RedisServer(port, proc)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port, killed at teardown."""
    server = start_redis(tmp_path)
    yield server
    server.proc.kill()
    server.proc.wait(5)


@pytest.fixture
def sdk(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """Tracing on, into a private SDK provider whose spans the test reads (the global
    provider can be set only once per process)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "on", True)
    monkeypatch.setattr(tracing, "tracer", provider.get_tracer("test"))
    yield exporter
    provider.shutdown()
