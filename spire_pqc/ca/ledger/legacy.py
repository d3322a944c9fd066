"""The JSON-lines ledger of spire-pqc ≤ 0.1 (plugin_data ``ledger_path``), read once and imported.

Each line was one issuance: ``{"serial", "keys", "expires", "pqc", "kem", "bundle"}`` (chains as
base64 DER). The reader is strict: a line that is not UTF-8, not JSON (or nested too deep), or not
of that shape is a ParseError naming its line, so nothing is silently dropped. The one exception is
a torn *last* line without its newline: the writer crashed while appending it, before the response
left the CA, so it never reached anyone; it is skipped with a warning.

After a successful import the file is renamed ``<name>.imported`` so it is imported only once.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from spire_pqc.ca.ledger.model import LedgerEntry
from spire_pqc.ca.request import IssueResponse
from spire_pqc.errors import ParseError

log = logging.getLogger(__name__)

MAX_LINE = 1 << 20  # a line held one response (~40 KB); anything near this is not ours


@dataclass(frozen=True)
class LegacyLine:
    number: int
    entry: LedgerEntry


def read_legacy(path: Path, *, freshness: dt.timedelta) -> Iterator[LegacyLine]:
    """Yield every entry of the file (expired ones too), or raise ParseError naming the bad line."""
    with path.open("rb") as handle:
        raw_lines = handle.read().split(b"\n")
    torn_tail = raw_lines[-1] != b""  # no newline after the last line
    for index, raw in enumerate(raw_lines):
        number = index + 1
        if not raw.strip():
            continue
        try:
            entry = _decode(raw, freshness)
        except (ValueError, KeyError, TypeError, RecursionError, binascii.Error) as exc:
            if torn_tail and index == len(raw_lines) - 1:
                log.warning(
                    "%s: last line %d is torn (the CA stopped while writing it; it was never answered): skipped",
                    path,
                    number,
                )
                return
            raise ParseError(f"{path}: line {number} is corrupt ({type(exc).__name__}: {exc})"[:500]) from exc
        yield LegacyLine(number, entry)


def _decode(raw: bytes, freshness: dt.timedelta) -> LedgerEntry:
    if len(raw) > MAX_LINE:
        raise ValueError(f"longer than {MAX_LINE} bytes")
    data = json.loads(raw.decode("utf-8"))  # UnicodeDecodeError is a ValueError
    if not isinstance(data, dict):
        raise TypeError("not a JSON object")

    def text(key: str) -> str:
        value = data[key]
        if not isinstance(value, str):
            raise TypeError(f"{key!r} is not a string")
        return value

    def chain(key: str, *, allow_empty: bool = False) -> tuple[bytes, ...]:
        value: Any = data[key]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise TypeError(f"{key!r} is not a list of base64 strings")
        if not value and not allow_empty:
            raise ValueError(f"{key!r} is empty")
        return tuple(base64.b64decode(v, validate=True) for v in value)

    expires = dt.datetime.fromisoformat(text("expires"))
    if expires.tzinfo is None:
        raise ValueError("'expires' has no time zone")
    response = IssueResponse(chain("pqc"), chain("kem"), chain("bundle", allow_empty=True))
    leaf = x509.load_der_x509_certificate(response.pqc_svid_chain[0])
    uris = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    spiffe_ids = uris.get_values_for_type(x509.UniformResourceIdentifier)
    if len(spiffe_ids) != 1:
        raise ValueError("the stored PQC SVID does not carry exactly one SPIFFE ID")
    keys = text("keys")
    if len(keys) != 64:
        raise ValueError("'keys' is not a SHA-256 fingerprint")
    return LedgerEntry(
        serial_key=text("serial"),
        keys_fingerprint=keys,
        spiffe_id=spiffe_ids[0],
        issuer_key_id="legacy",
        issued=leaf.not_valid_before_utc,
        expires=expires + freshness,
        response=response,
    )


class LegacyImport:
    """``on_ready`` hook of a ledger: imports the file's unexpired entries, then renames the file."""

    def __init__(
        self,
        path: Path,
        *,
        database: str,
        freshness: dt.timedelta,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.path = path
        self._database = database
        self._freshness = freshness
        self._clock = clock

    def __call__(self, record: Callable[[LedgerEntry], LedgerEntry]) -> None:
        if not self.path.exists():
            return
        now = self._clock()
        imported = expired = conflicts = 0
        for line in read_legacy(self.path, freshness=self._freshness):
            if line.entry.expires < now:
                expired += 1
                continue
            stored = record(line.entry)
            if stored.keys_fingerprint != line.entry.keys_fingerprint:
                conflicts += 1
                log.warning(
                    "security event: %s line %d: classical SVID %s was answered twice with different keys "
                    "before the shared ledger existed; the ledger keeps the first answer",
                    self.path,
                    line.number,
                    line.entry.serial_key,
                )
            else:
                imported += 1
        done = self.path.with_name(self.path.name + ".imported")
        try:
            self.path.rename(done)
        except OSError as exc:  # imported anyway; a second import is harmless (same rows)
            log.warning("imported %s but could not rename it to %s: %s", self.path, done, exc.strerror)
            done = self.path
        log.info(
            "imported the JSON-lines ledger %s into %s: %d entries, %d expired skipped, %d conflicts; "
            "the file is now %s",
            self.path,
            self._database,
            imported,
            expired,
            conflicts,
            done,
        )
