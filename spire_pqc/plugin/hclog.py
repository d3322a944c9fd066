"""Log records as hclog JSON lines, the stderr format SPIRE re-logs at the right level.

A plugin's stderr becomes SPIRE's log output, one line at a time. go-plugin parses a line that is a JSON
object with ``@level``, ``@message`` and ``@timestamp`` and logs it at that level; every other key becomes a
key/value pair of the entry (``hashicorp/go-plugin:log_entry.go@v1.8.0``, ``client.go`` logStderr).
Two hazards shape this module (``hashicorp/go-plugin:client.go@v1.8.0`` logStderr):

- the host converts those three values with unchecked type assertions, so a non-string value panics a
  goroutine inside spire-server: they are always written as JSON strings;
- ``@timestamp`` must use the Go layout ``2006-01-02T15:04:05.000000Z07:00`` (exactly six fractional
  digits), or the whole line is logged as raw text at Debug.

Lines longer than go-plugin's 64 KiB read buffer arrive split and unparsed, so messages are truncated.

Only the plugin's entry point installs :class:`HclogHandler`; library code just uses ``logging``.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

# Keys go-plugin treats specially; a record attribute must never overwrite them.
LEVEL_KEY = "@level"
MESSAGE_KEY = "@message"
TIMESTAMP_KEY = "@timestamp"
MODULE_KEY = "@module"

# go-plugin reads lines through a 64 KiB buffer (defaultPluginLogBufferSize); stay well below it.
MAX_MESSAGE_CHARS = 16 * 1024
MAX_EXCEPTION_CHARS = 16 * 1024

# Python has no TRACE level; anything below DEBUG is reported as hclog's "trace".
_LEVELS = (
    (logging.ERROR, "error"),
    (logging.WARNING, "warn"),
    (logging.INFO, "info"),
    (logging.DEBUG, "debug"),
)

# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is passed on as a pair.
_STANDARD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


def hclog_level(levelno: int) -> str:
    """hclog's name for a Python logging level (CRITICAL maps to "error", the highest hclog level)."""
    for threshold, name in _LEVELS:
        if levelno >= threshold:
            return name
    return "trace"


def go_timestamp(created: float) -> str:
    """``created`` (Unix seconds) in Go's ``2006-01-02T15:04:05.000000Z07:00`` layout, in UTC."""
    return datetime.fromtimestamp(created, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} characters truncated]"


def _json_safe(value: Any) -> Any:
    """Keep JSON scalars as they are (the host passes them on as values); anything else becomes its str()."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


class HclogFormatter(logging.Formatter):
    """Formats a record as one hclog JSON line (no trailing newline)."""

    def format(self, record: logging.LogRecord) -> str:
        """Return the JSON object for ``record``; the three hclog keys are always strings."""
        entry: dict[str, Any] = {}
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = _json_safe(value)
        entry[LEVEL_KEY] = hclog_level(record.levelno)
        entry[MESSAGE_KEY] = _truncate(str(record.getMessage()), MAX_MESSAGE_CHARS)
        entry[TIMESTAMP_KEY] = go_timestamp(record.created)
        entry[MODULE_KEY] = record.name
        if record.exc_info:
            entry["error"] = _truncate(self.formatException(record.exc_info), MAX_EXCEPTION_CHARS)
        elif record.exc_text:
            entry["error"] = _truncate(record.exc_text, MAX_EXCEPTION_CHARS)
        # ensure_ascii keeps the line valid whatever the stream's encoding; json never emits a raw newline.
        return json.dumps(entry, ensure_ascii=True, default=str)


class HclogHandler(logging.StreamHandler[TextIO]):
    """A stream handler (stderr by default) that writes :class:`HclogFormatter` lines."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream if stream is not None else sys.stderr)
        self.setFormatter(HclogFormatter())
