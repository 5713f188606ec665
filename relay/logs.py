"""JSON log lines carrying the request or delivery id. No bodies or full addresses at INFO."""

from __future__ import annotations

import logging
import re
import sys
import time
from contextvars import ContextVar
from typing import Any

import pythonjsonlogger.json

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)

# Terminal colour codes some libraries put in their messages (werkzeug's development server).
_ANSI_STYLE = re.compile(r"\x1b\[[0-9;]*m")


class JsonFormatter(pythonjsonlogger.json.JsonFormatter):
    """python-json-logger's formatter: `time`, `level`, `logger`, `message`, the request id when
    there is one, then whatever the call passed in `extra`; tracebacks under `error`."""

    def __init__(self) -> None:
        super().__init__(
            "{levelname}{name}{message}",
            style="{",
            rename_fields={"levelname": "level", "name": "logger", "exc_info": "error"},
            timestamp="time",
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 (logging's name)
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        fields: dict[str, Any] = {}
        super().add_fields(fields, record, message_dict)
        log_data["time"] = self.formatTime(record)
        log_data["level"] = record.levelname.lower()
        log_data["logger"] = record.name
        log_data["message"] = _ANSI_STYLE.sub("", str(fields.pop("message", "")))
        rid = request_id.get()
        if rid:
            log_data["request_id"] = rid
        log_data.update((k, v) for k, v in fields.items() if not k.startswith("_") and k not in log_data)


def configure_logging(level: str = "INFO") -> None:
    """JSON lines on stdout for every logger of the process (one format for the container's log)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Dramatiq logs message ids and retries at INFO; its per-message chatter is DEBUG already.
    logging.getLogger("urllib3").setLevel(logging.WARNING)


def gunicorn_logconfig(level: str = "INFO") -> dict[str, Any]:
    """gunicorn's `logconfig_dict`: its own messages as the same JSON lines on stdout."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"stdout": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"}},
        "root": {"level": level.upper(), "handlers": ["stdout"]},
        "loggers": {
            "gunicorn.error": {"level": level.upper(), "handlers": ["stdout"], "propagate": False},
            "gunicorn.access": {"level": level.upper(), "handlers": ["stdout"], "propagate": False},
        },
    }
