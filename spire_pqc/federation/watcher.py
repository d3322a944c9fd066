"""Keeping federated PQC bundles fresh: fetch, verify, keep the last good one, report changes.

One :class:`FederatedBundleWatcher` follows several remote trust domains. For each it starts from the
operator's *initial* PQC roots (as SPIRE's ``https_spiffe`` federation starts from an initial bundle),
then polls the remote endpoint every ``spiffe_refresh_hint`` seconds. A document is accepted only if
:func:`~spire_pqc.federation.document.verify_signed_bundle` accepts it against the roots trusted so far
and it does not go back in sequence; the accepted document's roots become the trusted roots (that is
how a root rotation arrives). Anything else — unreachable, wrong server identity, unsigned, tampered,
signed under an unknown root, replayed — is counted and logged in one line, the last good bundle
stays in force, and the next attempt follows an exponential backoff (the project's one helper).

With ``state_dir`` the last good signed document of each trust domain is kept there (atomic, 0600)
and read back at start, so a restart keeps a rotation that happened since the initial roots were
configured. A kept document is read only from a private file and must still verify under the roots
it lists (a torn or edited file is refused, and the watcher starts from the initial roots).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import json
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from spire_pqc._internal.backoff import Backoff
from spire_pqc._internal.files import atomic_write, private_directory, read_private
from spire_pqc.bundle import BundleSet, BundleSource, SpiffeBundle, X509Bundle
from spire_pqc.errors import SpirePqcError
from spire_pqc.federation.client import BundleEndpoint, fetch_signed_bundle
from spire_pqc.federation.document import SignedBundle, verify_signed_bundle
from spire_pqc.jwtsvid.bundle import PqcJwtBundle
from spire_pqc.spiffeid import TrustDomain

__all__ = ["FederatedBundleWatcher", "FederatedTrust", "RemoteTrust"]

log = logging.getLogger(__name__)

DEFAULT_REFRESH = 300.0  # seconds, when a document carries no refresh hint (SPIFFE Federation's ~5 min)


@dataclass(frozen=True)
class RemoteTrust:
    """A remote trust domain to follow: its endpoint and the PQC roots to trust before the first fetch."""

    endpoint: BundleEndpoint
    initial_roots: tuple[x509.Certificate, ...] = field(repr=False)

    @property
    def trust_domain(self) -> TrustDomain:
        return self.endpoint.trust_domain


@dataclass(frozen=True)
class FederatedTrust:
    """The last good state of one remote trust domain."""

    trust_domain: TrustDomain
    roots: tuple[x509.Certificate, ...] = field(repr=False)
    bundle: SpiffeBundle | None = None  # None until the first document is accepted
    signed: SignedBundle | None = field(default=None, repr=False)

    def pqc_bundle(self) -> X509Bundle:
        return X509Bundle(self.trust_domain, self.roots)

    def jwt_bundle(self) -> PqcJwtBundle:
        if self.bundle is None:
            return PqcJwtBundle(self.trust_domain)
        return PqcJwtBundle.from_entries(
            self.trust_domain, self.bundle.jwt_authorities.values(), what=f"PQC bundle of {self.trust_domain}"
        )


class FederatedBundleWatcher:
    """Follows remote PQC bundle endpoints; ``on_update(trust)`` is called after every accepted change."""

    def __init__(
        self,
        remotes: Sequence[RemoteTrust],
        *,
        classical_bundles: BundleSource,
        on_update: Callable[[FederatedTrust], None] | None = None,
        state_dir: Path | None = None,
        timeout: float = 10.0,
        min_refresh: float = 1.0,
        max_backoff: float = DEFAULT_REFRESH,
        rng: random.Random | None = None,
    ) -> None:
        tds = [r.trust_domain for r in remotes]
        if len(set(tds)) != len(tds):
            raise ValueError("each remote trust domain may be configured once")
        self._remotes = {r.trust_domain: r for r in remotes}
        self._classical = classical_bundles
        self._on_update = on_update
        self._state_dir = private_directory(state_dir) if state_dir is not None else None
        self._timeout = timeout
        self._min_refresh = min_refresh
        self._max_backoff = max_backoff
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not a secret
        self._state: dict[TrustDomain, FederatedTrust] = {}
        #: trust domain -> consecutive failures, and the last failure's reason (a stable check token)
        self.failures: dict[TrustDomain, int] = dict.fromkeys(tds, 0)
        self.last_error: dict[TrustDomain, str] = {}
        for remote in remotes:
            self._state[remote.trust_domain] = self._kept(remote) or FederatedTrust(
                remote.trust_domain, remote.initial_roots
            )

    # --- state ------------------------------------------------------------------------------------

    def trust(self, trust_domain: TrustDomain) -> FederatedTrust:
        return self._state[trust_domain]

    def pqc_bundles(self) -> BundleSet:
        """The PQC roots of every followed trust domain (the last good ones)."""
        return BundleSet(state.pqc_bundle() for state in self._state.values())

    def pqc_jwt_bundles(self) -> Mapping[TrustDomain, PqcJwtBundle]:
        return {td: state.jwt_bundle() for td, state in self._state.items()}

    def _path(self, td: TrustDomain) -> Path | None:
        return None if self._state_dir is None else self._state_dir / f"{td.name}.json"

    def _kept(self, remote: RemoteTrust) -> FederatedTrust | None:
        path = self._path(remote.trust_domain)
        if path is None or not path.exists():
            return None
        td = remote.trust_domain
        try:
            kept = json.loads(read_private(path))
            signed = SignedBundle(base64.b64decode(kept["document"], validate=True), str(kept["signature"]))
            own_roots = SpiffeBundle.parse(td, signed.document).x509_authorities
            bundle = verify_signed_bundle(td, signed, trusted_roots=own_roots)
        except (SpirePqcError, OSError, ValueError, KeyError, TypeError, binascii.Error) as exc:
            log.warning(
                "federation: ignoring the kept PQC bundle of %s (%s); starting from the initial roots",
                td,
                exc,
            )
            return None
        return FederatedTrust(td, bundle.x509_authorities, bundle, signed)

    def _keep(self, trust: FederatedTrust) -> None:
        path = self._path(trust.trust_domain)
        if path is None or trust.signed is None:
            return
        document = base64.b64encode(trust.signed.document).decode()
        atomic_write(path, json.dumps({"document": document, "signature": trust.signed.signature}).encode())

    # --- refreshing -------------------------------------------------------------------------------

    async def refresh(self, trust_domain: TrustDomain, *, now: dt.datetime | None = None) -> bool:
        """Fetch and verify once. True if a new bundle was accepted; raises the typed reason otherwise
        (the last good state is kept either way)."""
        remote = self._remotes[trust_domain]
        current = self._state[trust_domain]
        signed = await fetch_signed_bundle(
            remote.endpoint, classical_bundles=self._classical, timeout=self._timeout
        )
        bundle = verify_signed_bundle(
            trust_domain, signed, trusted_roots=current.roots, previous=current.bundle, at=now
        )
        if current.bundle is not None and bundle == current.bundle:
            return False
        updated = FederatedTrust(trust_domain, bundle.x509_authorities, bundle, signed)
        self._state[trust_domain] = updated
        self._keep(updated)
        log.info("federation: accepted PQC bundle of %s, sequence %s, %d root(s)", trust_domain, bundle.sequence,
                 len(bundle.x509_authorities))  # fmt: skip
        if self._on_update is not None:
            self._on_update(updated)
        return True

    def _next_refresh(self, trust_domain: TrustDomain) -> float:
        bundle = self._state[trust_domain].bundle
        hint = bundle.refresh_hint if bundle is not None and bundle.refresh_hint else DEFAULT_REFRESH
        return max(self._min_refresh, float(hint))

    async def _follow(self, trust_domain: TrustDomain) -> None:
        backoff = Backoff(self._min_refresh, self._max_backoff, rng=self._rng)
        while True:
            try:
                await self.refresh(trust_domain)
            except SpirePqcError as exc:
                self.failures[trust_domain] += 1
                self.last_error[trust_domain] = getattr(exc, "check", type(exc).__name__)
                wait = min(backoff.next(), self._next_refresh(trust_domain))
                log.warning("federation: PQC bundle of %s not updated, keeping the last good one (%s); retry in %.0f s",
                            trust_domain, exc, wait)  # fmt: skip
            else:
                self.failures[trust_domain] = 0
                backoff.reset()
                wait = self._next_refresh(trust_domain)
            await asyncio.sleep(wait)

    async def run(self) -> None:
        """Follow every remote trust domain until cancelled."""
        async with asyncio.TaskGroup() as group:
            for td in self._remotes:
                group.create_task(self._follow(td), name=f"federation {td}")
