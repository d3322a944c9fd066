"""`spire-pqc bench ledger`: the issuance ledger's record/lookup latency with N live entries, and
prune throughput, on SQLite (a file, WAL, synchronous=FULL) and a private PostgreSQL 15 cluster with
its default (durable) settings, measured in the same run.

The N live entries are bulk-loaded rows whose leaves are 64-byte stand-ins (a real row holds ~10 KB
of leaves; 1M real rows would be ~10 GB); every *measured* record() carries real-size leaves
(5.5 KB ML-DSA-65 PQC SVID, 4.7 KB KEM certificate) and the shared intermediate and root. Index
depth, not payload, is what grows with N. Latency is per call as the CA makes it (one thread).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spire_pqc.bench.postgres import PostgresCluster
from spire_pqc.ca.ledger import LedgerEntry, SqlLedger, open_ledger
from spire_pqc.ca.ledger.model import encode_chain, to_ms
from spire_pqc.ca.request import IssueResponse

INTERMEDIATE = os.urandom(5_600)
ROOT = os.urandom(5_500)
FUTURE = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)


@dataclass(frozen=True)
class Point:
    backend: str
    live: int
    record_p50_ms: float
    record_p99_ms: float
    lookup_p50_ms: float
    lookup_p99_ms: float


@dataclass(frozen=True)
class PruneRate:
    backend: str
    rows: int
    rows_per_second: float


def _entry(serial: str, *, leaf: int = 5_500) -> LedgerEntry:
    fingerprint = hashlib.sha256(serial.encode()).hexdigest()
    return LedgerEntry(
        serial, fingerprint, "spiffe://bench.example/w", "ab" * 32, FUTURE, FUTURE,
        IssueResponse((os.urandom(leaf), INTERMEDIATE), (os.urandom(max(leaf - 800, 64)), INTERMEDIATE), (ROOT,)),
    )  # fmt: skip


def _fill(ledger: SqlLedger, start: int, count: int, expires: dt.datetime) -> None:
    """Bulk-load ``count`` small rows (one transaction per 10,000) through the ledger's own SQL."""
    ledger.record(_entry("CN=bench|seed", leaf=64))  # stores the shared certificates, creates the schema
    refs = [
        encode_chain((hashlib.sha256(INTERMEDIATE).digest(),)),
        encode_chain((hashlib.sha256(INTERMEDIATE).digest(),)),
        encode_chain((hashlib.sha256(ROOT).digest(),)),
    ]
    sql = ledger._sql(
        "INSERT INTO spire_pqc_issuance (serial_key, keys_fingerprint, spiffe_id, issuer_key_id, issued_ms, "
        "expires_ms, pqc_svid, kem_certificate, pqc_issuers, kem_issuers, pqc_bundle) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    issued, until = to_ms(FUTURE), to_ms(expires)
    for chunk in range(start, start + count, 10_000):
        rows = [
            (f"CN=bench|{i:x}", "f" * 64, "spiffe://bench.example/w", "ab" * 32, issued, until,
             os.urandom(64), os.urandom(64), *refs)
            for i in range(chunk, min(chunk + 10_000, start + count))
        ]  # fmt: skip
        with ledger._cursor() as cursor:
            cursor.execute("BEGIN")
            cursor.executemany(sql, rows)
            cursor.execute("COMMIT")


def _percentiles(samples: Sequence[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[int(len(ordered) * 0.99) - 1] * 1000


def _time(calls: Sequence[Callable[[], Any]]) -> list[float]:
    out = []
    for call in calls:
        start = time.perf_counter()
        call()
        out.append(time.perf_counter() - start)
    return out


def _lookup(ledger: SqlLedger, key: str) -> None:
    if ledger.lookup(key, now=dt.datetime.now(dt.UTC)) is None:
        raise AssertionError(f"{key} not found")


def measure(ledger: SqlLedger, backend: str, sizes: Sequence[int], samples: int) -> list[Point]:
    points: list[Point] = []
    filled = 0
    rng = random.Random(7)  # noqa: S311 - which rows to look up, not a secret
    for size in sizes:
        _fill(ledger, filled, size - filled, FUTURE)
        filled = size
        fresh = [_entry(f"CN=measured|{size}|{i}") for i in range(samples)]
        records = _time([functools.partial(ledger.record, e) for e in fresh])
        keys = [f"CN=bench|{rng.randrange(filled):x}" for _ in range(samples)]
        lookups = _time([functools.partial(_lookup, ledger, k) for k in keys])
        points.append(Point(backend, size, *_percentiles(records), *_percentiles(lookups)))
    return points


def prune_rate(ledger: SqlLedger, backend: str, rows: int) -> PruneRate:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    _fill(ledger, 10**9, rows, past)
    start = time.perf_counter()
    removed = 0
    while True:
        pruned = ledger.prune(now=dt.datetime.now(dt.UTC), limit=1000)
        removed += pruned.issuances
        if pruned.issuances < 1000:
            break
    return PruneRate(backend, removed, removed / (time.perf_counter() - start))


def run(
    sizes: Sequence[int] = (10_000, 100_000, 1_000_000), samples: int = 500, prune_rows: int = 100_000
) -> str:
    points: list[Point] = []
    prunes: list[PruneRate] = []
    with (
        tempfile.TemporaryDirectory(prefix="spq-ledger-bench-") as directory,
        open_ledger(f"sqlite://{Path(directory) / 'ledger.db'}") as sqlite,
    ):
        points += measure(sqlite, "sqlite", sizes, samples)
        prunes.append(prune_rate(sqlite, "sqlite", prune_rows))
    with PostgresCluster() as cluster:
        cluster.create_database("ledger")
        with open_ledger(cluster.dsn("ledger"), password=cluster.password) as postgres:
            points += measure(postgres, "postgresql", sizes, samples)
            prunes.append(prune_rate(postgres, "postgresql", prune_rows))
    lines = [f"ledger: record (real-size entry, insert) and lookup latency, {samples} calls per point"]
    for p in points:
        lines.append(
            f"  {p.backend:10s} {p.live:>9,d} live  record p50 {p.record_p50_ms:7.2f} ms  p99 "
            f"{p.record_p99_ms:7.2f} ms   lookup p50 {p.lookup_p50_ms:6.2f} ms  p99 {p.lookup_p99_ms:6.2f} ms"
        )
    for r in prunes:
        lines.append(f"  {r.backend:10s} prune {r.rows:,d} expired rows: {r.rows_per_second:,.0f} rows/s")
    return "\n".join(lines)
