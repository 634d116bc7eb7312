"""``python -m tollgate_orchestrator``: HTTP and gRPC on one uvloop loop, assembled by
``wiring.serve``."""

from __future__ import annotations

import sys

from tollgate_common.service import main
from tollgate_orchestrator.config import OrchestratorSettings
from tollgate_orchestrator.wiring import serve

if __name__ == "__main__":
    sys.exit(main("orchestrator", OrchestratorSettings, serve))
