"""``python -m tollgate_cache``: the cache, assembled by ``wiring.serve``."""

from __future__ import annotations

import sys

from tollgate_cache.config import CacheSettings
from tollgate_cache.wiring import serve
from tollgate_common.service import main

if __name__ == "__main__":
    sys.exit(main("cache", CacheSettings, serve))
