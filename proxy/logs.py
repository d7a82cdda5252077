"""Structured logs: one JSON object a line, carrying the request id of the request being served."""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from typing import TextIO

from pythonjsonlogger.json import JsonFormatter

REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class RequestIdFilter(logging.Filter):
    """Stamps every record logged while a request is served with that request's id."""

    def filter(self, record: logging.LogRecord) -> bool:
        rid = REQUEST_ID.get()
        if rid is not None and not hasattr(record, "request_id"):
            record.request_id = rid
        return True


def setup(level: str = "INFO", stream: TextIO | None = None) -> None:
    """Send all logging to `stream` (stderr) as JSON lines at `level` and above."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(
        "{levelname}{name}{message}", style="{", timestamp="ts",
        rename_fields={"levelname": "level", "name": "logger", "message": "msg"},
        json_ensure_ascii=False))
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log would duplicate ours; its server errors are handled at the edge.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
