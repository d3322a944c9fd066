"""The ledger's rules and storage, on SQLite (file and memory) and a real PostgreSQL 15."""

from __future__ import annotations

import datetime as dt
import logging
import os
import sqlite3
import stat
import time
from pathlib import Path

import psycopg
import pytest

from spire_pqc.bench.postgres import PostgresCluster
from spire_pqc.ca.ledger import LedgerDsn, SqlLedger, open_ledger
from spire_pqc.ca.ledger.sql import SCHEMA_VERSION
from spire_pqc.errors import LedgerError
from tests.unit.ledger.entries import INTERMEDIATE, NOW, ROOT, entry

HOUR = dt.timedelta(hours=1)


def _up(ledger: SqlLedger) -> bool:
    return ledger.available


def test_a_nonce_is_used_once(ledger: SqlLedger) -> None:
    assert ledger.use_nonce(b"n" * 16, expires=NOW + HOUR)
    assert not ledger.use_nonce(b"n" * 16, expires=NOW + HOUR)
    assert ledger.use_nonce(b"m" * 16, expires=NOW + HOUR)


def test_record_is_insert_or_read(ledger: SqlLedger) -> None:
    first = entry(keys=b"a")
    assert ledger.record(first) is first
    second = entry(keys=b"b")
    stored = ledger.record(second)
    assert stored == first  # every later caller reads the winner back, certificates included
    assert ledger.lookup(first.serial_key, now=NOW) == first
    assert ledger.lookup("CN=ca|20", now=NOW) is None


def test_stored_chains_share_the_intermediate_and_root(
    ledger: SqlLedger, ledger_dsn: tuple[str, str]
) -> None:
    entries = [entry(f"CN=ca|{i:x}", keys=bytes([i])) for i in range(10)]
    for e in entries:
        ledger.record(e)
    reopened = open_ledger(ledger_dsn[0], password=ledger_dsn[1]) if "memory" not in ledger_dsn[0] else ledger
    try:
        for e in entries:
            got = reopened.lookup(e.serial_key, now=NOW)
            assert got is not None
            assert got.response == e.response
            assert got.response.pqc_svid_chain[1] == INTERMEDIATE and got.response.pqc_bundle == (ROOT,)
        with reopened._cursor() as cursor:
            cursor.execute("SELECT COUNT(*) FROM spire_pqc_certificate")
            assert cursor.fetchone()[0] == 2  # stored once, not once per issuance
    finally:
        if reopened is not ledger:
            reopened.close()


def test_expired_entries_are_invisible_then_pruned_oldest_first_and_bounded(ledger: SqlLedger) -> None:
    for i in range(25):
        ledger.record(entry(f"CN=ca|{i:x}", keys=bytes([i]), expires=NOW + dt.timedelta(minutes=i)))
        ledger.use_nonce(bytes([i]) * 16, expires=NOW + dt.timedelta(minutes=i))
    later = NOW + dt.timedelta(minutes=10, seconds=30)
    assert ledger.lookup("CN=ca|3", now=later) is None  # expired, not yet pruned: not an answer
    assert ledger.size().issuances == 25
    first = ledger.prune(now=later, limit=4)
    assert (first.issuances, first.nonces) == (4, 4)
    assert ledger.lookup("CN=ca|4", now=NOW) is not None  # oldest first: 0..3 went, 4 stays
    assert ledger.lookup("CN=ca|3", now=NOW) is None
    rest = ledger.prune(now=later, limit=100)
    assert (rest.issuances, rest.nonces) == (7, 7)
    size = ledger.size()
    assert (size.issuances, size.nonces) == (14, 14)
    assert ledger.lookup("CN=ca|b", now=later) is not None


def test_corrupt_rows_fail_closed(ledger: SqlLedger) -> None:
    ledger.record(entry("CN=ca|1", keys=b"a"))
    ledger.record(entry("CN=ca|2", keys=b"b"))
    with ledger._cursor() as cursor:
        cursor.execute(ledger._sql("UPDATE spire_pqc_issuance SET pqc_issuers = ? WHERE serial_key = ?"),
                       (b"\x30\x05garbage", "CN=ca|1"))  # fmt: skip
        cursor.execute("UPDATE spire_pqc_certificate SET der = der || der")
    ledger._certificates.clear()  # forget what this process cached: read what the database holds
    with pytest.raises(LedgerError, match=r"stored entry CN=ca\|1 is corrupt"):
        ledger.lookup("CN=ca|1", now=NOW)
    with pytest.raises(LedgerError, match=r"stored entry CN=ca\|2 is corrupt"):
        ledger.lookup("CN=ca|2", now=NOW)
    assert ledger.available  # the database answers: only those rows are unusable


# An in-memory database is never opened by another version: file SQLite and PostgreSQL only.
@pytest.mark.parametrize("ledger_dsn", ["sqlite", "postgresql"], indirect=True)
def test_a_newer_schema_is_refused(ledger: SqlLedger, ledger_dsn: tuple[str, str]) -> None:
    ledger.size()
    with ledger._cursor() as cursor:
        cursor.execute(ledger._sql("UPDATE spire_pqc_ledger_schema SET version = ?"), (SCHEMA_VERSION + 1,))
    with (
        open_ledger(ledger_dsn[0], password=ledger_dsn[1]) as newer,
        pytest.raises(LedgerError, match="newer"),
    ):
        newer.size()


