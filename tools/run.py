"""`make run`: the whole stack on loopback until Ctrl-C, crashed services restarted.

The caller's ``TOLLGATE_*`` settings pass through to the services (only here: the tests'
stacks never see a developer's env). What make run sets itself (ports, peer addresses,
the simulator as upstream) is derived from them, and a caller's setting always wins:
a port variable moves that listener and everything that points at it; an empty value
counts as unset. Ports in a ``TOLLGATE_CONFIG`` file are not read: set them by env.

Knobs of make run itself: ``--upstream simulator|openai`` (``make run UPSTREAM=openai``),
``TOLLGATE_HTTP_PORT`` (the API port, like ``TOLLGATE_ORCHESTRATOR_HTTP_PORT``),
``TOLLGATE_RUN_PORTS=free`` (every port not set explicitly is a free one),
``TOLLGATE_RUN_LOG_DIR`` (default ``.run/``; it holds one log per service and ``run.json``
with the pids and ports while the stack runs).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from tools.stack import DEV_KEY, ROOT, Ports, Stack, free_port
from tools.supervise import Supervisor

UPSTREAMS = {
    "simulator": "the built-in simulator: free, the default",
    "openai": "OpenAI with OPENAI_API_KEY: real requests, real money",
    "providers": "every provider of the policy whose key is set (OPENAI_API_KEY, "
    "ANTHROPIC_API_KEY, GEMINI_API_KEY, ...): real requests, real money",
}
REAL = frozenset({"openai", "providers"})  # the upstreams that spend real money
PREFIXES = {
    "simulator": "TOLLGATE_SIM_",
    "router": "TOLLGATE_ROUTER_",
    "cache": "TOLLGATE_CACHE_",
    "orchestrator": "TOLLGATE_ORCHESTRATOR_",
}
SHARED = frozenset({"TOLLGATE_LOG_LEVEL", "TOLLGATE_CONFIG"})  # read by every service
RUN_KNOBS = frozenset({"TOLLGATE_HTTP_PORT", "TOLLGATE_RUN_PORTS", "TOLLGATE_RUN_LOG_DIR"})
# Ports field -> the service setting that moves it.
PORT_VARS = {
    "sim": "TOLLGATE_SIM_PORT",
    "router": "TOLLGATE_ROUTER_GRPC_PORT",
    "router_metrics": "TOLLGATE_ROUTER_METRICS_PORT",
    "cache": "TOLLGATE_CACHE_GRPC_PORT",
    "cache_metrics": "TOLLGATE_CACHE_METRICS_PORT",
    "http": "TOLLGATE_ORCHESTRATOR_HTTP_PORT",
    "orch_grpc": "TOLLGATE_ORCHESTRATOR_GRPC_PORT",
    "orch_metrics": "TOLLGATE_ORCHESTRATOR_METRICS_PORT",
}
UPSTREAM_URL_VAR = "TOLLGATE_ORCHESTRATOR_UPSTREAM_BASE_URL"
KEY_VARS = ("TOLLGATE_ORCHESTRATOR_API_KEYS", "TOLLGATE_ORCHESTRATOR_API_KEYS_FILE")
DEFAULT_POLICY = ROOT / "services" / "tollgate_common" / "data" / "default-policy.yaml"


class UsageError(Exception):
    """A wrong argument or setting: the message says how to fix it; exit code 2."""


@dataclass(frozen=True)
class Passthrough:
    """The caller's ``TOLLGATE_*``, sorted out: per service what it gets, and by name
    what was applied and what nothing started here reads."""

    per_service: dict[str, dict[str, str]]
    applied: tuple[str, ...]
    ignored: tuple[str, ...]


def tollgate_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """The caller's non-empty ``TOLLGATE_*`` (an empty value counts as unset)."""
    return {k: v for k, v in environ.items() if k.startswith("TOLLGATE_") and v != ""}


def split_settings(environ: Mapping[str, str], services: Collection[str]) -> Passthrough:
    """Each service gets its own prefix's settings plus the shared ones: a secret such as
    the API keys goes only to the process that reads it."""
    settings = tollgate_settings(environ)
    per: dict[str, dict[str, str]] = {s: {} for s in services}
    applied: list[str] = []
    ignored: list[str] = []
    for name, value in sorted(settings.items()):
        targets = [s for s in services if name in SHARED or name.startswith(PREFIXES[s])]
        for s in targets:
            per[s][name] = value
        (applied if targets or name in RUN_KNOBS else ignored).append(name)
    return Passthrough(per, tuple(applied), tuple(ignored))


