"""The plugin's running intermediate schedule: polls ``intermediates_dir``, archives, warns, counts.

:class:`IntermediateWatcher` holds the intermediates loaded for one configuration and re-reads
``intermediates_dir`` every ``intermediates_poll_interval`` in a daemon thread (a new subdirectory is
picked up without a restart; SIGUSR1 makes SPIRE call Configure, which builds a new watcher at once).
The schedule itself (:func:`spire_pqc.ca.intermediates.schedule`) is evaluated at every use, so an
activation happens on time whatever the poll interval. Each poll also archives intermediates whose
retiring period is over, logs every change of state, and warns (every 10 minutes) while the active
intermediate is past its successor's activation point with no next one.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from cryptography import x509

from spire_pqc._internal.files import read_private, read_public
from spire_pqc.ca.intermediates import (
    Intermediate,
    IntermediateSet,
    State,
    archive,
    load_directory,
    schedule,
)
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey
from spire_pqc.errors import ConfigError, SpirePqcError
from spire_pqc.plugin.config import Config
from spire_pqc.plugin.metrics import PluginMetrics
from spire_pqc.x509.load import load_pem_certificates

log = logging.getLogger(__name__)

WARN_EVERY = 600.0  # seconds between two "rotation overdue" warnings


class _KeyFile:
    """An intermediate key re-validated cheaply (one stat) on every use: removing or replacing the
    file takes effect without a restart."""

    def __init__(self, inter: Intermediate, password: bytes | None) -> None:
        self._inter = inter
        self._password = password
        self._stamp = self._stat()
        self._key: MLDSA65PrivateKey = inter.ca.key
        self._lock = threading.Lock()

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self._inter.key_path)
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def get(self) -> MLDSA65PrivateKey:
        path = self._inter.key_path
        stamp = self._stat()
        if stamp is None:
            raise ConfigError([f"intermediate key {path} is missing or unreadable"], source="spire-pqc")
        with self._lock:
            if stamp != self._stamp:
                key = MLDSA65PrivateKey.from_pem(read_private(path), password=self._password)
                if key.public_key() != self._inter.ca.public_key:
                    raise ConfigError(
                        [f"intermediate key {path} now holds a key that does not match its certificate"],
                        source="spire-pqc",
                    )
                self._key, self._stamp = key, stamp
            return self._key


class IntermediateWatcher:
    """The intermediates of one configuration; thread-safe; :meth:`close` stops its poller."""

    def __init__(
        self,
        *,
        intermediates: tuple[Intermediate, ...],
        directory: Path | None,
        reload: Callable[[dt.datetime], tuple[list[Intermediate], list[str]]] | None,
        activation: float,
        svid_ttl: dt.timedelta,
        revoked: frozenset[str],
        poll_interval: dt.timedelta,
        password: bytes | None,
        metrics: PluginMetrics | None = None,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._lock = threading.Lock()
        self._intermediates = intermediates
        self._directory = directory
        self._reload = reload
        self._activation = activation
        self._svid_ttl = svid_ttl
        self._revoked = revoked
        self._password = password
        self._metrics = metrics
        self._clock = clock
        self._keys: dict[str, _KeyFile] = {}
        self._states: dict[str, State] = {}
        self._reported: set[str] = set()
        self._warned_at = -WARN_EVERY
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._interval = poll_interval.total_seconds()
        self._roots: Callable[[], tuple[x509.Certificate, ...]] = lambda: ()
        self.poll()

    @classmethod
    def from_config(cls, config: Config, metrics: PluginMetrics | None = None) -> IntermediateWatcher:
        directory = config.intermediates_dir
        reload = None
        holder: list[tuple[x509.Certificate, ...]] = [config.pqc_roots]
        if directory is not None:
            configured = tuple(i for i in config.intermediates if not i.in_directory)
            bundle_path = config.pqc_bundle_path

            def reload(at: dt.datetime) -> tuple[list[Intermediate], list[str]]:
                problems = []
                if bundle_path is not None:
                    try:
                        roots = load_pem_certificates(read_public(bundle_path), what=str(bundle_path))
                    except SpirePqcError as exc:
                        problems.append(f"pqc_bundle_path: {exc} (keeping the roots loaded before)")
                    else:
                        holder[0] = tuple(roots)
                found, bad = load_directory(
                    directory, roots=holder[0], trust_domain=config.trust_domain,
                    password=config.intermediate_key_password, at=at,
                )  # fmt: skip
                return [*configured, *found], problems + bad

        watcher = cls(
            intermediates=config.intermediates,
            directory=directory,
            reload=reload,
            activation=config.intermediate_activation,
            svid_ttl=config.max_x509_svid_ttl,
            revoked=config.revoked_intermediates,
            poll_interval=config.intermediates_poll_interval,
            password=config.intermediate_key_password,
            metrics=metrics,
        )
        watcher._roots = lambda: holder[0]
        return watcher

    # --- queries -------------------------------------------------------------------------------

    def current(self) -> IntermediateSet:
        with self._lock:
            intermediates = self._intermediates
        return schedule(
            intermediates,
            at=self._clock(),
            activation=self._activation,
            svid_ttl=self._svid_ttl,
            revoked=self._revoked,
        )

    def signing(self) -> tuple[Intermediate, MLDSA65PrivateKey]:
        """The active intermediate and its key (re-checked on disk); ConfigError when none is usable."""
        active = self.current().active
        if active is None:
            raise ConfigError(
                ["no intermediate PQC CA is active (expired, revoked or not yet valid)"], source="spire-pqc"
            )
        inter = active.intermediate
        return inter, self.key(inter)

    def key(self, inter: Intermediate) -> MLDSA65PrivateKey:
        """``inter``'s key as it is on disk now (re-checked: one stat); ConfigError when gone or replaced."""
        with self._lock:
            holder = self._keys.get(inter.key_id)
            if holder is None:
                holder = self._keys[inter.key_id] = _KeyFile(inter, self._password)
        return holder.get()

    @property
    def revoked(self) -> frozenset[str]:
        return self._revoked

    def roots(self) -> tuple[x509.Certificate, ...]:
        """The PQC bundle as last read (with ``intermediates_dir``, ``pqc_bundle_path`` is polled too)."""
        return self._roots()

    # --- polling -------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None and self._reload is not None:
            self._thread = threading.Thread(target=self._run, name="spire-pqc-intermediates", daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.poll()
            except Exception:  # a bug or an OS error: keep the running schedule, say so, try again
                log.exception("reading intermediates_dir failed; keeping the intermediates loaded before")

    def poll(self) -> IntermediateSet:
        """Re-read the directory (if any), archive what retired, log changes, update metrics."""
        now = self._clock()
        if self._reload is not None:
            found, problems = self._reload(now)
            for message in problems:
                if message not in self._reported:
                    self._reported.add(message)
                    log.error("intermediates_dir: %s (left out; the others are used)", message)
            with self._lock:
                self._intermediates = tuple(found)
        with self._lock:
            # Each key's file identity as loaded: a later change is noticed at the next signing.
            for inter in self._intermediates:
                if inter.key_id not in self._keys:
                    self._keys[inter.key_id] = _KeyFile(inter, self._password)
        current = self.current()
        self._report(current)
        self._archive(current)
        return current

    def _report(self, current: IntermediateSet) -> None:
        for entry in current.entries:
            before = self._states.get(entry.key_id)
            if before is not entry.state:
                self._states[entry.key_id] = entry.state
                log.info(
                    "intermediate %s (notAfter %s) is %s%s",
                    entry.key_id[:16],
                    entry.intermediate.not_after.isoformat(),
                    entry.state.value,
                    f" (was {before.value})" if before is not None else "",
                )
        active = current.active
        overdue = current.rotation_overdue()
        if overdue and time.monotonic() - self._warned_at >= WARN_EVERY:
            self._warned_at = time.monotonic()
            if active is None:
                log.error("NO intermediate PQC CA is active: PQC bindings and issuance have stopped")
            else:
                log.warning(
                    "the active intermediate PQC CA %s expires at %s and NO next intermediate is ready: issue "
                    "one now (spire-pqc ca intermediate --out-dir %s/NAME; docs/runbooks.md)",
                    active.key_id[:16],
                    active.intermediate.not_after.isoformat(),
                    self._directory or "<intermediates_dir>",
                )
        if self._metrics is not None:
            self._metrics.observe_intermediates(current)

    def _archive(self, current: IntermediateSet) -> None:
        if self._directory is None:
            return
        directory = self._directory
        for entry in current.in_state(State.RETIRED):
            inter = entry.intermediate
            if not inter.in_directory:
                if entry.key_id not in self._reported:
                    self._reported.add(entry.key_id)
                    log.warning(
                        "intermediate %s (intermediate_cert_path) is retired: remove it from plugin_data and "
                        "archive its key %s (the plugin never moves a configured file)",
                        entry.key_id[:16],
                        inter.key_path,
                    )
                continue
            try:
                target = archive(inter, directory)
            except (OSError, SpirePqcError) as exc:
                log.error("cannot archive retired intermediate %s: %s", entry.key_id[:16], exc)  # noqa: TRY400
                continue
            log.info("archived retired intermediate %s (key kept, 0600) in %s", entry.key_id[:16], target)
            with self._lock:
                self._intermediates = tuple(i for i in self._intermediates if i.key_id != entry.key_id)
                self._keys.pop(entry.key_id, None)
