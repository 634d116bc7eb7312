"""``python -m tollgate_operator``: kopf, namespace-scoped, assembled by ``wiring.serve``."""

from __future__ import annotations

import sys

from tollgate_common.service import main
from tollgate_operator.config import OperatorSettings
from tollgate_operator.wiring import serve

if __name__ == "__main__":
    sys.exit(main("operator", OperatorSettings, serve))
