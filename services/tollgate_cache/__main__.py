"""``python -m tollgate_cache``: load settings, log JSON, serve until SIGTERM."""

from __future__ import annotations

import sys

import uvloop

from tollgate_cache.app import serve
from tollgate_cache.config import CacheSettings
from tollgate_common.config import ConfigError, load_settings
from tollgate_common.logging import setup_logging


def main() -> int:
    try:
        settings = load_settings(CacheSettings, "cache")
    except ConfigError as exc:
        print(f"tollgate-cache: bad configuration: {exc}", file=sys.stderr)
        return 2
    setup_logging("cache", settings.log_level)
    uvloop.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
