"""The issuance ledger: one issuance per classical SVID serial and one use per nonce, in a database.

The ledger remembers, per classical SVID (issuer DN, serial), which PQC keys were certified and what
was issued, until the classical SVID expires (plus the freshness window). A retry with the *same*
keys gets the same certificates back; a request with *different* keys is refused as a security
event. Nonces are remembered for twice the freshness window.

The rules are enforced by the database's unique constraints, so they hold across threads, processes
and SPIRE servers that share the database:

    >>> ledger = open_ledger("sqlite:///var/lib/spire-pqc/ledger.db")          # doctest: +SKIP
    >>> ledger = open_ledger("postgresql://spire@db:5432/spire_pqc", password=pw)  # doctest: +SKIP

Expired entries are removed by :class:`Pruner`, a bounded background job.
"""

from __future__ import annotations

from typing import Any

from spire_pqc.ca.ledger.dsn import MEMORY, LedgerDsn
from spire_pqc.ca.ledger.legacy import LegacyImport, read_legacy
from spire_pqc.ca.ledger.model import IssuanceLedger, LedgerEntry, LedgerSize, Pruned
from spire_pqc.ca.ledger.pruner import Pruner, PruneRun
from spire_pqc.ca.ledger.sql import SqlLedger

__all__ = [
    "MEMORY",
    "IssuanceLedger",
    "LedgerDsn",
    "LedgerEntry",
    "LedgerSize",
    "LegacyImport",
    "PruneRun",
    "Pruned",
    "Pruner",
    "SqlLedger",
    "open_ledger",
    "read_legacy",
]


def open_ledger(dsn: str | LedgerDsn, *, password: str | None = None, **options: Any) -> SqlLedger:
    """The ledger named by ``dsn``; connects lazily (on first use), so a database that is down now
    makes calls fail with LedgerError until it answers, never this constructor. ``options``:
    ``retry_initial``, ``retry_max`` (seconds of reconnection backoff), ``on_ready``."""
    parsed = dsn if isinstance(dsn, LedgerDsn) else LedgerDsn.parse(dsn)
    if parsed.kind == "sqlite":
        from spire_pqc.ca.ledger.sqlite import SqliteLedger

        return SqliteLedger(parsed.path, **options)
    from spire_pqc.ca.ledger.postgres import PostgresLedger

    return PostgresLedger(parsed.conninfo, parsed.display, password=password, **options)
