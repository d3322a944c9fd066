"""The ledger in PostgreSQL (psycopg 3): the database SPIRE HA already runs, shared by every server.

Connections are opened with a connect timeout and a statement timeout, so a database that stops
answering turns into LedgerError (issuance UNAVAILABLE) in seconds instead of hanging a CA worker.
Schema migrations run under a transaction-scoped advisory lock: two servers starting together
migrate one after the other. The password is passed apart from the DSN and never logged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import psycopg

from spire_pqc.ca.ledger.sql import SqlLedger

# pg_advisory_xact_lock key of schema migrations: "SPQCLEDG" as a big-endian int64.
MIGRATION_LOCK = int.from_bytes(b"SPQCLEDG", "big") & 0x7FFFFFFFFFFFFFFF
CONNECT_TIMEOUT = 5  # seconds (libpq's granularity)
STATEMENT_TIMEOUT_MS = 10_000


class PostgresLedger(SqlLedger):
    blob_type = "BYTEA"
    placeholder = "%s"

    def __init__(self, conninfo: str, display: str, *, password: str | None = None, **kwargs: Any) -> None:
        super().__init__(display, secret=password, **kwargs)
        self._conninfo = conninfo
        self._password = password

    def _connect(self) -> psycopg.Connection[Any]:
        extra: dict[str, Any] = {"password": self._password} if self._password else {}
        return psycopg.connect(
            self._conninfo,
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT,
            options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
            application_name="spire-pqc-ledger",
            **extra,
        )

    def _driver_errors(self) -> tuple[type[BaseException], ...]:
        return (psycopg.Error,)

    @contextlib.contextmanager
    def _exclusive(self, connection: Any) -> Iterator[Any]:
        with connection.transaction(), connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            yield cursor