def _port(name: str, value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise UsageError(f"{name}={value!r}: not a port (1-65535)")
    return port


def choose_ports(environ: Mapping[str, str]) -> Ports:
    """The caller's port settings, else the documented defaults (or free ones with
    ``TOLLGATE_RUN_PORTS=free``). Two listeners on one port are refused up front."""
    settings = tollgate_settings(environ)
    mode = settings.get("TOLLGATE_RUN_PORTS", "default")
    if mode not in ("default", "free"):
        raise UsageError(f"TOLLGATE_RUN_PORTS={mode!r}: use 'default' or 'free'")
    defaults = Ports.defaults()
    chosen: dict[str, int] = {}
    for f in fields(Ports):
        var = PORT_VARS[f.name]
        if f.name == "http" and var not in settings and "TOLLGATE_HTTP_PORT" in settings:
            var = "TOLLGATE_HTTP_PORT"  # the older knob; the service's own name wins
        if var in settings:
            chosen[f.name] = _port(var, settings[var])
    taken: dict[int, str] = {}
    for field_name, port in chosen.items():
        if port in taken:
            raise UsageError(f"{PORT_VARS[taken[port]]} and {PORT_VARS[field_name]}: both {port}")
        taken[port] = field_name
    for f in fields(Ports):
        if f.name not in chosen:
            port = getattr(defaults, f.name) if mode == "default" else free_port()
            while mode == "free" and port in taken:
                port = free_port()
            chosen[f.name] = port
            taken[port] = f.name
    return Ports(**chosen)


def config_section(environ: Mapping[str, str], section: str) -> dict[str, Any]:
    """``section`` of the ``TOLLGATE_CONFIG`` file, or {}: the service itself reports a
    bad file, this only decides what the banner says."""
    path = tollgate_settings(environ).get("TOLLGATE_CONFIG")
    if not path:
        return {}
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}
    sub = data.get(section) if isinstance(data, dict) else None
    return sub if isinstance(sub, dict) else {}


def uses_dev_key(environ: Mapping[str, str]) -> bool:
    """Whether the orchestrator falls back to the dev key: no keys by env or file."""
    settings = tollgate_settings(environ)
    if any(v in settings for v in KEY_VARS):
        return False
    return not {"api_keys", "api_keys_file"} & config_section(environ, "orchestrator").keys()


def check_upstream(upstream: str, environ: Mapping[str, str]) -> None:
    if upstream not in UPSTREAMS:
        accepted = "; ".join(f"{k} ({v})" for k, v in UPSTREAMS.items())
        raise UsageError(f"unknown upstream {upstream!r}; accepted: {accepted}")
    if upstream not in REAL:
        return
    if upstream == "openai" and not environ.get("OPENAI_API_KEY"):
        raise UsageError(
            "UPSTREAM=openai needs OPENAI_API_KEY: "
            "run OPENAI_API_KEY=sk-... make run UPSTREAM=openai"
        )
    if upstream == "providers" and not keyed_providers(environ):
        names = sorted({env for _, env in policy_providers(environ).values() if env})
        raise UsageError(
            "UPSTREAM=providers needs the key of at least one provider of the policy: "
            f"set one of {', '.join(names) or 'the api_key_env the policy names'}"
        )
    orch_file = config_section(environ, "orchestrator")
    if UPSTREAM_URL_VAR in tollgate_settings(environ) or "upstream_base_url" in orch_file:
        raise UsageError(
            f"UPSTREAM=openai uses the routing policy's provider URLs, but {UPSTREAM_URL_VAR} "
            "(or upstream_base_url in TOLLGATE_CONFIG) is set: unset it, or leave UPSTREAM out"
        )


