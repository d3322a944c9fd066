"""The pruner: bounded work per run, catching up over runs, reporting to metrics; flat storage."""

from __future__ import annotations

import datetime as dt
import threading

from spire_pqc.ca.ledger import Pruner, PruneRun, SqlLedger
from spire_pqc.plugin.metrics import PluginMetrics
from tests.unit.ledger.entries import NOW, entry


def test_runs_are_bounded_and_catch_up(ledger: SqlLedger) -> None:
    for i in range(23):
        ledger.record(entry(f"CN=ca|{i:x}", keys=bytes([i]), expires=NOW - dt.timedelta(seconds=1)))
    ledger.record(entry("CN=ca|live", keys=b"live"))
    metrics = PluginMetrics()
    pruner = Pruner(ledger, batch=5, max_batches=2, clock=lambda: NOW, on_run=metrics.observe_prune)
    first = pruner.run_once()
    assert (first.pruned.issuances, first.complete) == (10, False)  # stopped at 2 batches of 5
    pruner.run_once()
    last = pruner.run_once()
    assert (last.pruned.issuances, last.complete) == (3, True)
    assert last.size is not None and last.size.issuances == 1
    assert metrics.value("spire_pqc_ca_ledger_pruned_total", kind="issuance") == 23
    assert metrics.value("spire_pqc_ca_ledger_entries", kind="issuance") == 1


def test_background_thread_prunes_and_stops(ledger: SqlLedger) -> None:
    ledger.record(entry("CN=ca|old", expires=NOW - dt.timedelta(seconds=1)))
    done = threading.Event()
    runs: list[PruneRun] = []

    def seen(run: PruneRun) -> None:
        runs.append(run)
        done.set()

    pruner = Pruner(ledger, interval=3600, clock=lambda: NOW, on_run=seen)
    pruner.start()
    try:
        assert done.wait(30)
    finally:
        pruner.stop()
    assert runs[0].pruned.issuances == 1 and ledger.size().issuances == 0