def test_migration_runs_once_across_reopens(ledger_dsn: tuple[str, str]) -> None:
    for _ in range(3):
        with open_ledger(ledger_dsn[0], password=ledger_dsn[1]) as ledger:
            ledger.record(entry(keys=b"a"))
            with ledger._cursor() as cursor:
                cursor.execute("SELECT version FROM spire_pqc_ledger_schema")
                assert [tuple(r) for r in cursor.fetchall()] == [(SCHEMA_VERSION,)]


# --- SQLite specifics --------------------------------------------------------------------------


def test_sqlite_file_is_private_and_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "ledger.db"
    with open_ledger(f"sqlite://{path}") as ledger:
        ledger.record(entry())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_sqlite_file_writable_by_others_is_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "ledger.db"
    path.touch()
    path.chmod(0o666)
    with open_ledger(f"sqlite://{path}") as ledger, pytest.raises(LedgerError, match=r"mode 0666.*chmod 600"):
        ledger.size()
    assert f"issuance ledger sqlite://{path} is unavailable" in caplog.text


def test_sqlite_garbage_file_is_unavailable_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    path.write_bytes(os.urandom(8192))
    path.chmod(0o600)
    with open_ledger(f"sqlite://{path}") as ledger, pytest.raises(LedgerError, match="not a database"):
        ledger.use_nonce(b"n" * 16, expires=NOW)


# --- PostgreSQL specifics ----------------------------------------------------------------------


def test_postgres_down_fails_fast_with_backoff_then_recovers(
    postgres: PostgresCluster, pg_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="spire_pqc.ca.ledger.sql")
    with open_ledger(pg_dsn, password=postgres.password, retry_initial=0.5, retry_max=1.0) as ledger:
        ledger.record(entry(keys=b"a"))
        postgres.stop()
        try:
            with pytest.raises(LedgerError) as first:
                ledger.lookup(entry().serial_key, now=NOW)
            assert "127.0.0.1" in first.value.database and "/ledger_" in first.value.database
            assert not _up(ledger)
            with pytest.raises(LedgerError, match="next attempt in"):  # no connection attempt
                ledger.lookup(entry().serial_key, now=NOW)
        finally:
            postgres.start()
        deadline = time.monotonic() + 30
        while True:
            try:
                got = ledger.lookup(entry().serial_key, now=NOW)
                break
            except LedgerError:
                assert time.monotonic() < deadline, "the ledger never reconnected"
                time.sleep(0.1)
        assert got is not None and got.keys_fingerprint == entry(keys=b"a").keys_fingerprint
        assert _up(ledger)
    assert caplog.text.count("is unavailable") == 1  # one ERROR when it goes, not one per call
    assert "answers again" in caplog.text
    assert postgres.password not in caplog.text


def test_postgres_wrong_password_never_appears(postgres: PostgresCluster, pg_dsn: str) -> None:
    secret = "s3cr3t-" + postgres.password[::-1]
    with open_ledger(pg_dsn, password=secret) as ledger, pytest.raises(LedgerError) as info:
        ledger.size()
    assert "password authentication failed" in str(info.value)
    assert secret not in str(info.value)


def test_postgres_schema_lives_in_its_own_tables(postgres: PostgresCluster, pg_dsn: str) -> None:
    with open_ledger(pg_dsn, password=postgres.password) as ledger:
        ledger.size()
    dbname = pg_dsn.rsplit("/", 1)[1].split("?", maxsplit=1)[0]
    with psycopg.connect(postgres.admin_conninfo(dbname)) as raw:
        tables = {r[0] for r in raw.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert tables == {
        "spire_pqc_ledger_schema",
        "spire_pqc_certificate",
        "spire_pqc_issuance",
        "spire_pqc_nonce",
    }


# --- DSNs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "display"),
    [
        ("sqlite:///var/lib/spire-pqc/ledger.db", "sqlite:///var/lib/spire-pqc/ledger.db"),
        ("sqlite://:memory:", "sqlite://:memory:"),
        (
            "postgresql://spire@db.example:5433/ledger?sslmode=verify-full",
            "postgresql://spire@db.example:5433/ledger",
        ),
        ("postgres:///ledger?host=/run/postgresql", "postgresql://[/run/postgresql]/ledger"),
    ],
)
def test_dsn_display(text: str, display: str) -> None:
    assert LedgerDsn.parse(text).display == display


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sqlite://relative.db", "ABSOLUTE"),
        ("sqlite:///x.db?mode=ro", "ABSOLUTE"),
        ("mysql://db/ledger", "must start with"),
        ("postgresql://spire:hunter2@db/ledger", "contains a password"),
        ("postgresql://db/ledger?password=hunter2", "contains a password"),
        ("postgresql://db/ledger?colour=blue", "not a valid"),
    ],
)
def test_dsn_refusals_never_echo_a_password(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        LedgerDsn.parse(text)
    assert "hunter2" not in str(info.value)
