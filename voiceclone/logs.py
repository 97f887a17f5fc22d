"""Structured logs: one JSON object per line on stdout, in Cloud Logging's shape.

`log_event` is the only way the service logs; callers pass already-safe fields (ids, masked
names, sizes). Secrets, signatures, audio and dates of birth are never handed to it.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import datetime, timezone
from typing import Any

LOGGER_NAME = "precall"
_trace: contextvars.ContextVar[str | None] = contextvars.ContextVar("trace", default=None)


class CloudLoggingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "severity": record.levelname,
            "message": record.getMessage(),
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
            "logger": record.name,
        }
        entry.update(getattr(record, "fields", {}))
        trace = _trace.get()
        if trace:
            entry["logging.googleapis.com/trace"] = trace
        if record.exc_info and record.exc_info[0] is not None:
            entry["error_type"] = record.exc_info[0].__name__
        return json.dumps(entry, ensure_ascii=False, default=str)


class _LateStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to `sys.stdout` as it is at emit time (unless given a stream), so a replaced
    stdout (test capture, a CLI redirect) still gets the lines."""

    def __init__(self, stream: Any = None) -> None:
        logging.Handler.__init__(self)
        self._fixed_stream = stream

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return self._fixed_stream or sys.stdout

    @stream.setter
    def stream(self, value: Any) -> None:
        self._fixed_stream = value


def configure_logging(level: str = "INFO", stream: Any = None) -> None:
    """Send the service's logs (and only them) to stdout (or `stream`) as JSON lines; idempotent."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(level)
    logger.propagate = False
    if not any(getattr(h, "_precall", False) for h in logger.handlers):
        handler = _LateStreamHandler(stream)
        handler.setFormatter(CloudLoggingFormatter())
        handler._precall = True  # type: ignore[attr-defined]
        logger.addHandler(handler)


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(f"{LOGGER_NAME}.{name}")


def log_event(logger: logging.Logger, level: int, message: str, event_type: str, **fields: Any) -> None:
    logger.log(level, message, extra={"fields": {"event_type": event_type, **fields}})


def set_trace(header: str | None, project: str | None) -> None:
    """Correlate this request's logs with its trace (`X-Cloud-Trace-Context: TRACE/SPAN;o=1`)."""
    trace_id = (header or "").split("/", 1)[0].strip()
    if trace_id and trace_id.isalnum():
        _trace.set(f"projects/{project}/traces/{trace_id}" if project else trace_id)
    else:
        _trace.set(None)
