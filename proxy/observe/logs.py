"""Structured logs: one JSON object a line, carrying the request id of the request being served, and the
process that wrote it (its pid, and with `--workers` the worker's index), so the lines of several
processes sharing one stream can be told apart.

Everything goes through `logging`, except the access line (one per request), which has a
path of its own: the same JSON object, written in batches, because at INFO the logging
module cost the proxy more than the proxying did.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from contextvars import ContextVar
from datetime import datetime, timezone
from json.encoder import encode_basestring
from typing import Any, TextIO

from pythonjsonlogger.json import JsonFormatter

REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class RequestIdFilter(logging.Filter):
    """Stamps every record with the process that wrote it and, while a request is served, that request's
    id."""

    def __init__(self, worker: int | None = None) -> None:
        super().__init__()
        self.pid, self.worker = os.getpid(), worker

    def filter(self, record: logging.LogRecord) -> bool:
        rid = REQUEST_ID.get()
        if rid is not None and not hasattr(record, "request_id"):
            record.request_id = rid
        record.pid = self.pid
        if self.worker is not None:
            record.worker = self.worker
        return True


ACCESS = "strangler.access"
_stream: TextIO | None = None  # where setup() sent the logs; stderr until then
_process = ""  # the access line's pid (and worker) fields, as setup() found them


class AccessLog:
    """One JSON line per request, as `logging` would write it, written every 50 ms (or 256 lines)."""

    FLUSH_SECONDS, FLUSH_LINES = 0.05, 256

    def __init__(self) -> None:
        self._logger = logging.getLogger(ACCESS)
        self.enabled = self._logger.isEnabledFor  # whether a line at a level would be written: asked per request
        self._lines: list[str] = []
        self._second, self._prefix = -1, ""

    def write(self, level: int, msg: str, fields: dict[str, Any]) -> None:
        if not self._logger.isEnabledFor(level):
            return
        # What json.dumps would write, without building a dict for it: the keys are fixed.
        pairs = "".join(f', "{key}": {_json(value)}' for key, value in fields.items())
        self._lines.append(f'{{"level": "{logging.getLevelName(level)}", "logger": "{ACCESS}", "msg": {_json(msg)}'
                           f'{pairs}{_process}, "ts": "{self._now()}"}}')
        if len(self._lines) == 1:
            asyncio.get_running_loop().call_later(self.FLUSH_SECONDS, self.flush)
        elif len(self._lines) >= self.FLUSH_LINES:
            self.flush()

    def _now(self) -> str:
        """The ISO time logging would write, its date and second formatted once a second."""
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = datetime.fromtimestamp(second, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._prefix}.{int((now - second) * 1e6):06d}+00:00"

    def flush(self) -> None:
        if self._lines:
            stream = _stream or sys.stderr
            stream.write("\n".join(self._lines) + "\n")
            stream.flush()
            self._lines.clear()


def _json(value: Any) -> str:
    if isinstance(value, str):
        return encode_basestring(value)
    if value is None or isinstance(value, (bool, int, float)):
        return json.dumps(value)
    return encode_basestring(str(value))


def setup(level: str = "INFO", stream: TextIO | None = None, worker: int | None = None) -> None:
    """Send all logging to `stream` (stderr) as JSON lines at `level` and above; `worker`: this process's
    index under `--workers`."""
    global _stream, _process
    _stream = stream
    _process = f', "pid": {os.getpid()}' + (f', "worker": {worker}' if worker is not None else "")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(
        "{levelname}{name}{message}", style="{", timestamp="ts",
        rename_fields={"levelname": "level", "name": "logger", "message": "msg"},
        json_ensure_ascii=False))
    handler.addFilter(RequestIdFilter(worker))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log would duplicate ours; its server errors are handled at the edge.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
