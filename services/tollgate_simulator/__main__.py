"""``python -m tollgate_simulator``: the simulator, assembled by ``wiring.serve``."""

from __future__ import annotations

import sys

from tollgate_common.service import main
from tollgate_simulator.config import SimSettings
from tollgate_simulator.wiring import serve

if __name__ == "__main__":
    # It stands for a provider: its spans would not be tollgate's.
    sys.exit(main("simulator", SimSettings, serve, traced=False))
