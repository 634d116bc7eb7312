"""``python -m tollgate_orchestrator``: HTTP (uvicorn, httptools) and gRPC on one uvloop loop."""

from __future__ import annotations

import os
import sys

import uvloop

from tollgate_common.config import ConfigError, load_settings
from tollgate_common.logging import setup_logging
from tollgate_common.policy import PolicyError
from tollgate_orchestrator.config import OrchestratorSettings
from tollgate_orchestrator.wiring import serve


def main() -> int:
    # The launcher sets one TOLLGATE_LOG_LEVEL for every service; our own var wins.
    overrides = {}
    if "TOLLGATE_ORCHESTRATOR_LOG_LEVEL" not in os.environ and os.environ.get("TOLLGATE_LOG_LEVEL"):
        overrides["log_level"] = os.environ["TOLLGATE_LOG_LEVEL"]
    try:
        settings = load_settings(OrchestratorSettings, "orchestrator", **overrides)
    except ConfigError as exc:
        print(f"tollgate-orchestrator: configuration error: {exc}", file=sys.stderr)
        return 2
    setup_logging("orchestrator", settings.log_level)
    try:
        return uvloop.run(serve(settings))
    except (ConfigError, PolicyError) as exc:
        print(f"tollgate-orchestrator: configuration error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a port already taken, most often
        print(f"tollgate-orchestrator: cannot start: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
