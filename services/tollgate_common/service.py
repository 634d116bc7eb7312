"""The one bootstrap and shutdown sequence of every tollgate service.

Every ``__main__.py`` is ``sys.exit(main("<svc>", Settings, wiring.serve))``. ``main``
owns what each entry point used to copy: settings with one error wording and exit
code 2, logging, uvloop, and exit code 1 for a process that cannot start (a port
already taken, most often). ``wiring.serve`` assembles the service and runs it until
``wait_for_signal`` returns, then calls ``shutdown``:

1. gRPC health goes NOT_SERVING (and ``before_drain`` runs, e.g. readiness false), so
   probes and load balancers stop sending new work;
2. ``drain_seconds`` pass, the time endpoints take to be removed;
3. the server stops taking calls and in-flight ones get ``grace_seconds`` to finish.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import uvloop

from tollgate_common import __version__, tracing
from tollgate_common.config import ConfigError, ServiceSettings, load_settings
from tollgate_common.grpc.server import GrpcServer
from tollgate_common.logging import setup_logging
from tollgate_common.policy import PolicyError

if TYPE_CHECKING:
    import uvicorn

log = logging.getLogger(__name__)

S = TypeVar("S", bound=ServiceSettings)

EXIT_OK = 0
EXIT_CANNOT_START = 1
EXIT_BAD_CONFIGURATION = 2


def main(
    name: str,
    settings_cls: type[S],
    serve: Callable[[S], Awaitable[int | None]],
    *,
    traced: bool = True,
) -> int:
    """Run the service ``tollgate-<name>``; returns the process exit code.

    Settings come from ``load_settings(settings_cls, name)``. A ``ConfigError`` or a
    ``PolicyError`` (from the settings or from ``serve`` while it assembles the
    service) prints one line ``tollgate-<name>: bad configuration: ...`` and returns 2;
    an ``OSError`` out of ``serve`` prints ``tollgate-<name>: cannot start: ...`` and
    returns 1. Otherwise the result is what ``serve`` returned, 0 for ``None``.
    With ``traced``, the ``OTEL_*`` variables may turn tracing on (``tracing.setup``).
    """
    try:
        settings = load_settings(settings_cls, name)
    except (ConfigError, PolicyError) as exc:
        return _fail(name, "bad configuration", exc, EXIT_BAD_CONFIGURATION)
    setup_logging(name, settings.log_level)
    try:
        if traced:  # before any server or channel exists
            tracing.setup(name, __version__, os.environ)
    except ConfigError as exc:
        return _fail(name, "bad configuration", exc, EXIT_BAD_CONFIGURATION)

    async def run() -> int | None:
        return await serve(settings)

    try:
        code = uvloop.run(run())
    except (ConfigError, PolicyError) as exc:
        return _fail(name, "bad configuration", exc, EXIT_BAD_CONFIGURATION)
    except OSError as exc:
        return _fail(name, "cannot start", exc, EXIT_CANNOT_START)
    finally:
        tracing.shutdown()
    return EXIT_OK if code is None else code


def _fail(name: str, what: str, exc: BaseException, code: int) -> int:
    print(f"tollgate-{name}: {what}: {exc}", file=sys.stderr)
    return code


async def wait_for_signal() -> None:
    """Return when the process gets SIGTERM or SIGINT.

    The handlers stay installed afterwards: a second signal during the drain is
    ignored rather than killing the process half-way through its shutdown.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def shutdown(
    grpc_server: GrpcServer,
    *,
    drain_seconds: float,
    grace_seconds: float,
    before_drain: Callable[[], None] | None = None,
    before_stop: Callable[[], None] | None = None,
) -> None:
    """NOT_SERVING, ``before_drain()``, wait ``drain_seconds``, ``before_stop()`` (e.g. tell
    an HTTP server beside it to stop too), then stop with ``grace_seconds``."""
    log.info("stopping", extra={"drain_seconds": drain_seconds, "grace_seconds": grace_seconds})
    await grpc_server.set_serving(False)
    if before_drain is not None:
        before_drain()
    if drain_seconds > 0:
        await asyncio.sleep(drain_seconds)
    if before_stop is not None:
        before_stop()
    await grpc_server.stop(grace_seconds)


def uvicorn_config(
    app: Any, sock_host: str, port: int, *, grace_seconds: float, **overrides: Any
) -> uvicorn.Config:
    """The uvicorn settings every tollgate HTTP face shares; ``overrides`` win.

    httptools, no lifespan, no access log (metrics replace it), no ``server`` header,
    uvicorn's logging left to ours (``log_config=None``). ``sock_host``/``port`` are
    what uvicorn binds, or only reports when the caller passes its own sockets.
    """
    import uvicorn  # here: the gRPC-only services never load it

    kwargs: dict[str, Any] = {
        "host": sock_host,
        "port": port,
        "http": "httptools",
        "lifespan": "off",
        "access_log": False,
        "log_config": None,
        "server_header": False,
        "backlog": 4096,
        "timeout_keep_alive": 30,
        "timeout_graceful_shutdown": max(1, int(grace_seconds)),
    }
    kwargs.update(overrides)
    return uvicorn.Config(app, **kwargs)
