"""tollgate_common.service: one bootstrap (exit codes, one-line errors, uvloop) and one
shutdown sequence (NOT_SERVING, drain, stop)."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
import uvloop
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from tollgate_common import service
from tollgate_common.config import ConfigError, ServiceSettings
from tollgate_common.policy import PolicyError


class DemoSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="TOLLGATE_DEMO_", extra="forbid", validate_default=True
    )

    port: int = Field(default=1, ge=1)


@pytest.fixture(autouse=True)
def _quiet(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """No env leaking in, and no real logging setup (it would replace pytest's handlers)."""
    for key in list(os.environ):
        if key.startswith("TOLLGATE_"):
            monkeypatch.delenv(key)
    calls: list[tuple[str, str]] = []
    monkeypatch.setattr(service, "setup_logging", lambda name, level: calls.append((name, level)))
    return calls


def test_a_bad_setting_prints_one_line_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TOLLGATE_DEMO_PORT", "0")

    async def serve(settings: DemoSettings) -> None:
        raise AssertionError("not reached")

    assert service.main("demo", DemoSettings, serve) == 2
    err = capsys.readouterr().err
    assert err.startswith("tollgate-demo: bad configuration: port")
    assert "TOLLGATE_DEMO_PORT" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("exc", "code", "words"),
    [
        (PolicyError("baseline_model: unknown"), 2, "bad configuration"),
        (ConfigError("latency_file: cannot read"), 2, "bad configuration"),
        (OSError("cannot bind gRPC on 127.0.0.1:1"), 1, "cannot start"),
    ],
)
def test_errors_while_assembling_exit_with_one_line(
    capsys: pytest.CaptureFixture[str], exc: Exception, code: int, words: str
) -> None:
    async def serve(settings: DemoSettings) -> None:
        raise exc

    assert service.main("demo", DemoSettings, serve) == code
    err = capsys.readouterr().err
    assert err == f"tollgate-demo: {words}: {exc}\n"


@pytest.mark.parametrize(("result", "code"), [(None, 0), (3, 3)])
def test_serve_runs_under_uvloop_with_logging_set_up(
    monkeypatch: pytest.MonkeyPatch,
    _quiet: list[tuple[str, str]],
    result: int | None,
    code: int,
) -> None:
    monkeypatch.setenv("TOLLGATE_LOG_LEVEL", "DEBUG")  # the shared knob, via load_settings
    seen: list[object] = []

    async def serve(settings: DemoSettings) -> int | None:
        seen.append(asyncio.get_running_loop())
        seen.append(settings)
        return result

    assert service.main("demo", DemoSettings, serve) == code
    assert isinstance(seen[0], uvloop.Loop)
    assert isinstance(seen[1], DemoSettings)
    assert _quiet == [("demo", "DEBUG")]


class FakeServer:
    def __init__(self) -> None:
        self.events: list[tuple[str, object, float]] = []

    async def set_serving(self, serving: bool) -> None:
        self.events.append(("serving", serving, time.monotonic()))

    async def stop(self, grace: float) -> None:
        self.events.append(("stop", grace, time.monotonic()))


async def test_shutdown_goes_not_serving_then_drains_then_stops() -> None:
    server = FakeServer()
    start = time.monotonic()
    await service.shutdown(
        server,  # type: ignore[arg-type]
        drain_seconds=0.05,
        grace_seconds=7,
        before_drain=lambda: server.events.append(("before_drain", None, time.monotonic())),
    )
    assert [(e[0], e[1]) for e in server.events] == [
        ("serving", False),
        ("before_drain", None),
        ("stop", 7),
    ]
    assert server.events[0][2] - start < 0.05  # NOT_SERVING at once...
    assert server.events[2][2] - server.events[1][2] >= 0.05  # ...stop after the drain


async def test_wait_for_signal_returns_on_sigterm() -> None:
    waiter = asyncio.create_task(service.wait_for_signal())
    await asyncio.sleep(0)  # the handlers are installed
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(waiter, 5)


def test_uvicorn_config_holds_the_shared_settings() -> None:
    async def app(scope: object, receive: object, send: object) -> None:
        return None

    config = service.uvicorn_config(app, "127.0.0.1", 8080, grace_seconds=0.4, backlog=16)
    assert (config.host, config.port, config.http, config.lifespan) == (
        "127.0.0.1",
        8080,
        "httptools",
        "off",
    )
    assert not config.access_log and not config.server_header and config.log_config is None
    assert config.timeout_graceful_shutdown == 1  # never 0: 0 would mean "no grace"
    assert config.timeout_keep_alive == 30
    assert config.backlog == 16  # overrides win
