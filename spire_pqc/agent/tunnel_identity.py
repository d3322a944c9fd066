"""The hybrid SVID a tunnel presents, taken from the agent's own identity source and PQC provisioner.

:class:`AgentSvidSource` follows one SPIFFE ID's classical SVID as the source rotates it, asks the
provisioner for its PQC credentials (the same slots the Workload API uses, so a tunnel and a local
workload of the same ID share one issuance) and answers the channel's three questions: the current
hybrid SVID (``HybridSvidSource``), the classical bundles and the PQC bundles (``BundleSource``).
Each new tunnel connection asks again, so it uses the credentials current at that moment; open
connections keep the ones they were set up with.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping

from cryptography import x509

from spire_pqc.agent.model import PqcCredentials, X509State
from spire_pqc.agent.pqc import PqcProvisioner
from spire_pqc.bundle import BundleSet, X509Bundle
from spire_pqc.errors import SpirePqcError, UnavailableError
from spire_pqc.spiffeid import SpiffeId, TrustDomain
from spire_pqc.svid import HybridSvid

log = logging.getLogger(__name__)

StateWatch = Callable[[SpiffeId], AsyncIterator[X509State]]


def hybrid_svid(credentials: PqcCredentials) -> HybridSvid:
    """Assemble the channel's HybridSvid from the agent's PQC credentials (keys checked on construction)."""
    load = x509.load_der_x509_certificate
    classical = credentials.classical
    return HybridSvid(
        spiffe_id=classical.spiffe_id,
        classical_chain=classical.chain,
        classical_key=classical.key,
        pqc_chain=tuple(load(c) for c in credentials.pqc_chain),
        pqc_key=credentials.pqc_key,
        kem_chain=tuple(load(c) for c in credentials.kem_chain),
        kem_key=credentials.kem_key,
        hint=classical.hint,
    )


def _bundle_set(bundles: Mapping[TrustDomain, bytes]) -> BundleSet:
    return BundleSet(X509Bundle.from_der(td, der) for td, der in bundles.items())


class _PqcBundles:
    """The provisioner's PQC roots as a BundleSource (rebuilt only when they change)."""

    def __init__(self, provisioner: PqcProvisioner) -> None:
        self._provisioner = provisioner
        self._version = -1
        self._set = BundleSet()

    def get_bundle_for_trust_domain(self, trust_domain: TrustDomain, /) -> X509Bundle:
        version = self._provisioner.changes.version
        if version != self._version:
            self._set = _bundle_set(self._provisioner.pqc_bundles())
            self._version = version
        return self._set.get_bundle_for_trust_domain(trust_domain)


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

    @property
    def pqc_bundles(self) -> _PqcBundles:
        return self._pqc

    def start(self) -> None:
        self._task = asyncio.create_task(self._follow(), name=f"spire-pqc-tunnel-identity {self.spiffe_id}")

    async def _follow(self) -> None:
        while True:
            try:
                async for state in self._watch(self.spiffe_id):
                    self._state = state
                    self._classical = _bundle_set(state.bundles)
                    self._provisioner.ensure(state.svids)
            except SpirePqcError as exc:
                if isinstance(exc, UnavailableError) and self._provisioner.changes.closed:
                    return  # the agent is shutting down
                log.warning("tunnel identity %s unavailable (retrying): %s", self.spiffe_id, exc)
            await asyncio.sleep(1.0)

    async def wait_ready(self, timeout: float) -> None:
        """Wait until a hybrid SVID is available (raise UnavailableError after ``timeout``)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            try:
                self.get_hybrid_svid()
                return
            except UnavailableError:
                if asyncio.get_running_loop().time() >= deadline:
                    raise
                await asyncio.sleep(0.02)

    def get_hybrid_svid(self) -> HybridSvid:
        state = self._state
        if state is None or not state.svids:
            raise UnavailableError(f"no classical SVID yet for {self.spiffe_id}")
        credentials = self._provisioner.credentials_for(state.svids[0])
        if credentials is None:
            raise UnavailableError(f"no PQC credentials yet for {self.spiffe_id}")
        # Same object for the same credentials: the channel caches its TLS context per SVID object.
        if self._cached is None or self._cached[0] is not credentials:
            self._cached = (credentials, hybrid_svid(credentials))
        return self._cached[1]

    def get_bundle_for_trust_domain(self, trust_domain: TrustDomain, /) -> X509Bundle:
        """Classical bundles (the channel's ``classical_bundles``)."""
        return self._classical.get_bundle_for_trust_domain(trust_domain)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
