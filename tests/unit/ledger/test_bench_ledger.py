"""`spire-pqc bench ledger` runs on both real databases; CI runs it at a small size (the live-entry
count is a parameter: the 1M point belongs to `make bench`, not to the test suite)."""

from __future__ import annotations

import re

from spire_pqc.bench import ledger as bench_ledger


def test_bench_ledger_reports_both_databases_at_each_size() -> None:
    report = bench_ledger.run(sizes=(300, 600), samples=20, prune_rows=300)
    for backend in ("sqlite", "postgresql"):
        for live in ("300", "600"):
            assert re.search(rf"{backend}\s+{live} live\s+record p50\s+[\d.]+ ms", report), report
        assert re.search(rf"{backend}\s+prune 300 expired rows: [\d,]+ rows/s", report), report
