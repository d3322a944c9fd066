"""The embedded development identity source (docs/architecture.md, "Identity sources").

A dev classical CA (ECDSA P-256) stands in for SPIRE and issues X509-SVIDs that carry the
SvidBinding, signed by the dev PQC hierarchy's intermediate — the same composer code path SPIRE
plus our plugin use. The dev CAs (:class:`~spire_pqc.ca.devca.DevAuthority`) are kept in
``source.dev.ca_dir`` (default ``<agent.state_dir>/dev-ca``), so a restarted dev agent keeps its
trust and dev agents sharing one directory trust each other; without a directory (programmatic use)
they live in memory for the source's lifetime. Callers are attested from their Unix credentials and
matched against the configured entries (all of an entry's selectors must match, as in SPIRE). SVIDs
rotate at half their TTL, as SPIRE's agent does. :meth:`DevIdentitySource.ca_client` is the in-process
PQC CA.

Everything is labelled dev (subject O=spire-pqc-dev) and the configuration loader refuses this
source when ``agent.production = true``.

JWT-SVIDs are signed with the dev ES256 key (P-256) of the trust domain, kept with the dev CAs and
published as the trust domain's JWT bundle (JWKS); they live ``jwt_ttl`` (5 minutes by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization

from spire_pqc.agent.attestor import Attestor, matches, unix_selectors
from spire_pqc.agent.caclient import LocalCAClient
from spire_pqc.agent.config import DevEntry, DevSourceConfig
from spire_pqc.agent.jwtsvid import DEFAULT_JWT_TTL, JwtSigningKey, JwtSvid, jwks_bytes
from spire_pqc.agent.model import Caller, X509State
from spire_pqc.agent.notify import Broadcast
from spire_pqc.agent.perstate import PerState
from spire_pqc.bundle import BundleSet, X509Bundle
from spire_pqc.ca.devca import DevAuthority, DevClassicalCA, PQCHierarchy
from spire_pqc.ca.issuer import PQCIssuer
from spire_pqc.ca.jwtsigning import IntermediateSigners, JwtSigning
from spire_pqc.ca.ledger import MEMORY, IssuanceLedger, Pruner, open_ledger
from spire_pqc.crypto.aio import run_crypto
from spire_pqc.errors import AuthorizationError, UnavailableError
from spire_pqc.spiffeid import SpiffeId, TrustDomain
from spire_pqc.svid import X509Svid

log = logging.getLogger(__name__)

DEV_FRESHNESS = dt.timedelta(seconds=10)


@dataclass(frozen=True)
class _State:
    svids: Mapping[DevEntry, X509Svid]
    bundle_der: bytes


class DevIdentitySource:
    """Dev CA + in-process PQC CA; rotates every entry's SVID at half its TTL."""

    name = "dev"

    def __init__(
        self,
        config: DevSourceConfig,
        *,
        attestor: Attestor = unix_selectors,
        jwt_ttl: dt.timedelta = DEFAULT_JWT_TTL,
        ledger_dsn: str = MEMORY,
    ) -> None:
        self._config = config
        self._jwt_ttl = jwt_ttl
        self._jwt_key: JwtSigningKey | None = None
        self._jwt_bundles: Broadcast[Mapping[TrustDomain, bytes]] = Broadcast()
        self._attestor = attestor
        self._state: Broadcast[_State] = Broadcast()
        self._views: PerState[dict[tuple[DevEntry, ...], X509State]] = PerState()
        self._ca: DevClassicalCA | None = None
        self._hierarchy: PQCHierarchy | None = None
        self._issuer: PQCIssuer | None = None
        self._jwt_signing: JwtSigning | None = None
        # Where the in-process PQC CA's issuance ledger lives (default: in memory); its expired
        # entries are pruned in the background so memory stays flat under rotation.
        self._ledger_dsn = ledger_dsn
        self._ledger: IssuanceLedger | None = None
        self._pruner: Pruner | None = None
        self._rotation: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.rotations = 0

    @property
    def ready(self) -> bool:
        return self._state.value is not None

    @property
    def hierarchy(self) -> PQCHierarchy:
        if self._hierarchy is None:
            raise UnavailableError("dev source not started")
        return self._hierarchy

    @property
    def classical_ca(self) -> DevClassicalCA:
        if self._ca is None:
            raise UnavailableError("dev source not started")
        return self._ca

    @property
    def jwt_key(self) -> JwtSigningKey:
        """The dev trust domain's JWT signing key."""
        if self._jwt_key is None:
            raise UnavailableError("dev source not started")
        return self._jwt_key

    def local_ca_client(self) -> LocalCAClient:
        """The in-process PQC CA of this dev trust domain (checks requests like the real endpoint)."""
        if self._issuer is None or self._jwt_signing is None:
            raise UnavailableError("dev source not started")
        td = self._config.trust_domain
        return LocalCAClient(
            self._issuer, jwt=self._jwt_signing, jwt_bundle=lambda: self.jwt_bundles().get(td, b"")
        )

    async def start(self) -> None:
        td = self._config.trust_domain
        ca_dir = self._config.ca_dir
        if ca_dir is None:
            authority = await run_crypto(lambda: DevAuthority.generate(td))
        else:
            authority = await asyncio.to_thread(DevAuthority.load_or_create, ca_dir, td)
        hierarchy, ca = authority.hierarchy, authority.classical
        self._hierarchy, self._ca = hierarchy, ca
        bundles = BundleSet([X509Bundle(td, [ca.certificate])])
        self._ledger = open_ledger(self._ledger_dsn)
        self._pruner = Pruner(self._ledger, interval=max(self._config.svid_ttl.total_seconds() / 2, 1.0))
        self._pruner.start()
        # The in-process CA shares this process's clock with its only client, so its freshness window
        # (how long a request stays valid, and how long after the SVID's expiry its ledger entry and
        # nonce are kept) can be short: the default 60 s cost ~9 MiB more RSS under fast rotation
        # (`spire-pqc bench rotation`, README).
        self._issuer = PQCIssuer(
            hierarchy.intermediate, td, bundles, ledger=self._ledger, freshness=DEV_FRESHNESS
        )
        signers = await run_crypto(lambda: IntermediateSigners(hierarchy.intermediate, td))
        self._jwt_signing = JwtSigning(td, signers, (hierarchy.root,))
        self._jwt_key = JwtSigningKey.from_key(authority.jwt_key)
        self._jwt_bundles.publish({td: jwks_bytes([self._jwt_key.public_jwk()])})
        where = f"kept in {ca_dir}" if ca_dir is not None else "in memory only"
        log.warning("dev identity source for trust domain %s (dev CAs %s): NOT FOR PRODUCTION", td, where)
        await self.rotate_now()
        self._rotation = asyncio.create_task(self._rotate_forever(), name="spire-pqc-dev-rotation")

    async def close(self) -> None:
        if self._rotation is not None:
            self._rotation.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._rotation
        self._state.close()
        self._jwt_bundles.close()
        if self._pruner is not None:
            await asyncio.to_thread(self._pruner.stop)
        if self._ledger is not None:
            self._ledger.close()

    async def rotate_now(self) -> None:
        """Issue a new SVID for every entry and push the new state to every watcher."""
        async with self._lock:
            ca = self.classical_ca
            ttl = self._config.svid_ttl

            def issue_all() -> dict[DevEntry, X509Svid]:
                issued = {}
                for entry in self._config.entries:
                    cert, key = ca.issue_svid(entry.spiffe_id, ttl=ttl)
                    issued[entry] = X509Svid(entry.spiffe_id, (cert,), key, entry.hint)
                return issued

            svids = await run_crypto(issue_all)
            bundle = ca.certificate.public_bytes(serialization.Encoding.DER)
            self._state.publish(_State(svids, bundle))
            self.rotations += 1
            log.info("dev source issued %d SVIDs (rotation %d)", len(svids), self.rotations)

    async def _rotate_forever(self) -> None:
        # SPIRE's agent renews an SVID when half of its lifetime has passed; so do we.
        interval = self._config.svid_ttl / 2
        while True:
            await asyncio.sleep(interval.total_seconds())
            try:
                await self.rotate_now()
            except Exception:  # keep rotating: a failed rotation must not end the loop
                log.exception("dev source rotation failed; retrying in %s", interval)

    def _entries_for(self, caller: Caller) -> list[DevEntry]:
        selectors = self._attestor(caller)
        entries = [e for e in self._config.entries if matches(e.selectors, selectors)]
        if not entries:
            log.info("no identity issued for pid %d (selectors %s)", caller.pid, sorted(selectors))
            raise AuthorizationError("no identity issued")
        return entries

    async def watch(self, caller: Caller) -> AsyncIterator[X509State]:
        entries = self._entries_for(caller)
        if self._state.value is None:
            raise UnavailableError("dev identity source is initialising")
        td = self._config.trust_domain
        key = tuple(entries)
        async for state in self._state.updates():
            # One X509State per (dev state, identity set): callers with the same entries share it, so
            # the handler serializes their answer once (perstate.py); other entry sets get their own.
            views = self._views.get(state, dict)
            view = views.get(key)
            if view is None:
                view = views[key] = X509State(tuple(state.svids[e] for e in key), {td: state.bundle_der})
            yield view

    async def watch_service(
        self, spiffe_id: SpiffeId, selectors: Sequence[str] = ()
    ) -> AsyncIterator[X509State]:
        """Like :meth:`watch`, for the agent itself acting as ``spiffe_id`` (its tunnels), not a caller;
        dev entries are matched by SPIFFE ID, so ``selectors`` are not needed."""
        entries = [e for e in self._config.entries if e.spiffe_id == spiffe_id]
        if not entries:
            raise AuthorizationError(f"no dev entry has the SPIFFE ID {spiffe_id}")
        if self._state.value is None:
            raise UnavailableError("dev identity source is initialising")
        td = self._config.trust_domain
        async for state in self._state.updates():
            yield X509State((state.svids[entries[0]],), {td: state.bundle_der})

    async def fetch_jwt_svids(
        self, caller: Caller, audience: Sequence[str], spiffe_id: SpiffeId | None
    ) -> list[JwtSvid]:
        """One JWT-SVID per identity of the caller (only ``spiffe_id``'s when given)."""
        entries = self._entries_for(caller)
        if spiffe_id is not None:
            entries = [e for e in entries if e.spiffe_id == spiffe_id]
            if not entries:
                raise AuthorizationError(f"no identity issued for {spiffe_id}")
        key = self._jwt_key
        if key is None:
            raise UnavailableError("dev identity source is initialising")
        ttl = self._jwt_ttl
        return await run_crypto(
            lambda: [JwtSvid(e.spiffe_id, key.sign(e.spiffe_id, audience, ttl), e.hint) for e in entries]
        )

    async def watch_jwt_bundles(self, caller: Caller) -> AsyncIterator[Mapping[TrustDomain, bytes]]:
        """The dev trust domain's JWT bundle (fixed for the source's lifetime)."""
        self._entries_for(caller)
        if self._jwt_bundles.value is None:
            raise UnavailableError("dev identity source is initialising")
        async for bundles in self._jwt_bundles.updates():
            yield bundles

    def jwt_bundles(self) -> Mapping[TrustDomain, bytes]:
        """The current JWT bundles, for validating tokens."""
        value = self._jwt_bundles.value
        if value is None:
            raise UnavailableError("dev identity source is initialising")
        return value
