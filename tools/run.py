"""`make run`: the whole stack on its embedded defaults, until Ctrl-C."""

from __future__ import annotations

import os
import signal
import sys
import time

from tools.stack import DEV_KEY, ROOT, Ports, Stack


def main() -> int:
    ports = Ports.defaults()
    if os.environ.get("TOLLGATE_HTTP_PORT"):
        ports.http = int(os.environ["TOLLGATE_HTTP_PORT"])
    log_dir = ROOT / ".run"
    stack = Stack(log_dir=log_dir, ports=ports, env={"TOLLGATE_LOG_LEVEL": "INFO"})
    print("starting simulator, router, cache and orchestrator ...", flush=True)
    try:
        stack.start()
    except Exception as exc:  # a busy port or a bad setting: say which, then stop
        print(f"could not start the stack: {exc}", file=sys.stderr)
        return 1
    keys_set = bool(os.environ.get("TOLLGATE_ORCHESTRATOR_API_KEYS"))
    print(f"""
tollgate is up
  API        {stack.base_url}/v1   (OpenAI-compatible)
  metrics    {stack.base_url}/metrics
             router http://127.0.0.1:{ports.router_metrics}/metrics
             cache  http://127.0.0.1:{ports.cache_metrics}/metrics
  upstream   built-in simulator at {stack.sim_url}
  logs       {log_dir}/""")
    if not keys_set:
        print(f"""  key        {DEV_KEY}  (tenant "dev")
  WARNING: no API keys configured; the dev key is for local use only.""")
    print(
        f"""
try it:
  curl -s {stack.base_url}/v1/chat/completions \\
    -H "Authorization: Bearer {DEV_KEY}" -H "Content-Type: application/json" \\
    -d '{{"model": "auto", "messages": [{{"role": "user",
          "content": "Write a Python function that reverses a string"}}]}}'

Ctrl-C stops everything.""",
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
            dead = [p.name for p in stack.procs.values() if not p.alive()]
            if dead:
                print(f"{', '.join(dead)} exited; see {log_dir}/", file=sys.stderr)
                break
            time.sleep(0.5)
    finally:
        print("stopping ...", flush=True)
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
