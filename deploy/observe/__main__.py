"""`make observe`: Prometheus and Alertmanager on loopback next to `make run`, until Ctrl-C.

Prometheus scrapes the stack's default ports (orchestrator 8080, router metrics 9101,
cache metrics 9102) and evaluates tollgate's rules; Alertmanager notifies the
integrations whose URL is set in the environment:

  TOLLGATE_ALERT_WEBHOOK_URL   any HTTP endpoint (Alertmanager's webhook JSON)
  TOLLGATE_ALERT_SLACK_URL     a Slack incoming-webhook URL
  TOLLGATE_ALERT_DISCORD_URL   a Discord webhook URL

Ports: TOLLGATE_OBSERVE_PROMETHEUS_PORT (9090), TOLLGATE_OBSERVE_ALERTMANAGER_PORT (9093).
Rendered configs, data and logs go to TOLLGATE_OBSERVE_DIR (.observe/).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from deploy.observe.promstack import (
    MissingBinary,
    Receivers,
    render_alertmanager,
    render_prometheus,
    start_alertmanager,
    start_prometheus,
    write_yaml,
)
from tools.stack import ROOT, Ports, Proc


def _port(name: str, default: int) -> int:
    raw = os.environ.get(name, str(default))
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"{name}={raw!r}: expected a port number") from None


def main() -> int:
    run_dir = Path(os.environ.get("TOLLGATE_OBSERVE_DIR") or ROOT / ".observe")
    prom_port = _port("TOLLGATE_OBSERVE_PROMETHEUS_PORT", 9090)
    am_port = _port("TOLLGATE_OBSERVE_ALERTMANAGER_PORT", 9093)
    stack = Ports.defaults()
    receivers = Receivers(
        webhook_url=os.environ.get("TOLLGATE_ALERT_WEBHOOK_URL") or None,
        slack_url=os.environ.get("TOLLGATE_ALERT_SLACK_URL") or None,
        discord_url=os.environ.get("TOLLGATE_ALERT_DISCORD_URL") or None,
    )
    prom_cfg = write_yaml(
        run_dir / "prometheus.yml",
        render_prometheus(
            {
                "tollgate-orchestrator": f"127.0.0.1:{stack.orch_metrics}",
                "tollgate-router": f"127.0.0.1:{stack.router_metrics}",
                "tollgate-cache": f"127.0.0.1:{stack.cache_metrics}",
            },
            alertmanager=f"127.0.0.1:{am_port}",
        ),
    )
    am_cfg = write_yaml(run_dir / "alertmanager.yml", render_alertmanager(receivers))
    procs: list[Proc] = []
    try:
        procs.append(start_alertmanager(am_cfg, am_port, run_dir / "alertmanager-data", run_dir))
        procs.append(start_prometheus(prom_cfg, prom_port, run_dir / "prometheus-data", run_dir))
    except (MissingBinary, RuntimeError, TimeoutError) as exc:
        print(f"could not start: {exc}", file=sys.stderr)
        for proc in reversed(procs):
            proc.stop()
        return 1
    wired = [n for n, u in vars(receivers).items() if u] or ["none (set TOLLGATE_ALERT_*_URL)"]
    print(
        f"""
observability is up
  Prometheus    http://127.0.0.1:{prom_port}   (alerts: /alerts, targets: /targets)
  Alertmanager  http://127.0.0.1:{am_port}
  scraping      orchestrator :{stack.http}, router :{stack.router_metrics}, \
cache :{stack.cache_metrics}  (start them with `make run`)
  notifying     {", ".join(wired)}
  config, logs  {run_dir}/
  dashboards    import dashboards/json/*.json into Grafana (see the README)

Ctrl-C stops both.""",
        flush=True,
    )
    stopping = False

    def _stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        while not stopping:
            dead = [p.name for p in procs if not p.alive()]
            if dead:
                print(f"{', '.join(dead)} exited; see {run_dir}/", file=sys.stderr)
                return 1
            time.sleep(0.5)
    finally:
        print("stopping ...", flush=True)
        for proc in reversed(procs):
            proc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
