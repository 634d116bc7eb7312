"""``python -m tollgate_router``: the router, assembled by ``wiring.serve``."""

from __future__ import annotations

import sys

from tollgate_common.service import main
from tollgate_router.config import RouterSettings
from tollgate_router.wiring import serve

if __name__ == "__main__":
    sys.exit(main("router", RouterSettings, serve))
