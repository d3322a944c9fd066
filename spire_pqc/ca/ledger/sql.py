"""The ledger's schema and queries, shared by SQLite and PostgreSQL.

Each rule is one statement the database decides atomically:

* a nonce is used once: ``INSERT … ON CONFLICT (nonce) DO NOTHING`` inserted a row, or it is a replay;
* a classical SVID is answered once: ``INSERT … ON CONFLICT (serial_key) DO NOTHING``; whoever did
  not insert reads the stored row back, so every racer (thread, process, server) sees the one winner.

The intermediate and root certificates that every response repeats are stored once, by SHA-256
(``spire_pqc_certificate``); an issuance row holds its two leaves and the digests of the rest.

Connections: one per thread (grpcio's worker threads, the pruner), closed together by
:meth:`SqlLedger.close`. Any driver error closes the failing connection and makes the ledger
*unavailable* for a backoff delay (exponential with jitter, up to ``retry_max``): calls fail fast
with :class:`~spire_pqc.errors.LedgerError` instead of each waiting on a dead database, one ERROR
line names the database when it goes, one INFO line when it answers again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import threading
import time
from abc import abstractmethod
from collections.abc import Callable, Iterator
from typing import Any

from spire_pqc._internal.backoff import Backoff
from spire_pqc.ca.ledger.model import (
    IssuanceLedger,
    LedgerEntry,
    LedgerSize,
    Pruned,
    decode_chain,
    encode_chain,
    from_ms,
    to_ms,
)
from spire_pqc.ca.request import IssueResponse
from spire_pqc.errors import LedgerError, ParseError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
# (version, statements); "{blob}" is the dialect's binary type. Append, never edit a released step.
MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (
        1,
        (
            "CREATE TABLE spire_pqc_certificate (digest TEXT PRIMARY KEY, der {blob} NOT NULL)",
            """CREATE TABLE spire_pqc_issuance (
                serial_key TEXT PRIMARY KEY,
                keys_fingerprint TEXT NOT NULL,
                spiffe_id TEXT NOT NULL,
                issuer_key_id TEXT NOT NULL,
                issued_ms BIGINT NOT NULL,
                expires_ms BIGINT NOT NULL,
                pqc_svid {blob} NOT NULL,
                kem_certificate {blob} NOT NULL,
                pqc_issuers {blob} NOT NULL,
                kem_issuers {blob} NOT NULL,
                pqc_bundle {blob} NOT NULL)""",
            "CREATE INDEX spire_pqc_issuance_expires ON spire_pqc_issuance (expires_ms)",
            "CREATE TABLE spire_pqc_nonce (nonce {blob} PRIMARY KEY, expires_ms BIGINT NOT NULL)",
            "CREATE INDEX spire_pqc_nonce_expires ON spire_pqc_nonce (expires_ms)",
        ),
    ),
)

_ISSUANCE_COLUMNS = (
    "serial_key, keys_fingerprint, spiffe_id, issuer_key_id, issued_ms, expires_ms, "
    "pqc_svid, kem_certificate, pqc_issuers, kem_issuers, pqc_bundle"
)
_CERT_CACHE_MAX = 256  # intermediates and roots: a handful per trust domain


class _Availability:
    """Down/up state of the database with a backoff between reconnection attempts."""

    def __init__(self, database: str, retry_initial: float, retry_max: float) -> None:
        self._database = database
        self._backoff = Backoff(retry_initial, retry_max)
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._last_error = ""

    @property
    def up(self) -> bool:
        return self._down_since is None

    def check(self) -> None:
        with self._lock:
            if self._down_since is None:
                return
            wait = self._retry_at - time.monotonic()
            if wait > 0:
                raise LedgerError(
                    f"unavailable ({self._last_error}); next attempt in {wait:.1f}s", database=self._database
                )

    def failed(self, reason: str) -> LedgerError:
        now = time.monotonic()
        with self._lock:
            if self._down_since is None:
                self._down_since = now
                log.error(
                    "issuance ledger %s is unavailable: %s; PQC issuance is refused (UNAVAILABLE) until it "
                    "answers again (retrying with backoff); classical signing is not affected",
                    self._database,
                    reason,
                )
            self._retry_at = now + self._backoff.next()
            self._last_error = reason
        return LedgerError(f"unavailable ({reason})", database=self._database)

    def succeeded(self) -> None:
        if self._down_since is None:
            return
        with self._lock:
            if self._down_since is not None:
                log.info(
                    "issuance ledger %s answers again (after %.1fs); PQC issuance resumes",
                    self._database,
                    time.monotonic() - self._down_since,
                )
            self._down_since = None
            self._backoff.reset()


class SqlLedger(IssuanceLedger):
    """The queries; a subclass supplies connections and the few dialect differences."""

    blob_type = "BLOB"
    placeholder = "?"

    def __init__(
        self,
        database: str,
        *,
        secret: str | None = None,
        retry_initial: float = 0.2,
        retry_max: float = 10.0,
        on_ready: Callable[[Callable[[LedgerEntry], LedgerEntry]], None] | None = None,
    ) -> None:
        self.database = database
        self._secret = secret  # scrubbed from every driver message that reaches a log
        self._availability = _Availability(database, retry_initial, retry_max)
        self._local = threading.local()
        self._connections: list[Any] = []
        # Connections in use by an operation right now, by id: close() leaves those to their thread.
        self._busy: dict[int, int] = {}
        self._registry_lock = threading.Lock()
        self._ready = False
        self._ready_lock = threading.Lock()
        self._on_ready = on_ready
        self._certificates: dict[str, bytes] = {}  # digest -> DER, for the shared chain parts
        self._closed = False

    # --- dialect hooks ---------------------------------------------------------------------------

    @abstractmethod
    def _connect(self) -> Any:
        """A new DB-API connection in autocommit mode."""

    @abstractmethod
    def _driver_errors(self) -> tuple[type[BaseException], ...]:
        """Exceptions of the driver that mean "the database did not answer this"."""

    @abstractmethod
    @contextlib.contextmanager
    def _exclusive(self, connection: Any) -> Iterator[Any]:
        """A transaction that excludes every other migrating process; yields a cursor."""

    def _serialised(self) -> contextlib.AbstractContextManager[object]:
        """Held around each use of a connection (only a shared in-memory connection needs it)."""
        return contextlib.nullcontext()

    # --- connection handling ---------------------------------------------------------------------

    @property
    def available(self) -> bool:
        """False while the database is known to be down (between reconnection attempts)."""
        return self._availability.up

    def _thread_connection(self) -> Any:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._connect()
            with self._registry_lock:
                if self._closed:
                    connection.close()
                    raise LedgerError("closed", database=self.database)
                self._connections.append(connection)
            self._local.connection = connection
        return connection

    def _drop_thread_connection(self) -> None:
        connection = getattr(self._local, "connection", None)
        self._local.connection = None
        if connection is not None:
            with self._registry_lock:
                if connection in self._connections:
                    self._connections.remove(connection)
            with contextlib.suppress(Exception):
                connection.close()

    def _describe(self, exc: BaseException) -> str:
        text = " ".join(str(exc).split()) or type(exc).__name__
        text = "".join(ch if ch.isprintable() else "?" for ch in text)
        if self._secret:
            text = text.replace(self._secret, "***")
        return text[:300]

    @contextlib.contextmanager
    def _cursor(self) -> Iterator[Any]:
        """A cursor on this thread's connection; a driver error becomes LedgerError plus backoff."""
        if self._closed:
            raise LedgerError("closed", database=self.database)
        self._availability.check()
        with self._serialised():
            try:
                connection = self._thread_connection()
                with self._in_use(connection):
                    if not self._ready:
                        self._setup(connection)
                    cursor = connection.cursor()
                    try:
                        yield cursor
                    finally:
                        cursor.close()
            except self._driver_errors() as exc:
                self._drop_thread_connection()
                raise self._availability.failed(self._describe(exc)) from None
        self._availability.succeeded()

    @contextlib.contextmanager
    def _in_use(self, connection: Any) -> Iterator[None]:
        """Mark ``connection`` busy; if the ledger was closed meanwhile, close it when the operation ends.

        A DB-API connection must not be closed by another thread while it runs a statement (SQLite
        crashes the process), so :meth:`close` only closes idle connections and leaves busy ones here.
        """
        key = id(connection)
        with self._registry_lock:
            closed_meanwhile = self._closed  # then close() may be closing this connection right now
            if not closed_meanwhile:
                self._busy[key] = self._busy.get(key, 0) + 1
        if closed_meanwhile:
            raise LedgerError("closed", database=self.database)
        try:
            yield
        finally:
            with self._registry_lock:
                self._busy[key] -= 1
                last = self._busy[key] == 0
                if last:
                    del self._busy[key]
                close_now = last and self._closed and connection in self._connections
                if close_now:
                    self._connections = [c for c in self._connections if c is not connection]
            if close_now:
                with contextlib.suppress(Exception):
                    connection.close()

    def _sql(self, text: str) -> str:
        return text if self.placeholder == "?" else text.replace("?", self.placeholder)

    # --- schema ----------------------------------------------------------------------------------

    def _setup(self, connection: Any) -> None:
        """Migrate, then run ``on_ready`` (the one-time import) before any thread may use the ledger."""
        with self._ready_lock:
            if self._ready:
                return
            with self._exclusive(connection) as cursor:
                self._migrate(cursor)
            if self._on_ready is not None:
                cursor = connection.cursor()
                try:
                    self._on_ready(lambda entry: self._record_with(cursor, entry))
                finally:
                    cursor.close()
            self._ready = True

    def _migrate(self, cursor: Any) -> None:
        cursor.execute(
            "CREATE TABLE IF NOT EXISTS spire_pqc_ledger_schema "
            "(id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL)"
        )
        cursor.execute("SELECT version FROM spire_pqc_ledger_schema WHERE id = 1")
        row = cursor.fetchone()
        current = int(row[0]) if row else 0
        if current > SCHEMA_VERSION:
            raise LedgerError(
                f"schema version {current} is newer than this spire-pqc understands ({SCHEMA_VERSION}); "
                "upgrade spire-pqc on this server",
                database=self.database,
            )
        for version, statements in MIGRATIONS:
            if version <= current:
                continue
            for statement in statements:
                cursor.execute(statement.format(blob=self.blob_type))
            log.info("issuance ledger %s: schema migrated to version %d", self.database, version)
        if row is None:
            cursor.execute(
                self._sql("INSERT INTO spire_pqc_ledger_schema (id, version) VALUES (1, ?)"),
                (SCHEMA_VERSION,),
            )
        elif current < SCHEMA_VERSION:
            cursor.execute(
                self._sql("UPDATE spire_pqc_ledger_schema SET version = ? WHERE id = 1"), (SCHEMA_VERSION,)
            )

    # --- the rules -------------------------------------------------------------------------------

    def use_nonce(self, nonce: bytes, *, expires: dt.datetime) -> bool:
        with self._cursor() as cursor:
            cursor.execute(
                self._sql(
                    "INSERT INTO spire_pqc_nonce (nonce, expires_ms) VALUES (?, ?) ON CONFLICT (nonce) DO NOTHING"
                ),
                (nonce, to_ms(expires)),
            )
            return bool(cursor.rowcount == 1)

    def lookup(self, serial_key: str, *, now: dt.datetime) -> LedgerEntry | None:
        with self._cursor() as cursor:
            row = self._select(cursor, serial_key)
            entry = self._entry(cursor, row) if row is not None else None
        if entry is None or entry.expires < now:
            return None
        return entry

    def record(self, entry: LedgerEntry) -> LedgerEntry:
        with self._cursor() as cursor:
            return self._record_with(cursor, entry)

    def _record_with(self, cursor: Any, entry: LedgerEntry) -> LedgerEntry:
        response = entry.response
        refs = [
            self._store_certificates(cursor, chain)
            for chain in (
                response.pqc_svid_chain[1:],
                response.kem_certificate_chain[1:],
                response.pqc_bundle,
            )
        ]
        insert = self._sql(
            f"INSERT INTO spire_pqc_issuance ({_ISSUANCE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "  # noqa: S608 - fixed names
            "ON CONFLICT (serial_key) DO NOTHING"
        )
        values = (
            entry.serial_key,
            entry.keys_fingerprint,
            entry.spiffe_id,
            entry.issuer_key_id,
            to_ms(entry.issued),
            to_ms(entry.expires),
            response.pqc_svid_chain[0],
            response.kem_certificate_chain[0],
            *refs,
        )
        # A stored row vanishes only through prune() (expired): then the insert is simply tried again.
        for _ in range(3):
            cursor.execute(insert, values)
            if cursor.rowcount == 1:
                return entry
            row = self._select(cursor, entry.serial_key)
            if row is not None:
                return self._entry(cursor, row)
        raise LedgerError(f"serial {entry.serial_key} neither inserts nor reads back", database=self.database)

    def _select(self, cursor: Any, serial_key: str) -> tuple[Any, ...] | None:
        cursor.execute(
            self._sql(f"SELECT {_ISSUANCE_COLUMNS} FROM spire_pqc_issuance WHERE serial_key = ?"),  # noqa: S608
            (serial_key,),
        )
        row: tuple[Any, ...] | None = cursor.fetchone()
        return row

    def _store_certificates(self, cursor: Any, chain: tuple[bytes, ...]) -> bytes:
        digests = []
        for certificate in chain:
            digest = hashlib.sha256(certificate).hexdigest()
            if digest not in self._certificates:
                cursor.execute(
                    self._sql(
                        "INSERT INTO spire_pqc_certificate (digest, der) VALUES (?, ?) "
                        "ON CONFLICT (digest) DO NOTHING"
                    ),
                    (digest, certificate),
                )
                self._remember(digest, certificate)
            digests.append(bytes.fromhex(digest))
        return encode_chain(tuple(digests))

    def _remember(self, digest: str, certificate: bytes) -> None:
        if len(self._certificates) >= _CERT_CACHE_MAX:
            self._certificates.pop(next(iter(self._certificates)))
        self._certificates[digest] = certificate

    def _load_certificates(self, cursor: Any, refs: bytes, what: str) -> tuple[bytes, ...]:
        out = []
        for raw in decode_chain(refs, what=what, allow_empty=True):
            digest = raw.hex()
            certificate = self._certificates.get(digest)
            if certificate is None:
                cursor.execute(self._sql("SELECT der FROM spire_pqc_certificate WHERE digest = ?"), (digest,))
                row = cursor.fetchone()
                if row is None or hashlib.sha256(bytes(row[0])).hexdigest() != digest:
                    raise ParseError(f"{what}: certificate {digest[:16]}… is missing or altered")
                certificate = bytes(row[0])
                self._remember(digest, certificate)
            out.append(certificate)
        return tuple(out)

    def _entry(self, cursor: Any, row: tuple[Any, ...]) -> LedgerEntry:
        serial_key = str(row[0])
        try:
            pqc_rest = self._load_certificates(cursor, bytes(row[8]), "pqc_issuers")
            kem_rest = self._load_certificates(cursor, bytes(row[9]), "kem_issuers")
            bundle = self._load_certificates(cursor, bytes(row[10]), "pqc_bundle")
            return LedgerEntry(
                serial_key=serial_key,
                keys_fingerprint=str(row[1]),
                spiffe_id=str(row[2]),
                issuer_key_id=str(row[3]),
                issued=from_ms(int(row[4])),
                expires=from_ms(int(row[5])),
                response=IssueResponse((bytes(row[6]), *pqc_rest), (bytes(row[7]), *kem_rest), bundle),
            )
        except (ParseError, ValueError, TypeError, OverflowError) as exc:
            raise LedgerError(f"stored entry {serial_key} is corrupt: {exc}", database=self.database) from exc

    # --- maintenance -----------------------------------------------------------------------------

    def prune(self, *, now: dt.datetime, limit: int) -> Pruned:
        cutoff = to_ms(now)
        counts = []
        with self._cursor() as cursor:
            for table, key in (("spire_pqc_issuance", "serial_key"), ("spire_pqc_nonce", "nonce")):
                cursor.execute(
                    self._sql(
                        f"DELETE FROM {table} WHERE {key} IN "  # noqa: S608 - fixed names
                        f"(SELECT {key} FROM {table} WHERE expires_ms < ? ORDER BY expires_ms LIMIT ?)"
                    ),
                    (cutoff, limit),
                )
                counts.append(max(cursor.rowcount, 0))
        return Pruned(*counts)

    def size(self) -> LedgerSize:
        with self._cursor() as cursor:
            cursor.execute("SELECT COUNT(*) FROM spire_pqc_issuance")
            issuances = int(cursor.fetchone()[0])
            cursor.execute("SELECT COUNT(*) FROM spire_pqc_nonce")
            return LedgerSize(issuances, int(cursor.fetchone()[0]))

    def close(self) -> None:
        """Close every idle connection now; one in use closes when its operation ends (idempotent)."""
        with self._registry_lock:
            self._closed = True
            idle = [c for c in self._connections if id(c) not in self._busy]
            self._connections = [c for c in self._connections if id(c) in self._busy]
        for connection in {id(c): c for c in idle}.values():  # the shared in-memory one is listed per thread
            with contextlib.suppress(Exception):
                connection.close()
