"""A live, verified hybrid SVID source for asyncio applications.

:class:`HybridX509Source` keeps the hybrid stream of the node agent open, verifies every update with
:func:`spire_pqc.svid.verify_hybrid_svid` (off the event loop) and exposes the latest verified state.
An update that does not verify is logged and ignored: the previous state stays in use (fail closed
on verification). When the stream breaks, the source reconnects with exponential backoff and jitter,
as the Workload API asks of clients (PermissionDenied and Unavailable are retried); other errors
are fatal and close the source.

Example::

    async with HybridX509Source() as source:         # SPIFFE_ENDPOINT_SOCKET, waits for the first SVID
        svid = source.svid                            # spire_pqc.svid.HybridSvid
        source.get_pqc_bundle(svid.spiffe_id.trust_domain)  # live: always the latest bundle
        await source.wait_until_updated()             # next rotation
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Sequence
from types import TracebackType

from spire_pqc._internal.backoff import Backoff
from spire_pqc.bundle import BundleSet, X509Bundle
from spire_pqc.crypto.aio import run_crypto
from spire_pqc.errors import AuthorizationError, SpirePqcError, UnavailableError, VerificationError
from spire_pqc.spiffeid import TrustDomain
from spire_pqc.svid import HybridSvid
from spire_pqc.workload.client import HybridUpdate, WorkloadClient

log = logging.getLogger(__name__)

SvidPicker = Callable[[Sequence[HybridSvid]], HybridSvid]


def _verify(update: HybridUpdate) -> None:
    for svid in update.svids:
        svid.verify(classical_bundles=update.classical_bundles, pqc_bundles=update.pqc_bundles)


class HybridX509Source:
    """The caller's hybrid SVIDs and bundles, kept current from the agent."""

    def __init__(
        self,
        client: WorkloadClient | None = None,
        *,
        address: str | None = None,
        picker: SvidPicker | None = None,
        retry_initial: float = 0.1,
        retry_max: float = 5.0,
    ) -> None:
        self._client = client if client is not None else WorkloadClient(address)
        self._picker = picker
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._update: HybridUpdate | None = None
        self._version = 0
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._fatal: BaseException | None = None
        self._last_error: SpirePqcError | None = None  # why the stream last broke (reported by start())
        self._closed = False

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self, timeout: float | None = None) -> None:
        """Connect and wait for the first verified update (raise its error if it fails fatally).

        Without one within ``timeout`` seconds, raise AuthorizationError ("no identity issued") when the
        agent has no identity for this process, else UnavailableError carrying the agent's last answer
        (e.g. why it has no PQC credentials for this workload); never a bare TimeoutError.
        """
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="spire-pqc-hybrid-source")
        try:
            await self.wait_until_updated(timeout, since=0)
        except TimeoutError as exc:
            if isinstance(self._last_error, AuthorizationError):
                # PermissionDenied: the agent knows this process and has no identity for it (no
                # registration entry matches it). Retried until now, as the Workload API asks.
                raise AuthorizationError(
                    f"no identity issued for this process by the agent within {timeout}s "
                    f"(no registration entry matches it; last answer: {self._last_error})"
                ) from exc
            why = f"; last answer: {self._last_error}" if self._last_error is not None else ""
            raise UnavailableError(f"no hybrid SVID from the agent within {timeout}s{why}") from exc

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._client.close()
        self._wake()

    async def __aenter__(self) -> HybridX509Source:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # --- state -----------------------------------------------------------------------------------

    def _current(self) -> HybridUpdate:
        if self._closed:
            raise SpirePqcError("hybrid source is closed")
        if self._update is None:
            raise UnavailableError("hybrid source has no SVID yet")
        return self._update

    @property
    def svids(self) -> tuple[HybridSvid, ...]:
        return self._current().svids

    @property
    def svid(self) -> HybridSvid:
        """The default SVID: the picker's choice, else the first (Workload API default identity)."""
        svids = self.svids
        return self._picker(svids) if self._picker is not None else svids[0]

    # --- the HybridSource protocol (spire_pqc.source): channels ask at every handshake -------------

    def get_hybrid_svid(self) -> HybridSvid:
        """The SVID new connections present: the current default SVID."""
        return self.svid

    def get_classical_bundle(self, trust_domain: TrustDomain, /) -> X509Bundle:
        """The current classical bundle of ``trust_domain`` (UnknownTrustDomainError if none)."""
        return self._current().classical_bundles.get(trust_domain)

    def get_pqc_bundle(self, trust_domain: TrustDomain, /) -> X509Bundle:
        """The current PQC bundle of ``trust_domain`` (UnknownTrustDomainError if none)."""
        return self._current().pqc_bundles.get(trust_domain)

    @property
    def classical_bundles(self) -> BundleSet:
        """A snapshot of the current classical bundles (channels read them live, per handshake)."""
        return self._current().classical_bundles

    @property
    def pqc_bundles(self) -> BundleSet:
        """A snapshot of the current PQC bundles (channels read them live, per handshake)."""
        return self._current().pqc_bundles

    @property
    def version(self) -> int:
        """Increases with every applied update."""
        return self._version

    async def wait_until_updated(self, timeout: float | None = None, *, since: int | None = None) -> None:
        """Wait for an update newer than ``since`` (default: the current one)."""
        seen = self._version if since is None else since
        async with asyncio.timeout(timeout):
            while self._version == seen:
                if self._fatal is not None:
                    raise self._fatal
                if self._closed:
                    raise SpirePqcError("hybrid source is closed")
                event = self._changed
                await event.wait()

    def _wake(self) -> None:
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    # --- the stream ----------------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = Backoff(self._retry_initial, self._retry_max)
        while not self._closed:
            delay = None
            try:
                async for update in self._client.watch_hybrid_svids():
                    try:
                        await run_crypto(functools.partial(_verify, update))
                    except VerificationError as exc:
                        log.warning("ignoring a hybrid SVID update that does not verify: %s", exc)
                        continue
                    self._update = update
                    self._version += 1
                    backoff.reset()
                    self._wake()
            except (UnavailableError, AuthorizationError) as exc:
                self._last_error = exc
                delay = backoff.next()
                log.info("hybrid stream interrupted (%s); reconnecting in about %.1fs", exc, delay)
            except SpirePqcError as exc:
                log.warning("hybrid source stopped: %s", exc)
                self._fatal = exc
                self._wake()
                return
            # The stream broke: a new connection is needed (the agent may have restarted).
            self._client.close()
            await asyncio.sleep(backoff.next() if delay is None else delay)
