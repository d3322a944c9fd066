"""PQC provisioning: per classical SVID, node-generated ML-DSA-65 / ML-KEM-768 keys and their certificates.

One :class:`_Slot` per classical SVID (keyed by the SHA-256 of its leaf), shared by every caller and
stream that holds that SVID: the CA allows one issuance per classical SVID serial, so two streams must
never ask twice with different keys. Keys are generated once per slot (off the event loop) and
reused across retries, so a retry after a lost reply gets the same certificates back from the CA's
ledger instead of a "duplicate" refusal. A rotation (new classical SVID) means a new slot and new
keys, and slots are dropped when their classical SVID expires.

With a :class:`~spire_pqc.agent.state.StateDirectory` the keys are also kept on disk (before the
first request) together with the certificates obtained, so a restarted agent serves them at once
(verified against the classical SVID SPIRE gives it again) and, where the certificates were not
obtained yet, asks again with the same keys.

When the CA is unreachable the slot retries with exponential backoff and jitter until its classical
SVID expires; meanwhile :meth:`PqcProvisioner.credentials_for` still returns the previous,
still-valid credentials of the same SPIFFE ID. A "duplicate" refusal is final for that classical SVID
(the CA certified other keys for it: they were lost, or another agent holds the SVID): it is logged
and counted once, reported to the workload, and never retried; the next classical SVID gets a new
slot. Every new credential or bundle bumps :attr:`PqcProvisioner.changes`, which wakes the hybrid
streams. The PQC JWT bundle of a trust domain (docs/pq-jwt.md) comes with the CA's replies like the
PQC roots and is kept here too (:meth:`PqcProvisioner.note_bundles`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from spire_pqc._internal.backoff import Backoff
from spire_pqc.agent.caclient import BundleFetcher, CAClient
from spire_pqc.agent.cacontact import CAContact
from spire_pqc.agent.metrics import Metrics
from spire_pqc.agent.model import PqcCredentials
from spire_pqc.agent.notify import Broadcast
from spire_pqc.agent.state import StateDirectory, StoredCredentials, restore
from spire_pqc.ca.request import BundleUpdate, build_request
from spire_pqc.crypto.aio import generate_mldsa65, generate_mlkem768, run_crypto
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey
from spire_pqc.crypto.mlkem import MLKEM768PrivateKey
from spire_pqc.errors import (
    BundleError,
    IssuanceError,
    MalformedCredentialError,
    ParseError,
    RefusalReason,
    SpirePqcError,
)
from spire_pqc.jwtsvid.bundle import MAX_JWT_KEYS, PqcJwtBundle, PqcJwtKey, revoked_issuer
from spire_pqc.spiffeid import TrustDomain
from spire_pqc.svid import X509Svid
from spire_pqc.x509 import certs
from spire_pqc.x509.load import load_der_certificate

log = logging.getLogger(__name__)


_NO_BUNDLES: Mapping[TrustDomain, bytes] = MappingProxyType({})
RESTORED = "restored from the state directory"


def _skew(update: BundleUpdate, asked: dt.datetime, answered: dt.datetime) -> dt.timedelta | None:
    """The CA's clock minus ours, taking its answer to be made halfway through the call."""
    if update.server_time_ms is None:
        return None
    server = dt.datetime.fromtimestamp(update.server_time_ms / 1000, dt.UTC)
    return server - (asked + (answered - asked) / 2)


@dataclass
class _Slot:
    svid: X509Svid
    first_seen: float
    # The classical bundles that came with the SVID: what stored credentials are verified against.
    bundles: Mapping[TrustDomain, bytes]
    attempted: asyncio.Event = field(default_factory=asyncio.Event)
    credentials: PqcCredentials | None = None
    last_error: str | None = None
    refused: bool = False  # refused for good (duplicate): no more requests for this classical SVID
    revoked: bool = False  # its credentials were signed by a revoked intermediate; re-issuance pending
    task: asyncio.Task[None] | None = None


