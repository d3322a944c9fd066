"""The background job that removes expired ledger entries, with bounded work per run."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from spire_pqc.ca.ledger.model import IssuanceLedger, LedgerSize, Pruned
from spire_pqc.errors import LedgerError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PruneRun:
    pruned: Pruned
    size: LedgerSize | None  # None when the database did not answer
    complete: bool  # False: the run stopped at max_batches with expired entries left


class Pruner:
    """Every ``interval``: delete expired entries ``batch`` rows per statement, at most ``max_batches``
    statements per run (so one run never holds the database long); a run that stopped early is
    followed by the next one after ``catch_up`` instead of ``interval``. ``on_run`` gets each result
    (metrics). The database's own unavailability is logged by the ledger, not here."""

    def __init__(
        self,
        ledger: IssuanceLedger,
        *,
        interval: float = 30.0,
        batch: int = 1000,
        max_batches: int = 50,
        catch_up: float = 1.0,
        on_run: Callable[[PruneRun], None] | None = None,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._ledger = ledger
        self._interval, self._batch, self._max_batches, self._catch_up = (
            interval,
            batch,
            max_batches,
            catch_up,
        )
        self._on_run = on_run
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> PruneRun:
        issuances = nonces = 0
        complete = False
        try:
            for _ in range(self._max_batches):
                pruned = self._ledger.prune(now=self._clock(), limit=self._batch)
                issuances += pruned.issuances
                nonces += pruned.nonces
                if pruned.issuances < self._batch and pruned.nonces < self._batch:
                    complete = True
                    break
            size: LedgerSize | None = self._ledger.size()
        except LedgerError as exc:
            log.debug("prune skipped: %s", exc)
            size = None
        run = PruneRun(Pruned(issuances, nonces), size, complete)
        if run.pruned.total:
            log.debug("pruned %d expired issuances and %d nonces", issuances, nonces)
        if self._on_run is not None:
            self._on_run(run)
        return run

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("pruner already started")
        self._thread = threading.Thread(target=self._loop, name="spire-pqc-ledger-pruner", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        wait = 0.0
        while not self._stop.wait(wait):
            try:
                run = self.run_once()
            except Exception:  # a bug here must not end pruning silently
                log.exception("ledger prune run failed")
                wait = self._interval
                continue
            wait = self._catch_up if run.size is not None and not run.complete else self._interval

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
