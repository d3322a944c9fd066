"""The hybrid SVID a tunnel presents, taken from the agent's own identity source and PQC provisioner.

:class:`AgentSvidSource` follows one SPIFFE ID's classical SVID as the source rotates it, asks the
provisioner for its PQC credentials (the same slots the Workload API uses, so a tunnel and a local
workload of the same ID share one issuance) and is a :class:`~spire_pqc.source.HybridSource`: the
current hybrid SVID, the classical bundles and the PQC bundles, each read when a channel asks.
Each new tunnel connection asks again, so it uses the credentials current at that moment; open
connections keep the ones they were set up with. Until credentials exist (the SPIRE agent or the PQC
CA unreachable, a refusal), :meth:`AgentSvidSource.get_hybrid_svid` raises UnavailableError and the
tunnels refuse connections; nothing waits for them, so the agent starts and serves regardless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping

from spire_pqc._internal.backoff import Backoff
from spire_pqc.agent.model import PqcCredentials, X509State
from spire_pqc.agent.outage import Outage
from spire_pqc.agent.pqc import PqcProvisioner
from spire_pqc.bundle import BundleSet, X509Bundle
from spire_pqc.errors import SpirePqcError, UnavailableError
from spire_pqc.spiffeid import SpiffeId, TrustDomain
from spire_pqc.svid import HybridSvid

log = logging.getLogger(__name__)

# While the identity source cannot answer (the SPIRE agent restarting): soon at first, then every few seconds.
RETRY_INITIAL_SECONDS = 0.5
RETRY_MAX_SECONDS = 5.0

StateWatch = Callable[[SpiffeId], AsyncIterator[X509State]]


def _bundle_set(bundles: Mapping[TrustDomain, bytes], revoked: frozenset[str] = frozenset()) -> BundleSet:
    return BundleSet(
        X509Bundle(td, X509Bundle.from_der(td, der).authorities, revoked=revoked)
        for td, der in bundles.items()
    )


class _PqcBundles:
    """The provisioner's PQC roots as a BundleSource (rebuilt only when they change)."""

    def __init__(self, provisioner: PqcProvisioner) -> None:
        self._provisioner = provisioner
        self._current: tuple[int, BundleSet] = (-1, BundleSet())  # (version, set): swapped at once

    def get_bundle_for_trust_domain(self, trust_domain: TrustDomain, /) -> X509Bundle:
        version = self._provisioner.changes.version
        if version != self._current[0]:
            self._current = (version, _bundle_set(self._provisioner.pqc_bundles(), self._provisioner.revoked))
        return self._current[1].get_bundle_for_trust_domain(trust_domain)


class AgentSvidSource:
    """Current hybrid SVID of ``spiffe_id`` plus the bundles to verify peers, kept up to date by a task."""

    def __init__(self, spiffe_id: SpiffeId, watch: StateWatch, provisioner: PqcProvisioner) -> None:
        self.spiffe_id = spiffe_id
        self._watch = watch
        self._provisioner = provisioner
        self._state: X509State | None = None
        self._classical = BundleSet()
        self._pqc = _PqcBundles(provisioner)
        self._cached: tuple[PqcCredentials, HybridSvid] | None = None
        self._task: asyncio.Task[None] | None = None
        self._outage = Outage(log, f"tunnel identity {spiffe_id} unavailable (retrying with backoff)")

    def start(self) -> None:
        self._task = asyncio.create_task(self._follow(), name=f"spire-pqc-tunnel-identity {self.spiffe_id}")

    async def _follow(self) -> None:
        backoff = Backoff(RETRY_INITIAL_SECONDS, RETRY_MAX_SECONDS)
        while True:
            try:
                async for state in self._watch(self.spiffe_id):
                    self._outage.clear()
                    backoff.reset()
                    self._state = state
                    self._classical = _bundle_set(state.bundles)
                    self._provisioner.ensure(state.svids, state.bundles)
            except SpirePqcError as exc:
                if isinstance(exc, UnavailableError) and self._provisioner.changes.closed:
                    return  # the agent is shutting down
                self._outage.hit(exc)
            await asyncio.sleep(backoff.next())

    def get_hybrid_svid(self) -> HybridSvid:
        state = self._state
        if state is None or not state.svids:
            raise UnavailableError(f"no classical SVID yet for {self.spiffe_id}")
        credentials = self._provisioner.credentials_for(state.svids[0])
        if credentials is None:
            why = self._provisioner.last_error(state.svids[0])
            raise UnavailableError(
                f"no PQC credentials yet for {self.spiffe_id}" + (f": {why}" if why else "")
            )
        # Same object for the same credentials: the channel caches its TLS context per SVID object.
        if self._cached is None or self._cached[0] is not credentials:
            self._cached = (credentials, credentials.hybrid_svid())
        return self._cached[1]

    def get_classical_bundle(self, trust_domain: TrustDomain, /) -> X509Bundle:
        return self._classical.get(trust_domain)

    def get_pqc_bundle(self, trust_domain: TrustDomain, /) -> X509Bundle:
        return self._pqc.get_bundle_for_trust_domain(trust_domain)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
