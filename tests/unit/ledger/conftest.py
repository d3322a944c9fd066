"""Ledger fixtures: every test runs against SQLite (file and memory) and a private PostgreSQL 15."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from spire_pqc.bench.postgres import FAST, PostgresCluster
from spire_pqc.ca.ledger import MEMORY, SqlLedger, open_ledger

_names = itertools.count()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """One private cluster for the session (each test gets its own database in it)."""
    with PostgresCluster(settings=FAST) as cluster:
        yield cluster


@pytest.fixture
def pg_dsn(postgres: PostgresCluster) -> str:
    name = f"ledger_{next(_names)}"
    postgres.create_database(name)
    return postgres.dsn(name)


@pytest.fixture(params=["sqlite", "memory", "postgresql"])
def ledger_dsn(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str | None]:
    """(DSN, password) of an empty ledger database of each kind."""
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'ledger.db'}", None
    if request.param == "memory":
        return MEMORY, None
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    return request.getfixturevalue("pg_dsn"), cluster.password


@pytest.fixture
def ledger(ledger_dsn: tuple[str, str | None]) -> Iterator[SqlLedger]:
    dsn, password = ledger_dsn
    with open_ledger(dsn, password=password) as opened:
        assert isinstance(opened, SqlLedger)
        yield opened
