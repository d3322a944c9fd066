"""spire_pqc.plugin.hclog writes lines go-plugin parses: string @level/@message/@timestamp, Go time layout."""

from __future__ import annotations

import io
import json
import logging
import sys
from datetime import UTC, datetime

import pytest

from spire_pqc.plugin.hclog import (
    MAX_MESSAGE_CHARS,
    HclogFormatter,
    HclogHandler,
    go_timestamp,
    hclog_level,
)


def _record(
    msg: str = "hello %s", args: tuple[object, ...] = ("world",), extra: dict[str, object] | None = None
) -> logging.LogRecord:
    return logging.getLogger("spire_pqc.test").makeRecord(
        "spire_pqc.test", logging.INFO, __file__, 1, msg, args, None, extra=extra
    )


@pytest.mark.parametrize(
    ("levelno", "name"),
    [
        (5, "trace"),
        (logging.DEBUG, "debug"),
        (logging.INFO, "info"),
        (logging.WARNING, "warn"),
        (logging.ERROR, "error"),
        (logging.CRITICAL, "error"),
    ],
)
def test_levels_map_to_hclog_names(levelno: int, name: str) -> None:
    assert hclog_level(levelno) == name


def test_timestamp_uses_the_go_layout_with_six_fraction_digits() -> None:
    assert go_timestamp(0.0) == "1970-01-01T00:00:00.000000Z"
    assert go_timestamp(1.5) == "1970-01-01T00:00:01.500000Z"
    moment = datetime(2026, 8, 21, 12, 34, 56, 789012, tzinfo=UTC)
    assert go_timestamp(moment.timestamp()) == "2026-08-21T12:34:56.789012Z"


def test_a_record_becomes_one_json_line_with_string_hclog_keys() -> None:
    line = HclogFormatter().format(
        _record(extra={"request_id": 7, "peer": object(), "note": "caf\u00e9\nbar"})
    )
    assert "\n" not in line
    assert line.isascii()
    entry = json.loads(line)
    assert entry["@level"] == "info"
    assert entry["@message"] == "hello world"
    assert entry["@module"] == "spire_pqc.test"
    assert entry["request_id"] == 7
    assert isinstance(entry["peer"], str)
    assert entry["note"] == "caf\u00e9\nbar"


def test_extra_fields_cannot_turn_the_hclog_keys_into_non_strings() -> None:
    # A non-string @level/@message/@timestamp would panic a goroutine inside spire-server.
    entry = json.loads(
        HclogFormatter().format(_record(extra={"@level": 3, "@timestamp": 1.0, "@message": None}))
    )
    assert entry["@level"] == "info"
    assert entry["@message"] == "hello world"
    assert isinstance(entry["@timestamp"], str)


def test_exceptions_go_to_an_error_pair() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logging.getLogger("x").makeRecord(
            "x", logging.ERROR, __file__, 1, "failed", (), exc_info=sys.exc_info()
        )
    entry = json.loads(HclogFormatter().format(record))
    assert entry["@message"] == "failed"
    assert entry["error"].startswith("Traceback")
    assert "RuntimeError: boom" in entry["error"]


def test_long_messages_are_truncated_below_go_plugins_line_buffer() -> None:
    line = HclogFormatter().format(_record("%s", ("x" * 200_000,)))
    assert len(line.encode()) < 64 * 1024
    assert json.loads(line)["@message"].endswith("characters truncated]")
    assert len(json.loads(line)["@message"]) > MAX_MESSAGE_CHARS


def test_handler_writes_lines_to_its_stream() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("spire_pqc.test.handler")
    logger.propagate = False
    handler = HclogHandler(stream)
    logger.addHandler(handler)
    try:
        logger.warning("first")
        logger.error("second")
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert [(json.loads(x)["@level"], json.loads(x)["@message"]) for x in lines] == [
        ("warn", "first"),
        ("error", "second"),
    ]