def policy_providers(environ: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """Provider -> (base URL, key env var) of the orchestrator's routing policy."""
    settings = tollgate_settings(environ)
    path = Path(settings.get("TOLLGATE_ORCHESTRATOR_POLICY_FILE", str(DEFAULT_POLICY)))
    try:
        data = yaml.safe_load(path.read_text()) or {}
        providers = data.get("providers") or {}
        return {
            str(k): (str(v.get("base_url", "?")), str(v.get("api_key_env") or ""))
            for k, v in providers.items()
        }
    except (OSError, yaml.YAMLError, AttributeError):
        return {}


def keyed_providers(environ: Mapping[str, str]) -> list[str]:
    """The providers that will serve: their key is set, or they take none."""
    return [n for n, (_, env) in policy_providers(environ).items() if not env or environ.get(env)]


def _names(names: Iterable[str]) -> str:
    return ", ".join(names)


def banner(
    stack: Stack, upstream: str, passthrough: Passthrough, dev_key: bool, log_dir: Path
) -> str:
    base, ports = stack.base_url, stack.ports
    if upstream in REAL:
        on = set(keyed_providers(os.environ))
        urls = ", ".join(
            f"{k} {url}" + ("" if k in on else f" (skipped: no {env})")
            for k, (url, env) in policy_providers(os.environ).items()
        )
        upstream_line = f"the routing policy's providers: {urls or 'see the policy'}"
    elif stack.simulator:
        upstream_line = f"built-in simulator at {stack.sim_url}"
    else:
        upstream_line = f"the server in {UPSTREAM_URL_VAR} (your setting; no simulator)"
    lines = [
        "",
        "tollgate is up",
        f"  API        {base}/v1   (OpenAI-compatible)",
        f"  metrics    orchestrator http://127.0.0.1:{ports.orch_metrics}/metrics",
        f"             router http://127.0.0.1:{ports.router_metrics}/metrics",
        f"             cache  http://127.0.0.1:{ports.cache_metrics}/metrics",
        f"  upstream   {upstream_line}",
        f"  logs       {log_dir}/   (pids and ports: run.json)",
        f"  control    gRPC control RPCs need a caller token: {stack.operator_token}",
        "             (fresh per run; sent as x-tollgate-caller-token metadata)",
    ]
    applied, ignored = _names(passthrough.applied), _names(passthrough.ignored)
    if applied:
        lines.append(f"  settings   from your environment (names only): {applied}")
    else:
        lines.append("  settings   none from your environment (TOLLGATE_* pass through)")
    if ignored:
        lines.append(f"             ignored, nothing here reads them: {ignored}")
    if dev_key:
        lines += [
            f'  key        {DEV_KEY}  (tenant "dev")',
            "  WARNING: no API keys configured; the dev key is for local use only.",
        ]
    else:
        lines.append("  keys       the ones you configured (the dev key is off)")
    key = DEV_KEY if dev_key else "<your key>"
    lines += [
        "",
        "try it:",
        f"  curl -s {base}/v1/chat/completions \\",
        f'    -H "Authorization: Bearer {key}" -H "Content-Type: application/json" \\',
        """    -d '{"model": "auto", "messages": [{"role": "user",""",
        """          "content": "Write a Python function that reverses a string"}]}'""",
    ]
    if upstream in REAL:
        lines += ["", *REAL_MONEY]
    lines += ["", "Crashed services are restarted. Ctrl-C stops everything."]
    return "\n".join(lines)


REAL_MONEY = (
    "  !!! every request goes to a real provider and SPENDS REAL MONEY on the account of",
    "  !!! its key. Leave UPSTREAM out for the free simulator.",
)


def write_state(path: Path, stack: Stack, supervisor: Supervisor, upstream: str) -> None:
    """run.json, replaced atomically: what the tests and a curious user look up."""
    ports = {f.name: getattr(stack.ports, f.name) for f in fields(Ports)}
    if not stack.simulator:
        ports.pop("sim")
    state = {
        "pid": os.getpid(),
        "upstream": upstream,
        "ports": ports,
        "services": supervisor.snapshot(),
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="make run", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--upstream",
        default="simulator",
        help="; ".join(f"{k}: {v}" for k, v in UPSTREAMS.items()),
    )
    return parser.parse_args(argv)


def build_stack(upstream: str, environ: Mapping[str, str]) -> tuple[Stack, Passthrough, Path]:
    check_upstream(upstream, environ)
    settings = tollgate_settings(environ)
    simulator = upstream == "simulator" and UPSTREAM_URL_VAR not in settings
    services = [*(["simulator"] if simulator else []), "router", "cache", "orchestrator"]
    passthrough = split_settings(environ, services)
    log_dir = Path(settings.get("TOLLGATE_RUN_LOG_DIR", str(ROOT / ".run"))).resolve()
    per = passthrough.per_service
    # Traces are the services' (docs/observability.md): the simulator stands for a provider.
    otel = {k: v for k, v in environ.items() if k.startswith("OTEL_")}
    stack = Stack(
        log_dir=log_dir,
        ports=choose_ports(environ),
        env={"TOLLGATE_LOG_LEVEL": "INFO"},
        sim_env=per.get("simulator", {}),
        router_env={**otel, **per["router"]},
        cache_env={**otel, **per["cache"]},
        orch_env={**otel, **per["orchestrator"]},
        simulator=simulator,
    )
    return stack, passthrough, log_dir


def main(argv: list[str] | None = None) -> int:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    args = parse_args(argv)
    try:
        stack, passthrough, log_dir = build_stack(args.upstream, os.environ)
    except UsageError as exc:
        print(f"make run: {exc}", file=sys.stderr)
        return 2
    state_file = log_dir / "run.json"
    supervisor = Supervisor(stack)
    supervisor.on_change = lambda: write_state(state_file, stack, supervisor, args.upstream)
    # Flags only, from the first spawn on: a stop never leaves a process half started.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, supervisor.request_stop)
    names = ", ".join(s.name for s in stack.planned())
    print(f"starting {names} ...")
    if args.upstream in REAL:
        print("\n".join(REAL_MONEY), file=sys.stderr)
    code = 0
    try:
        error = supervisor.start()
        if error is not None:
            print(f"make run: could not start the stack: {error}", file=sys.stderr)
            code = 1
        elif not supervisor.stop_requested:
            print(banner(stack, args.upstream, passthrough, uses_dev_key(os.environ), log_dir))
            code = supervisor.run()
    finally:
        print("stopping ...")
        stack.stop()
        state_file.unlink(missing_ok=True)
        restarts = {n: w.history.restarts for n, w in supervisor.watched.items()}
        counted = ", ".join(f"{n} {r}" for n, r in restarts.items() if r)
        print(f"stopped{f' (restarts: {counted})' if counted else ''}")
    return code


if __name__ == "__main__":
    sys.exit(main())
