"""Durations as SPIRE operators write them: Go's ``time.ParseDuration`` syntax, positive, with units.

A duration is one or more decimal numbers, each followed by a unit, with no sign and no spaces:
``"90s"``, ``"1h30m"``, ``"500ms"``, ``"0.5s"``, ``"1.5h"``. Units: ``h``, ``m``, ``s``, ``ms``,
``us`` (or ``µs``) and ``ns``, as in SPIRE's own ``default_x509_svid_ttl = "1h"``. A bare number
(``30``) is refused in every configuration file: Go refuses it too, and a number alone does not
say whether it means seconds or milliseconds. The value is kept to the microsecond (``timedelta``);
anything shorter than one microsecond, zero included, is refused, because every duration in our
configuration is a lifetime, an interval or a timeout that must pass.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

__all__ = ["MAX_DURATION_TEXT", "format_duration", "parse_duration"]

#: Longer text is refused before any parsing (a configuration never needs more).
MAX_DURATION_TEXT = 64

_MICROSECONDS = {
    "h": Decimal(3_600_000_000),
    "m": Decimal(60_000_000),
    "s": Decimal(1_000_000),
    "ms": Decimal(1_000),
    "us": Decimal(1),
    "µs": Decimal(1),
    "ns": Decimal("0.001"),
}
# Alternation order matters: "ms" before "m" and "s", "ns"/"us" before "s".
_TERM = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|us|µs|ns|h|m|s)")
_EXAMPLES = "a duration with units like '30s', '5m', '1h30m' or '500ms'"


def parse_duration(value: object) -> dt.timedelta:
    """The positive duration ``value`` names; ValueError saying why not (the value quoted, bounded)."""
    if isinstance(value, bool) or not isinstance(value, str):
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = repr(value) if len(repr(value)) <= 20 else "a number"
            raise ValueError(f"{number} has no unit: write {_EXAMPLES} (a bare number is not a duration)")
        raise ValueError(f"must be {_EXAMPLES}")
    if len(value) > MAX_DURATION_TEXT:
        raise ValueError(f"must be {_EXAMPLES}, at most {MAX_DURATION_TEXT} characters long")
    position, total = 0, Decimal(0)
    for term in _TERM.finditer(value):
        if term.start() != position:
            break
        total += Decimal(term.group(1)) * _MICROSECONDS[term.group(2)]
        position = term.end()
    if not value or position != len(value):
        if value.replace(".", "", 1).isdigit():
            raise ValueError(f"{value!r} has no unit: write {_EXAMPLES}")
        raise ValueError(f"{value!r} is not {_EXAMPLES}")
    microseconds = int(total)  # truncated, as Go truncates to its nanoseconds
    if microseconds < 1:
        raise ValueError(f"{value!r} must be positive (at least 1us)")
    try:
        return dt.timedelta(microseconds=microseconds)
    except OverflowError:
        raise ValueError(f"{value!r} is longer than any usable duration") from None


def format_duration(value: dt.timedelta) -> str:
    """``value`` in the same syntax, shortest form: ``1h30m``, ``60s``, ``500ms``, ``1.5s``."""
    microseconds = value // dt.timedelta(microseconds=1)
    if microseconds <= 0:
        raise ValueError("only positive durations have a configuration syntax")
    seconds, fraction = divmod(microseconds, 1_000_000)
    if seconds == 0:
        return f"{fraction // 1000}ms" if fraction % 1000 == 0 else f"{fraction}us"
    hours, rest = divmod(seconds, 3600)
    minutes, whole_seconds = divmod(rest, 60)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "")
    if fraction:
        return text + f"{whole_seconds}.{fraction:06d}".rstrip("0") + "s"
    return text + (f"{whole_seconds}s" if whole_seconds or not text else "")
