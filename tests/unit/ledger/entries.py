"""Ledger entries with realistic shapes: two leaves, a shared intermediate and root."""

from __future__ import annotations

import datetime as dt
import hashlib
import os

from spire_pqc.ca.ledger import LedgerEntry
from spire_pqc.ca.request import IssueResponse

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
INTERMEDIATE = b"\x30\x82" + os.urandom(5000)
ROOT = b"\x30\x82" + os.urandom(5000)


def entry(
    serial: str = "CN=ca|1f",
    *,
    keys: bytes = b"keys",
    expires: dt.datetime = NOW + dt.timedelta(hours=1),
    leaf_size: int = 64,
) -> LedgerEntry:
    fingerprint = hashlib.sha256(keys).hexdigest()
    return LedgerEntry(
        serial_key=serial,
        keys_fingerprint=fingerprint,
        spiffe_id="spiffe://example.org/app",
        issuer_key_id="ab" * 32,
        issued=NOW,
        expires=expires,
        response=IssueResponse(
            (b"pqc-" + fingerprint.encode() + os.urandom(leaf_size), INTERMEDIATE),
            (b"kem-" + fingerprint.encode() + os.urandom(leaf_size), INTERMEDIATE),
            (ROOT,),
        ),
    )
