"""Strict, bounded JSON for documents that come from outside (tokens, bundles, signatures).

Duplicate object members are refused (two parsers could each pick a different one), as are the
non-JSON constants ``NaN``/``Infinity``; nesting depth and size are bounded so that a hostile input
costs at most linear time and memory. The caller names the error type to raise, so each format
keeps its own typed error from :mod:`spire_pqc.errors`.
"""

from __future__ import annotations

import json
from typing import Any

from spire_pqc.errors import SpirePqcError

#: Deeper than any document spire-pqc reads (a JWK Set is three levels); far below the interpreter's
#: recursion limit, so a deeply nested input is refused before json recurses into it.
MAX_DEPTH = 16


class _Refused(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _Refused(f"duplicate JSON member {key[:80]!r}")
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise _Refused(f"{name} is not JSON")


def _depth_ok(text: str) -> bool:
    # Brackets inside strings count too, so this over-estimates: it can only refuse early, never
    # let a deeper document through.
    depth = 0
    for char in text:
        if char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return False
        elif char in "]}":
            depth -= 1
    return True


def loads(data: bytes | str, *, what: str, max_bytes: int, error: type[SpirePqcError]) -> Any:
    """Parse ``data`` as one strict JSON value, or raise ``error`` naming ``what``."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    if len(raw) > max_bytes:
        raise error(f"{what}: {len(raw)} bytes exceeds the limit of {max_bytes}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{what}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    if not _depth_ok(text):
        raise error(f"{what}: JSON nested deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except _Refused as exc:
        raise error(f"{what}: {exc}") from None
    except RecursionError:
        raise error(f"{what}: JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, and int-to-str digit limits
        raise error(f"{what}: invalid JSON ({str(exc)[:120]})") from None


def dumps_compact(value: Any) -> bytes:
    """Deterministic compact JSON (sorted members, no whitespace), as RFC 7638 thumbprints need."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode("utf-8")
