"""One duration grammar for both configuration files: Go's time.ParseDuration syntax, positive, with units."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spire_pqc.config import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", dt.timedelta(seconds=30)),
        ("5m", dt.timedelta(minutes=5)),
        ("1h30m", dt.timedelta(hours=1, minutes=30)),
        ("1h0m0s", dt.timedelta(hours=1)),  # what Go's Duration.String() prints
        ("0.5s", dt.timedelta(milliseconds=500)),
        (".25s", dt.timedelta(milliseconds=250)),
        ("1.5h", dt.timedelta(minutes=90)),
        ("500ms", dt.timedelta(milliseconds=500)),
        ("250us", dt.timedelta(microseconds=250)),
        ("250µs", dt.timedelta(microseconds=250)),
        ("1500ns", dt.timedelta(microseconds=1)),  # kept to the microsecond, truncated as Go truncates
        ("2m30s500ms", dt.timedelta(minutes=2, seconds=30, milliseconds=500)),
        ("2400h", dt.timedelta(days=100)),
    ],
)
def test_go_durations(text: str, expected: dt.timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (30, "30 has no unit: write a duration with units"),
        (0.5, "0.5 has no unit"),
        ("30", "'30' has no unit"),
        ("0", "'0' has no unit"),
        ("0s", "must be positive"),
        ("1ns", "must be positive (at least 1us)"),
        ("-3s", "is not a duration"),
        ("+3s", "is not a duration"),
        ("1d", "is not a duration"),  # Go has no days either
        ("5x", "is not a duration"),
        ("1h 30m", "is not a duration"),
        (" 30s", "is not a duration"),
        ("", "is not a duration"),
        ("soon", "'soon' is not a duration"),
        (True, "must be a duration"),
        (None, "must be a duration"),
        (["30s"], "must be a duration"),
        ("9" * 40 + "h", "longer than any usable duration"),
        ("1s" * 40, "at most 64 characters"),
    ],
)
def test_everything_else_is_refused_saying_why(value: object, why: str) -> None:
    with pytest.raises(ValueError, match=why.replace("(", r"\(").replace(")", r"\)")):
        parse_duration(value)


@given(st.timedeltas(min_value=dt.timedelta(microseconds=1), max_value=dt.timedelta(days=10**6)))
def test_formatted_durations_parse_back(value: dt.timedelta) -> None:
    assert parse_duration(format_duration(value)) == value


@given(st.text(max_size=80))
def test_any_text_is_a_duration_or_a_value_error(text: str) -> None:
    try:
        value = parse_duration(text)
    except ValueError as exc:
        assert str(exc)
    else:
        assert value > dt.timedelta(0)
