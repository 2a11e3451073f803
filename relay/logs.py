"""Log output: human-readable text, or one JSON object per line for log collectors.

Code logs context as `extra=` fields (app_id, socket_id, channel, code, ...); the JSON format writes
them as keys of the line, the text format appends them as key=value. Never pass secrets, auth
signatures or tokens as fields.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Final, Literal

import orjson

LogFormat = Literal["text", "json"]
LOG_FORMATS: Final = ("text", "json")

# The context fields relay's code passes with `extra=`; only these are written, so an unrelated
# attribute that a library sets on its records never leaks into the output.
CONTEXT_FIELDS: Final = (
    "app_id",
    "socket_id",
    "channel",
    "event",
    "code",
    "reason",
    "remote",
    "url",
    "status",
    "attempt",
    "node",
    "duration",
)


def _context(record: logging.LogRecord) -> dict[str, object]:
    return {name: value for name in CONTEXT_FIELDS if (value := record.__dict__.get(name)) is not None}


class JsonFormatter(logging.Formatter):
    """`{"time", "level", "logger", "message", ...context}` on one line; exceptions as `exc_info` text."""

    def converter(self, seconds: float | None) -> time.struct_time:
        return time.gmtime(seconds)  # the "Z" in the time stamp says UTC

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **_context(record),
        }
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        context = _context(record)
        if not context:
            return text
        return text + " " + " ".join(f"{name}={value}" for name, value in context.items())


def configure_logging(level: str, log_format: LogFormat) -> None:
    """Root logging to stderr in the chosen format (called once, by the CLI)."""
    handler = logging.StreamHandler(sys.stderr)
    formatter: logging.Formatter = JsonFormatter() if log_format == "json" else TextFormatter()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
