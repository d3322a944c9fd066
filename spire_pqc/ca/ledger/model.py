"""What the issuance ledger stores, and the interface every database implements."""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Self

from spire_pqc._internal import der
from spire_pqc.ca.request import IssueResponse
from spire_pqc.errors import ParseError

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def to_ms(when: dt.datetime) -> int:
    """Unix milliseconds (the ledger's time unit: one BIGINT column type in every database)."""
    return (when - _EPOCH) // dt.timedelta(milliseconds=1)


def from_ms(ms: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(milliseconds=ms)


@dataclass(frozen=True)
class LedgerEntry:
    """One issuance: the classical SVID it answered, the PQC keys it certified, what was returned."""

    serial_key: str  # the classical SVID: "<issuer DN, RFC 4514>|<serial, hex>" (as the 0.1 file ledger)
    keys_fingerprint: str  # SHA-256 over both PQC SubjectPublicKeyInfos, hex
    spiffe_id: str
    issuer_key_id: str  # which intermediate PQC CA issued it (SPIRE HA: which server), hex
    issued: dt.datetime
    expires: dt.datetime  # classical notAfter + freshness window: removed by prune() after this
    response: IssueResponse


@dataclass(frozen=True)
class LedgerSize:
    issuances: int
    nonces: int


@dataclass(frozen=True)
class Pruned:
    issuances: int
    nonces: int

    @property
    def total(self) -> int:
        return self.issuances + self.nonces


class IssuanceLedger(ABC):
    """The one-issuance-per-classical-SVID and one-use-per-nonce rules, enforced by a database.

    Every method is safe to call from any thread and any process (or server) sharing the database:
    the database's unique constraints decide, never a lock in this process. Every method raises
    :class:`~spire_pqc.errors.LedgerError` when the database cannot answer; callers fail closed.
    """

    #: The database as an operator knows it, without a password (for logs and errors).
    database: str

    @abstractmethod
    def use_nonce(self, nonce: bytes, *, expires: dt.datetime) -> bool:
        """Record ``nonce`` until ``expires``; False if it was already recorded (a replay)."""

    @abstractmethod
    def lookup(self, serial_key: str, *, now: dt.datetime) -> LedgerEntry | None:
        """The unexpired entry for ``serial_key``, if any."""

    @abstractmethod
    def record(self, entry: LedgerEntry) -> LedgerEntry:
        """Insert ``entry`` unless its serial is already recorded; return the entry that is stored.

        Atomic: of several concurrent calls for one serial (threads, processes, servers) exactly one
        inserts, and every call returns that one's entry. Compare its ``keys_fingerprint``.
        """

    @abstractmethod
    def prune(self, *, now: dt.datetime, limit: int) -> Pruned:
        """Delete at most ``limit`` expired issuances and ``limit`` expired nonces (oldest first)."""

    @abstractmethod
    def size(self) -> LedgerSize:
        """How many entries (expired but not yet pruned included) the database holds."""

    @abstractmethod
    def close(self) -> None:
        """Close every connection (idempotent)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- stored certificate chains -------------------------------------------------------------------
# A chain is stored as DER: SEQUENCE OF OCTET STRING, read back with the strict DER reader, so a
# corrupted row is a ParseError, never a wrong certificate.


def encode_chain(chain: tuple[bytes, ...]) -> bytes:
    return der.sequence(*(der.tlv(der.OCTET_STRING, c) for c in chain))


def decode_chain(data: bytes, *, what: str, allow_empty: bool = False) -> tuple[bytes, ...]:
    reader = der.DerReader(der.read_single(bytes(data), der.SEQUENCE, what=what), what=what)
    items = []
    while not reader.at_end():
        items.append(reader.expect(der.OCTET_STRING, "certificate"))
    if not items and not allow_empty:
        raise ParseError(f"{what}: empty chain")
    return tuple(items)
