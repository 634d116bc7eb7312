"""One JSON log format for every service, with the request id and trace of the current task."""

from __future__ import annotations

import contextvars
import logging
import sys
import time
from typing import Any

import orjson

from tollgate_common import tracing

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")

# LogRecord's own attributes, plus uvicorn's ANSI-coloured copy of the message.
_RESERVED = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = request_id_var.get()
        if rid:
            entry["request_id"] = rid
        if tracing.on:
            # Read in the caller's context (a StreamHandler formats in the logging call):
            # unsampled requests carry their ids too, so logs join across the services.
            ids = tracing.ids()
            if ids is not None:
                entry["trace_id"], entry["span_id"], entry["trace_sampled"] = ids
        # Structured extras passed as logger.info("...", extra={...}).
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def setup_logging(service: str, level: str = "INFO") -> None:
    """Route the root logger to stderr as JSON lines; idempotent."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.Formatter.converter = time.gmtime
    # Access logs are replaced by metrics; uvicorn's would log every request line.
    logging.getLogger("uvicorn.access").disabled = True
