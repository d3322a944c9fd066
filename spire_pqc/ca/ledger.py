"""Replay protection and the one-issuance-per-classical-SVID rule.

The ledger remembers, per classical SVID (issuer DN, serial), which PQC keys were certified and
what was issued, until the classical SVID expires. A retry with the *same* keys gets the same
certificates back (idempotent); a request with *different* keys is refused as a security event.
Nonces are remembered for the freshness window. The file-backed ledger appends JSON lines (0600)
so the rule survives a restart of the CA process.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from spire_pqc.ca.request import IssueResponse
from spire_pqc.errors import CorruptKeyFileError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LedgerEntry:
    serial_key: str  # "<issuer DN rfc4514>|<serial hex>"
    keys_fingerprint: str  # SHA-256 over both PQC SPKIs, hex
    expires: dt.datetime
    response: IssueResponse


class IssuanceLedger:
    """In-memory ledger; :class:`FileLedger` adds persistence."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, LedgerEntry] = {}
        self._nonces: dict[bytes, dt.datetime] = {}

    def seen_nonce(self, nonce: bytes, *, now: dt.datetime, window: dt.timedelta) -> bool:
        """Record ``nonce``; True if it was already seen within ``window``."""
        with self._lock:
            self._prune_nonces(now, window)
            if nonce in self._nonces:
                return True
            self._nonces[nonce] = now
            return False

    def _prune_nonces(self, now: dt.datetime, window: dt.timedelta) -> None:
        if len(self._nonces) < 4096:
            return
        cutoff = now - 2 * window
        self._nonces = {n: t for n, t in self._nonces.items() if t >= cutoff}

    def lookup(self, serial_key: str, *, now: dt.datetime) -> LedgerEntry | None:
        with self._lock:
            entry = self._entries.get(serial_key)
            if entry is not None and entry.expires < now:
                del self._entries[serial_key]
                return None
            return entry

    def record(self, entry: LedgerEntry) -> None:
        with self._lock:
            self._entries[entry.serial_key] = entry

    def __len__(self) -> int:
        return len(self._entries)


def _encode(entry: LedgerEntry) -> str:
    def chain(items: tuple[bytes, ...]) -> list[str]:
        return [base64.b64encode(c).decode() for c in items]

    return json.dumps(
        {
            "serial": entry.serial_key,
            "keys": entry.keys_fingerprint,
            "expires": entry.expires.isoformat(),
            "pqc": chain(entry.response.pqc_svid_chain),
            "kem": chain(entry.response.kem_certificate_chain),
            "bundle": chain(entry.response.pqc_bundle),
        },
        separators=(",", ":"),
    )


def _decode(line: str) -> LedgerEntry:
    raw = json.loads(line)

    def chain(items: list[str]) -> tuple[bytes, ...]:
        return tuple(base64.b64decode(c, validate=True) for c in items)

    return LedgerEntry(
        serial_key=str(raw["serial"]),
        keys_fingerprint=str(raw["keys"]),
        expires=dt.datetime.fromisoformat(raw["expires"]),
        response=IssueResponse(chain(raw["pqc"]), chain(raw["kem"]), chain(raw["bundle"])),
    )


class FileLedger(IssuanceLedger):
    """A ledger persisted as JSON lines; expired entries are compacted away on open."""

    def __init__(self, path: str | os.PathLike[str], *, now: dt.datetime | None = None) -> None:
        super().__init__()
        self._path = Path(path)
        self._path.parent.mkdir(parents=True, exist_ok=True)
        current = now or dt.datetime.now(dt.UTC)
        kept: list[LedgerEntry] = []
        if self._path.exists():
            for number, line in enumerate(self._path.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    entry = _decode(line)
                except (ValueError, KeyError, TypeError) as exc:
                    raise CorruptKeyFileError(
                        f"issuance ledger line {number} is corrupt ({exc})", path=str(self._path)
                    ) from exc
                if entry.expires >= current:
                    kept.append(entry)
        for entry in kept:
            self._entries[entry.serial_key] = entry
        self._rewrite(kept)

    def _rewrite(self, entries: list[LedgerEntry]) -> None:
        from spire_pqc._internal.files import atomic_write

        atomic_write(self._path, "".join(_encode(e) + "\n" for e in entries).encode(), mode=0o600)

    def record(self, entry: LedgerEntry) -> None:
        super().record(entry)
        fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (_encode(entry) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
