"""A real trace backend for the end-to-end trace tests: Arize Phoenix in a private netns.

Phoenix (``tools/install-phoenix.sh`` puts it in ``.tools/phoenix``; Elastic-2.0, a test
tool only) receives OTLP over gRPC and HTTP, stores spans in SQLite and answers a REST
API. Its OTLP gRPC server binds ``[::]`` whatever ``PHOENIX_HOST`` says, so it must never
run in the machine's own network namespace: ``Phoenix`` refuses to start unless the only
network interface is ``lo``, and ``run_in_netns`` runs a command (the driver, drive.py)
under ``unshare -n`` with ``lo`` up, where everything it starts can reach only itself.

What Phoenix keeps of a span, found by experiment (20.26.1), and what ``Span`` makes of it:
``GET /v1/projects/{name}/spans`` answers ``{"data": [...], "next_cursor": str | null}``,
each span ``{"id", "name", "context": {"trace_id", "span_id"}, "span_kind", "parent_id",
"start_time", "end_time", "status_code", "status_message", "attributes", "events"}``.
``attributes`` come back flat with dotted keys (``gen_ai.usage.input_tokens``, not nested
dicts), arrays of scalars as JSON arrays, numbers as numbers; ``span_kind`` is
OpenInference's kind (``LLM`` for a span with ``gen_ai.*``, else ``UNKNOWN``), *not* the
OTel SpanKind, which Phoenix drops on ingest, as it drops the resource: neither
``service.name`` nor any other resource attribute can be queried back (only
``openinference.project.name`` is read, to pick the project). Phoenix also adds
OpenInference attributes it derives from ``gen_ai.*`` (``llm.model_name``,
``llm.token_count.prompt``, ``llm.finish_reason`` ...).
So that a test can still check SpanKind and which process sent a span, tools/otlp_sink.py's
``OtlpSink(forward=...)`` sits in front of Phoenix: it passes every export on unchanged and
keeps each span's kind and resource ``service.name`` from the wire.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from tools.stack import ROOT, Proc, free_port, spawn

PHOENIX_BIN = ROOT / ".tools" / "phoenix" / "bin" / "phoenix"
READY_TIMEOUT = 120.0  # Phoenix is healthy 24-55 s after start on these machines (otel.md §1)
# The netns wrapper: lo up, then the command itself (its argv after the "sh" placeholder).
_NETNS = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh"]


def _log(msg: str) -> None:
    print(f"[tracing] {msg}", file=sys.stderr, flush=True)


@functools.cache
def netns_problem() -> str | None:
    """Why a private network namespace cannot be had here, or None (probed once)."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare or ip (util-linux, iproute2) is not installed"
    try:
        done = subprocess.run(
            [*_NETNS, "true"], capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare -n failed: {exc}"
    if done.returncode != 0:
        return f"unshare -n is not permitted here (needs root or CAP_SYS_ADMIN): {done.stderr}"
    return None


def run_in_netns(
    argv: Sequence[str], timeout: float, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in a new network namespace whose only interface, ``lo``, is up; its
    output is captured (stderr is also copied through as it comes, for progress). Skips
    the calling test when this machine does not permit ``unshare -n``."""
    problem = netns_problem()
    if problem:
        import pytest

        pytest.skip(problem)
    proc = subprocess.Popen(
        [*_NETNS, *argv],
        cwd=ROOT,
        env=dict(env) if env is not None else None,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    out_lines: list[str] = []
    err_lines: list[str] = []

    def pump(stream: Any, into: list[str], echo: bool) -> None:
        for line in stream:
            into.append(line)
            if echo:
                sys.stderr.write(line)
                sys.stderr.flush()

    pumps = [
        threading.Thread(target=pump, args=(proc.stdout, out_lines, False), daemon=True),
        threading.Thread(target=pump, args=(proc.stderr, err_lines, True), daemon=True),
    ]
    for t in pumps:
        t.start()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        proc.wait(5)
        raise
    finally:
        for t in pumps:
            t.join(5)
    out = "".join(out_lines)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "".join(err_lines))


def interfaces() -> list[str]:
    """This process's network interfaces, from the kernel of its own netns.

    Not /sys/class/net: sysfs shows the namespace of whoever mounted it, so under a bare
    ``unshare -n`` it still lists the host's eth0."""
    return sorted(name for _, name in socket.if_nameindex())


def in_private_netns() -> bool:
    return interfaces() == ["lo"]


def _get_json(url: str, timeout: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def normalise(raw: Mapping[str, Any], wire: Mapping[str, tuple[str, str]]) -> dict[str, Any]:
    """One Phoenix REST span as ``name, kind, trace_id, span_id, parent_id, attributes
    (flat dotted dict), service, status``; ``kind`` (SERVER, CLIENT ...) and ``service``
    (resource service.name) come from ``wire`` (``Sink.kinds()``), as Phoenix keeps neither:
    None where the tee did not see the span."""
    ctx = raw.get("context") or {}
    span_id = ctx.get("span_id")
    kind, service = wire.get(span_id or "", (None, None))
    return {
        "name": raw.get("name"),
        "kind": kind,
        "trace_id": ctx.get("trace_id"),
        "span_id": span_id,
        "parent_id": raw.get("parent_id"),
        "attributes": dict(raw.get("attributes") or {}),
        "service": service,
        "status": raw.get("status_code"),
        "openinference_kind": raw.get("span_kind"),
    }


class Phoenix:
    """``phoenix serve`` on free loopback ports, data in a temporary working dir; the
    context manager waits until it is healthy and stops it (its whole process group)."""

    def __init__(self, work_dir: Path | None = None, ready_timeout: float = READY_TIMEOUT) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if work_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="phoenix-")
            work_dir = Path(self._tmp.name)
        self.work_dir = work_dir
        self.ready_timeout = ready_timeout
        self.port = free_port()
        self.grpc_port = free_port()
        self.proc: Proc | None = None
        self.startup_seconds: float | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.work_dir / "phoenix.log"

    def _env(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.work_dir),
            "PHOENIX_HOST": "127.0.0.1",
            "PHOENIX_PORT": str(self.port),
            "PHOENIX_GRPC_PORT": str(self.grpc_port),
            "PHOENIX_WORKING_DIR": str(self.work_dir / "data"),
            "PHOENIX_TELEMETRY_ENABLED": "false",
        }

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/healthz", timeout=1) as resp:
                if resp.status != 200:
                    return False
        except OSError:
            return False
        with socket.socket() as s:
            s.settimeout(1)
            return s.connect_ex(("127.0.0.1", self.grpc_port)) == 0

    def start(self) -> Phoenix:
        if not in_private_netns():
            raise RuntimeError(
                "refusing to start Phoenix outside a private network namespace: its OTLP "
                f"gRPC port binds every interface (here: {', '.join(interfaces())}). "
                "Run it through tests.tracing.backend.run_in_netns."
            )
        if not PHOENIX_BIN.exists():
            raise FileNotFoundError(f"{PHOENIX_BIN} is missing: run `make tools`")
        started = time.monotonic()
        self.proc = spawn("phoenix", [str(PHOENIX_BIN), "serve"], self._env(), self.work_dir)
        _log(f"starting Phoenix (http {self.port}, otlp grpc {self.grpc_port})")
        next_note = started + 10
        try:
            while not self._healthy():
                now = time.monotonic()
                if not self.proc.alive():
                    raise RuntimeError(f"Phoenix exited:\n{self.proc.log_tail()}")
                if now - started > self.ready_timeout:
                    raise TimeoutError(
                        f"Phoenix not healthy after {self.ready_timeout:g} s:\n"
                        f"{self.proc.log_tail()}"
                    )
                if now >= next_note:
                    _log(f"waiting for Phoenix to be healthy: {now - started:.0f} s")
                    next_note += 10
                time.sleep(0.25)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        _log(f"Phoenix healthy after {self.startup_seconds:.1f} s")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Phoenix:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def raw_spans(self, project: str, page: int = 1000) -> list[dict[str, Any]]:
        """Every span of ``project`` as Phoenix's REST API returns it ([] while the project
        does not exist yet), following ``next_cursor``."""
        name = urllib.parse.quote(project, safe="")
        out: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            params = {"limit": str(page), **({"cursor": cursor} if cursor else {})}
            url = f"{self.base_url}/v1/projects/{name}/spans?{urllib.parse.urlencode(params)}"
            try:
                body = _get_json(url)
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    return out
                raise
            out.extend(body.get("data") or [])
            cursor = body.get("next_cursor")
            if not cursor:
                return out

    def spans(
        self, project: str, wire: Mapping[str, tuple[str, str]] | None = None
    ) -> list[dict[str, Any]]:
        """``project``'s spans, normalised (see ``normalise``)."""
        return [normalise(s, wire or {}) for s in self.raw_spans(project)]