class PqcProvisioner:
    def __init__(
        self,
        ca: CAClient,
        *,
        retry_initial: dt.timedelta = dt.timedelta(seconds=1),
        retry_max: dt.timedelta = dt.timedelta(seconds=60),
        metrics: Metrics | None = None,
        static_bundles: Mapping[TrustDomain, bytes] | None = None,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        rng: random.Random | None = None,
        state: StateDirectory | None = None,
        revoked: Collection[str] = (),
        contact: CAContact | None = None,
    ) -> None:
        self._ca = ca
        # What /ready and /status say about the CA: every issuance and bundle poll is recorded there.
        self.contact = contact or CAContact("PQC CA", window=dt.timedelta(seconds=90), clock=clock)
        # Revoked intermediates' key ids: configured, plus every list the CA sends (never shrinks here).
        self._revoked = frozenset(k.lower() for k in revoked)
        self._state = state
        self._retry_initial = retry_initial.total_seconds()
        self._retry_max = retry_max.total_seconds()
        self._metrics = metrics or Metrics()
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not a secret
        self._slots: dict[bytes, _Slot] = {}
        self._writes: set[asyncio.Future[None]] = set()
        # PQC roots per trust domain: the latest the CA returned, plus configured federated ones.
        self._bundles: dict[TrustDomain, bytes] = dict(static_bundles or {})
        self._jwt_bundles: dict[TrustDomain, PqcJwtBundle] = {}
        # Keys withdrawn for a revoked intermediate, by kid: validation still finds them to name why.
        self._revoked_jwt_keys: dict[TrustDomain, dict[str, PqcJwtKey]] = {}
        self._federated = frozenset(self._bundles)  # configured: never replaced by what a CA says
        self.changes: Broadcast[int] = Broadcast()
        if self._bundles:
            self.changes.publish(1)
        self._closed = False
        self._refresher: asyncio.Task[None] | None = None

    # --- the PQC bundle and revocations, polled from the CA ------------------------------------

    def start_bundle_refresh(self, interval: dt.timedelta) -> None:
        """Poll the CA's PQC bundle and revocations every ``interval`` (if the CA client can)."""
        if isinstance(self._ca, BundleFetcher) and self._refresher is None:
            self._refresher = asyncio.create_task(
                self._refresh_bundles(self._ca, interval.total_seconds()), name="spire-pqc-bundle-refresh"
            )

    async def _refresh_bundles(self, ca: BundleFetcher, interval: float) -> None:
        failing = False
        while not self._closed:
            try:
                asked = self._clock()
                update = await ca.fetch_bundle()
                answered = self._clock()
                self.apply_bundle(update)
                self.contact.succeeded(skew=_skew(update, asked, answered))
                if failing:
                    log.info("PQC bundle refresh works again")
                failing = False
            except SpirePqcError as exc:
                self.contact.failed(str(exc))
                if not failing:
                    log.warning("cannot refresh the PQC bundle from the CA (keeping the last one): %s", exc)
                failing = True
            await asyncio.sleep(interval)

    def apply_bundle(self, update: BundleUpdate) -> None:
        """A PQC bundle and revocation list from the CA: the bundle replaces the trust domain's (pushed
        to every open stream), new revocations drop and re-issue what they signed."""
        try:
            td = TrustDomain.parse(update.trust_domain)
        except SpirePqcError as exc:
            raise MalformedCredentialError(f"PQC bundle of the CA: bad trust domain: {exc}") from exc
        if td in self._federated:
            raise MalformedCredentialError(
                f"the PQC CA sent a bundle for {td}, a federated trust domain configured on this agent: ignored"
            )
        self._learn_revoked(update.revoked_intermediates)
        if update.pqc_bundle:
            bundle = b"".join(update.pqc_bundle)
            if self._bundles.get(td) != bundle:
                self._bundles[td] = bundle
                log.info("PQC bundle of %s updated: %d root(s)", td, len(update.pqc_bundle))
                self.changes.publish(self.changes.version + 1)
        self.note_bundles(td, pqc_jwt_bundle=update.pqc_jwt_bundle)

    # --- queries -------------------------------------------------------------------------------

    def pqc_bundles(self) -> dict[TrustDomain, bytes]:
        return dict(self._bundles)

    def pqc_jwt_bundles(self) -> dict[TrustDomain, PqcJwtBundle]:
        return dict(self._jwt_bundles)

    def pqc_jwt_bundles_to_validate(self) -> dict[TrustDomain, PqcJwtBundle]:
        """The served PQC JWT bundles plus the keys withdrawn because their intermediate was revoked
        (while certified), so validation names the revocation (RevokedError, check ``revoked``, with
        the key id) instead of answering "unknown key". Never served to workloads."""
        now = self._clock()
        result = dict(self._jwt_bundles)
        for td, withdrawn in self._revoked_jwt_keys.items():
            live = [k for k in withdrawn.values() if k.chain[0].not_valid_after_utc > now]
            served = result.get(td, PqcJwtBundle(td))
            extra = [k for k in live if k.kid not in served][: max(0, MAX_JWT_KEYS - len(served))]
            if extra:
                result[td] = PqcJwtBundle(td, [*served, *extra])
        return result

    def note_bundles(
        self, trust_domain: TrustDomain, *, pqc_bundle: Sequence[bytes] = (), pqc_jwt_bundle: bytes = b""
    ) -> None:
        """Keep ``trust_domain``'s PQC roots (DER) and PQC JWT bundle (JWK Set) as the CA sent them
        beside a JWT-SVID part or an issuance, or as a federated trust domain's endpoint published them
        (empty: not sent).

        A JWT bundle that does not parse is logged and ignored, so the last good one stays; its keys
        are verified against the PQC roots whenever a token is validated, so it needs no trust.
        Keys are merged, not replaced: a key this agent saw before stays until its certificate ends or
        its intermediate is revoked, so tokens of a retiring signer, and of every SPIRE server (HA: each
        certifies its own signers and an answer carries only its own), keep validating. Streams are
        woken only when something changed."""
        changed = False
        roots = b"".join(pqc_bundle)
        if roots and self._bundles.get(trust_domain) != roots:
            self._bundles[trust_domain] = roots
            changed = True
        if pqc_jwt_bundle:
            try:
                bundle = PqcJwtBundle.parse(trust_domain, pqc_jwt_bundle)
            except BundleError as exc:
                log.warning("ignored the PQC JWT bundle of %s the CA sent: %s", trust_domain, exc)
            else:
                merged = self._merged_jwt_bundle(trust_domain, bundle)
                if self._jwt_bundles.get(trust_domain) != merged:
                    added = [k.kid for k in merged if k.kid not in self._jwt_bundles.get(trust_domain, ())]
                    self._jwt_bundles[trust_domain] = merged
                    if added:
                        log.info("PQC JWT bundle of %s: key(s) %s added", trust_domain, ", ".join(added))
                    changed = True
        if changed:
            self.changes.publish(self.changes.version + 1)

    def _merged_jwt_bundle(self, trust_domain: TrustDomain, received: PqcJwtBundle) -> PqcJwtBundle:
        """``received`` plus the keys held before that are still certified and not revoked (newest
        first, within MAX_JWT_KEYS); revoked ones never."""
        now = self._clock()
        self._note_revoked_jwt_keys(trust_domain, received)
        fresh = [k for k in received if revoked_issuer(k, self._revoked) is None]
        kept = sorted(
            (
                k
                for k in self._jwt_bundles.get(trust_domain, ())
                if k.kid not in received
                and k.chain[0].not_valid_after_utc > now
                and revoked_issuer(k, self._revoked) is None
            ),
            key=lambda k: k.chain[0].not_valid_after_utc,
            reverse=True,
        )
        return PqcJwtBundle(trust_domain, [*fresh, *kept][:MAX_JWT_KEYS])  # fresh: at most MAX_JWT_KEYS

    def _note_revoked_jwt_keys(self, trust_domain: TrustDomain, keys: PqcJwtBundle) -> None:
        revoked = {k.kid: k for k in keys if revoked_issuer(k, self._revoked) is not None}
        if revoked:
            table = self._revoked_jwt_keys.setdefault(trust_domain, {})
            table.update(revoked)
            while len(table) > MAX_JWT_KEYS:  # the oldest first (insertion order)
                del table[next(iter(table))]

    def _withdraw_revoked_jwt_keys(self) -> None:
        for td, bundle in list(self._jwt_bundles.items()):
            self._note_revoked_jwt_keys(td, bundle)
            kept = [k for k in bundle if revoked_issuer(k, self._revoked) is None]
            if len(kept) != len(bundle):
                self._jwt_bundles[td] = PqcJwtBundle(td, kept)
                log.warning("PQC JWT bundle of %s: %d key(s) of revoked intermediates withdrawn", td,
                            len(bundle) - len(kept))  # fmt: skip
                self.changes.publish(self.changes.version + 1)

    @property
    def revoked(self) -> frozenset[str]:
        """Key ids of revoked intermediate PQC CAs (part of every PQC bundle handed out)."""
        return self._revoked

    def _usable(self, credentials: PqcCredentials) -> bool:
        return not (credentials.signer_key_ids & self._revoked)

    def credentials_for(self, svid: X509Svid) -> PqcCredentials | None:
        """Credentials for ``svid``, else the newest still-valid ones of the same SPIFFE ID, else None."""
        slot = self._slots.get(svid.leaf_hash)
        if slot is not None and slot.credentials is not None and self._usable(slot.credentials):
            return slot.credentials
        now = self._clock()
        fallback = [
            s.credentials
            for s in self._slots.values()
            if s.credentials is not None
            and s.svid.spiffe_id == svid.spiffe_id
            and s.credentials.not_after > now
            and self._usable(s.credentials)
        ]
        return max(fallback, key=lambda c: c.obtained) if fallback else None

    def last_error(self, svid: X509Svid) -> str | None:
        slot = self._slots.get(svid.leaf_hash)
        return slot.last_error if slot is not None else None

    def serving(self) -> bool:
        """Whether some classical SVID held has usable PQC credentials."""
        now = self._clock()
        return any(
            s.credentials is not None and s.credentials.not_after > now and s.svid.not_after > now
            for s in self._slots.values()
        )

    def holding(self) -> bool:
        """Whether some current classical SVID was asked for (by a workload or a tunnel)."""
        now = self._clock()
        return any(s.svid.not_after > now for s in self._slots.values())

    async def wait_attempted(self, svids: Sequence[X509Svid], timeout: float) -> None:
        """Wait (at most ``timeout``) until each SVID's first issuance attempt finished."""
        events = [self._slots[s.leaf_hash].attempted for s in svids if s.leaf_hash in self._slots]
        if events:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*(e.wait() for e in events)), timeout)

    # --- provisioning --------------------------------------------------------------------------

    def ensure(self, svids: Sequence[X509Svid], bundles: Mapping[TrustDomain, bytes] = _NO_BUNDLES) -> None:
        """Start provisioning each SVID not seen before (idempotent, cheap; called on every state).

        ``bundles`` are the classical bundles that came with the SVIDs (to verify stored credentials).
        """
        if self._closed:
            return
        now = self._clock()
        for svid in svids:
            key = svid.leaf_hash
            if key in self._slots or svid.not_after <= now:
                continue
            slot = _Slot(svid, time.monotonic(), bundles)
            self._slots[key] = slot
            slot.task = asyncio.create_task(
                self._provision(slot), name=f"spire-pqc-provision {svid.spiffe_id}"
            )
            self._supersede(svid)
        self._prune(now)

    def _supersede(self, svid: X509Svid) -> None:
        # Older SVIDs of the same ID that never got credentials are not worth more CA requests.
        for slot in self._slots.values():
            if (
                slot.svid.spiffe_id == svid.spiffe_id
                and slot.svid.leaf_hash != svid.leaf_hash
                and slot.credentials is None
                and slot.svid.leaf.not_valid_before_utc <= svid.leaf.not_valid_before_utc
                and slot.task is not None
            ):
                slot.task.cancel()

    def _prune(self, now: dt.datetime) -> None:
        for key, slot in list(self._slots.items()):
            if slot.svid.not_after <= now:
                if slot.task is not None:
                    slot.task.cancel()
                del self._slots[key]  # the private keys go with it
                if self._state is not None:
                    self._state.discard(key)
        if self._state is not None:
            self._state.prune(now)  # records of SVIDs no caller asked for since the restart
        self._update_gauges()

    def _update_gauges(self) -> None:
        slots = self._slots.values()
        self._metrics.pqc_identities.set(sum(1 for s in slots if s.credentials is not None))
        served = {s.svid.spiffe_id for s in slots if s.credentials is not None}
        self._metrics.refused_identities.set(
            len({s.svid.spiffe_id for s in slots if s.refused and s.svid.spiffe_id not in served})
        )
        self._metrics.revoked_identities.set(
            len({s.svid.spiffe_id for s in slots if s.revoked and s.svid.spiffe_id not in served})
        )

    async def _provision(self, slot: _Slot) -> None:
        try:
            await self._provision_slot(slot)
        finally:
            slot.attempted.set()  # also when cancelled (superseded, shutdown): never leave a waiter hanging

    async def _provision_slot(self, slot: _Slot) -> None:
        svid = slot.svid
        sid = str(svid.spiffe_id)
        keys = await self._restore(slot)
        if slot.credentials is not None and not self._usable(slot.credentials):
            log.warning("stored PQC credentials of %s were signed by a revoked intermediate; re-issuing", sid)
            slot.credentials, slot.revoked = None, True
        if slot.credentials is not None:
            self._obtained(slot, RESTORED)
        else:
            if keys is None:
                try:
                    keys = (await generate_mldsa65(), await generate_mlkem768())
                except SpirePqcError as exc:  # e.g. the PQ backend is unusable: nothing to retry with
                    self._metrics.rotations.labels(result="failure").inc()
                    slot.last_error = f"cannot generate PQC keys: {exc}"
                    log.error("PQC key rotation for %s failed: cannot generate keys: %s", sid, exc)  # noqa: TRY400
                    return
                # Kept before the CA sees them: after a crash, the same keys get the same certificates.
                await self._keep(StoredCredentials.pending(svid, *keys), sid)
            if not await self._obtain(slot, *keys, how="issued"):
                return
        assert keys is not None  # restored credentials come with their keys
        await self._renew_while_short(slot, *keys)

    def _superseded(self, slot: _Slot) -> bool:
        """A newer classical SVID of the same SPIFFE ID has PQC credentials: this one is not served."""
        return any(
            other.credentials is not None
            and other.svid.spiffe_id == slot.svid.spiffe_id
            and other.svid.leaf.not_valid_before_utc > slot.svid.leaf.not_valid_before_utc
            for other in self._slots.values()
        )

    def _learn_revoked(self, key_ids: Collection[str]) -> None:
        """Add revoked intermediates; drop every credential they signed and re-issue it at once."""
        new = frozenset(k.lower() for k in key_ids) - self._revoked
        if not new:
            return
        self._revoked = self._revoked | new
        self._withdraw_revoked_jwt_keys()
        affected = [
            s for s in self._slots.values() if s.credentials is not None and not self._usable(s.credentials)
        ]
        log.warning(
            "intermediate PQC CA(s) %s revoked: re-issuing the PQC credentials of %d classical SVID(s)",
            ", ".join(k[:16] for k in sorted(new)),
            len(affected),
        )
        for slot in affected:
            assert slot.credentials is not None
            keys = (slot.credentials.pqc_key, slot.credentials.kem_key)
            slot.credentials, slot.revoked = None, True
            if slot.task is asyncio.current_task():
                continue  # this slot is asking the CA right now: its answer replaces them
            if slot.task is not None:
                slot.task.cancel()
            slot.task = asyncio.create_task(
                self._reissue(slot, *keys), name=f"spire-pqc-reissue {slot.svid.spiffe_id}"
            )
        self._update_gauges()
        self.changes.publish(self.changes.version + 1)

    async def _reissue(self, slot: _Slot, mldsa: MLDSA65PrivateKey, mlkem: MLKEM768PrivateKey) -> None:
        # The same keys: the CA certifies them again with an intermediate that is not revoked.
        if await self._obtain(slot, mldsa, mlkem, how="re-issued (revoked intermediate)"):
            await self._renew_while_short(slot, mldsa, mlkem)

    async def _obtain(
        self, slot: _Slot, mldsa: MLDSA65PrivateKey, mlkem: MLKEM768PrivateKey, *, how: str
    ) -> bool:
        """Ask the CA (with backoff) until it answers; False if it never will for this classical SVID."""
        svid = slot.svid
        sid = str(svid.spiffe_id)
        backoff = Backoff(self._retry_initial, self._retry_max, rng=self._rng)
        while not self._closed:
            if svid.not_after <= self._clock():
                log.warning("classical SVID of %s expired before PQC credentials could be obtained", sid)
                return False
            try:
                credentials = await self._issue_once(svid, mldsa, mlkem)
            except IssuanceError as exc:
                if exc.reason is RefusalReason.DUPLICATE:
                    self._refused_for_good(slot, exc)
                    return False
                if exc.reason is RefusalReason.BAD_RESPONSE:
                    self._metrics.rotations.labels(result="failure").inc()  # issued, but not our keys
                self._failed(slot, exc)
            except MalformedCredentialError as exc:
                self._metrics.rotations.labels(result="failure").inc()  # issued, but does not parse
                self._failed(slot, exc)
            except SpirePqcError as exc:
                self._failed(slot, exc)
            else:
                if not self._usable(credentials):
                    self._failed(
                        slot,
                        IssuanceError(
                            "the CA answered with credentials a revoked intermediate signed",
                            reason="bad-response",
                            spiffe_id=sid,
                        ),
                    )
                    slot.attempted.set()
                    await asyncio.sleep(backoff.next())
                    continue
                slot.credentials, slot.revoked = credentials, False
                self._metrics.issuance.labels(result="success").inc()
                self._metrics.rotations.labels(result="success").inc()
                self._obtained(slot, how)
                await self._keep(StoredCredentials.issued(credentials), sid)
                return True
            slot.attempted.set()
            await asyncio.sleep(backoff.next())
        return False

    async def _renew_while_short(
        self, slot: _Slot, mldsa: MLDSA65PrivateKey, mlkem: MLKEM768PrivateKey
    ) -> None:
        """PQC certificates that end before their classical SVID (the CA's ``max_pqc_ttl``, or its
        intermediate's end) are renewed with the same keys at half of their life, so a workload is
        never served expired PQC credentials while its classical SVID is valid."""
        while not self._closed and slot.credentials is not None:
            credentials = slot.credentials
            if credentials.not_after >= slot.svid.not_after or self._superseded(slot):
                return
            renew_at = credentials.obtained + (credentials.not_after - credentials.obtained) / 2
            delay = (renew_at - self._clock()).total_seconds()
            if delay > 0:
                await asyncio.sleep(delay)
            if not await self._obtain(slot, mldsa, mlkem, how="renewed (same keys)"):
                return

    async def _restore(self, slot: _Slot) -> tuple[MLDSA65PrivateKey, MLKEM768PrivateKey] | None:
        """The slot's kept keys (and credentials, set on the slot when they verify), or None."""
        record = self._state.get(slot.svid.leaf_hash) if self._state is not None else None
        if record is None:
            return None
        sid = str(slot.svid.spiffe_id)
        svid, bundles, now = slot.svid, slot.bundles, self._clock()
        try:
            restored = await run_crypto(lambda: restore(record, svid, bundles, at=now))
        except SpirePqcError as exc:
            log.warning("discarding stored PQC keys of %s: %s", sid, exc)
            self._metrics.state.labels(event="discarded").inc()
            self._discard(svid.leaf_hash)
            return None
        if restored.problem is not None:
            # The keys are fine: ask the CA again with them (its ledger answers with the same certificates).
            self._metrics.signature_verifications.labels(result="failure", check="svid").inc()
            log.warning(
                "stored PQC certificates of %s are not used (%s); asking the CA again", sid, restored.problem
            )
            self._metrics.state.labels(event="discarded").inc()
        elif restored.credentials is not None:
            self._metrics.signature_verifications.labels(result="success", check="svid").inc()
            slot.credentials = restored.credentials
            self._metrics.state.labels(event="restored").inc()
        return restored.mldsa, restored.mlkem

    def _discard(self, leaf_hash: bytes) -> None:
        if self._state is not None:
            self._state.discard(leaf_hash)

    async def _keep(self, record: StoredCredentials, sid: str) -> None:
        if self._state is None:
            return
        # A write in progress is finished even if the slot's task is cancelled (shutdown, superseded):
        # close() waits for it, so a graceful stop never loses what was just issued.
        write = asyncio.ensure_future(asyncio.to_thread(self._state.save, record))
        self._writes.add(write)
        write.add_done_callback(lambda done: self._kept(done, sid))
        with contextlib.suppress(OSError):  # reported by _kept
            await asyncio.shield(write)

    def _kept(self, write: asyncio.Future[None], sid: str) -> None:
        self._writes.discard(write)
        exc = None if write.cancelled() else write.exception()
        if isinstance(exc, OSError):
            # Serving goes on; only the restart guarantee is lost for this SVID, so say it loudly.
            self._metrics.state.labels(event="write-failed").inc()
            log.error(
                "cannot keep the PQC keys of %s in %s (%s): they will not survive an agent restart",
                sid,
                self._state.path if self._state is not None else "?",
                exc.strerror or exc,
            )

    def _obtained(self, slot: _Slot, how: str) -> None:
        assert slot.credentials is not None
        slot.last_error = None
        lag = time.monotonic() - slot.first_seen
        self._metrics.rotation_lag.observe(lag)
        self._update_gauges()
        td = slot.svid.spiffe_id.trust_domain
        # A CA answer carries the bundle as of now; a restored record's may predate a root rotation,
        # so it only fills a gap (the bundle refresh brings the current one).
        fresh = how != RESTORED or td not in self._bundles
        if slot.credentials.pqc_bundle and fresh and td not in self._federated:
            self._bundles[td] = b"".join(slot.credentials.pqc_bundle)
        log.info("PQC credentials for %s %s in %.3fs", slot.svid.spiffe_id, how, lag)
        slot.attempted.set()
        self.changes.publish(self.changes.version + 1)

    def _failed(self, slot: _Slot, exc: SpirePqcError) -> None:
        slot.last_error = str(exc)
        self._metrics.issuance.labels(result="failure").inc()
        log.warning("PQC issuance for %s failed (will retry): %s", slot.svid.spiffe_id, exc)

    def _refused_for_good(self, slot: _Slot, exc: IssuanceError) -> None:
        svid = slot.svid
        slot.refused = True
        slot.last_error = (
            f"{exc}; not retried: the PQC CA certified other keys for this classical SVID (serial "
            f"{svid.leaf.serial_number:x}), so PQC credentials come with the next classical SVID "
            f"(this one expires at {svid.not_after.isoformat()})"
        )
        self._metrics.issuance.labels(result=RefusalReason.DUPLICATE.value).inc()
        self._update_gauges()
        log.error(
            "PQC CA refused %s as a duplicate (classical SVID serial %x): the keys it certified for this "
            "SVID are not in this agent's state directory (wiped, lost, or another agent holds the SVID). "
            "Not retrying; PQC credentials resume with the next classical SVID (by %s)",
            svid.spiffe_id,
            svid.leaf.serial_number,
            svid.not_after.isoformat(),
        )

    async def _issue_once(
        self, svid: X509Svid, mldsa: MLDSA65PrivateKey, mlkem: MLKEM768PrivateKey
    ) -> PqcCredentials:
        now_ms = int(self._clock().timestamp() * 1000)
        request = await run_crypto(
            lambda: build_request(
                svid.chain_der_list, svid.key, mldsa, mlkem.public_key().spki(), timestamp_ms=now_ms
            )
        )
        try:
            response = await self._ca.issue(request)
        except SpirePqcError as exc:
            self.contact.failed(str(exc))
            raise
        self.contact.succeeded()
        self.note_bundles(svid.spiffe_id.trust_domain, pqc_jwt_bundle=response.pqc_jwt_bundle)
        self._learn_revoked(response.revoked_intermediates)
        sid = str(svid.spiffe_id)
        if not response.pqc_svid_chain or not response.kem_certificate_chain:
            raise IssuanceError("the CA returned an empty chain", reason="bad-response", spiffe_id=sid)
        try:
            pqc_leaf = load_der_certificate(response.pqc_svid_chain[0], what="PQC SVID")
            kem_leaf = load_der_certificate(response.kem_certificate_chain[0], what="KEM certificate")
            # Fail closed on a reply that certifies other keys than ours (a confused or hostile CA).
            if certs.mldsa_public_key(pqc_leaf, spiffe_id=sid) != mldsa.public_key():
                raise IssuanceError(
                    "PQC SVID certifies another ML-DSA-65 key", reason="bad-response", spiffe_id=sid
                )
            if certs.mlkem_public_key(kem_leaf, spiffe_id=sid) != mlkem.public_key():
                raise IssuanceError(
                    "KEM certificate certifies another ML-KEM-768 key", reason="bad-response", spiffe_id=sid
                )
        except ParseError as exc:
            raise MalformedCredentialError(f"CA reply does not parse: {exc}", spiffe_id=sid) from exc
        return PqcCredentials(
            classical=svid,
            pqc_chain=response.pqc_svid_chain,
            pqc_key=mldsa,
            kem_chain=response.kem_certificate_chain,
            kem_key=mlkem,
            pqc_bundle=response.pqc_bundle,
            obtained=self._clock(),
        )

    async def close(self) -> None:
        self._closed = True
        tasks = [s.task for s in self._slots.values() if s.task is not None]
        if self._refresher is not None:
            tasks.append(self._refresher)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await asyncio.gather(*self._writes, return_exceptions=True)  # failures are reported by _kept
        self._slots.clear()
        self.changes.close()
        await self._ca.close()
