"""The ledger in SQLite (stdlib ``sqlite3``): the embedded default, one file in WAL mode.

Several processes may share the file (SQLite's own locks serialise the writers; a writer waits up to
``BUSY_TIMEOUT`` for another). The file is created with mode 0600 and refused when other users may
write it: whoever can edit the ledger can delete the record that stops a second issuance.
``sqlite://:memory:`` is a private in-memory database (one connection, used under a lock): the rules
then hold within one process only, which is what the dev source needs.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from spire_pqc.ca.ledger.dsn import MEMORY
from spire_pqc.ca.ledger.sql import SqlLedger

BUSY_TIMEOUT = 10.0  # seconds a writer waits for another process's write transaction


class SqliteLedger(SqlLedger):
    def __init__(self, path: Path | None, **kwargs: Any) -> None:
        super().__init__(f"sqlite://{path}" if path is not None else MEMORY, **kwargs)
        self._path = path
        self._memory: sqlite3.Connection | None = None
        self._memory_lock = threading.RLock()

    def _connect(self) -> sqlite3.Connection:
        if self._path is None:
            if self._memory is None:
                self._memory = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
                self._memory.text_factory = lambda raw: raw.decode("utf-8", "replace")
            return self._memory
        _prepare(self._path)
        # check_same_thread=False only so that close() may close every thread's connection; each
        # connection is otherwise used by the one thread that opened it.
        connection = sqlite3.connect(
            str(self._path), timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
        )
        # A TEXT value that is not UTF-8 (a corrupted row) must read as a mismatch, not a driver error.
        connection.text_factory = lambda raw: raw.decode("utf-8", "replace")
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed issuance survives a power loss, so it is never answered twice.
            connection.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error:
            connection.close()
            raise
        return connection

    def _drop_thread_connection(self) -> None:
        if self._path is not None:  # the in-memory database *is* its connection: keep it
            super()._drop_thread_connection()

    def _driver_errors(self) -> tuple[type[BaseException], ...]:
        return (sqlite3.Error,)

    def _serialised(self) -> contextlib.AbstractContextManager[object]:
        return self._memory_lock if self._path is None else contextlib.nullcontext()

    @contextlib.contextmanager
    def _exclusive(self, connection: Any) -> Iterator[Any]:
        cursor = connection.cursor()
        try:
            cursor.execute("BEGIN IMMEDIATE")
            try:
                yield cursor
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    cursor.execute("ROLLBACK")
                raise
            cursor.execute("COMMIT")
        finally:
            cursor.close()


def _prepare(path: Path) -> None:
    """Create the file 0600 (its directory 0700) or check an existing one; a driver error if unusable."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600))
        info = os.stat(path)
    except OSError as exc:
        raise sqlite3.OperationalError(f"cannot open {path}: {exc.strerror}") from exc
    if info.st_mode & 0o022:
        raise sqlite3.OperationalError(
            f"{path} has mode {stat.S_IMODE(info.st_mode):04o}: other users could delete issuance "
            "records; chmod 600 it (refusing to use it)"
        )
