"""PQC provisioning: per classical SVID, node-generated ML-DSA-65 / ML-KEM-768 keys and their certificates.

One :class:`_Slot` per classical SVID (keyed by the SHA-256 of its leaf), shared by every caller and
stream that holds that SVID: the CA allows one issuance per classical SVID serial, so two streams must
never ask twice with different keys. Keys are generated once per slot (off the event loop) and
reused across retries, so a retry after a lost reply gets the same certificates back from the CA's
ledger instead of a "duplicate" refusal. Private keys live only in memory; a rotation (new classical
SVID) means a new slot and new keys, and slots are dropped when their classical SVID expires.

When the CA is unreachable the slot retries with exponential backoff and jitter until its classical
SVID expires; meanwhile :meth:`PqcProvisioner.credentials_for` still returns the previous,
still-valid credentials of the same SPIFFE ID. Every new credential or bundle bumps
:attr:`PqcProvisioner.changes`, which wakes the hybrid streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from spire_pqc._internal.backoff import backoff_delays
from spire_pqc.agent.caclient import CAClient
from spire_pqc.agent.metrics import Metrics
from spire_pqc.agent.model import ClassicalSvid, PqcCredentials
from spire_pqc.agent.notify import Broadcast
from spire_pqc.ca.request import build_request
from spire_pqc.crypto.aio import generate_mldsa65, generate_mlkem768, run_crypto
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey
from spire_pqc.crypto.mlkem import MLKEM768PrivateKey
from spire_pqc.errors import IssuanceError, MalformedCredentialError, ParseError, SpirePqcError
from spire_pqc.spiffeid import TrustDomain
from spire_pqc.x509 import certs
from spire_pqc.x509.load import load_der_certificate

log = logging.getLogger(__name__)


@dataclass
class _Slot:
    svid: ClassicalSvid
    first_seen: float
    attempted: asyncio.Event = field(default_factory=asyncio.Event)
    credentials: PqcCredentials | None = None
    last_error: str | None = None
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
    ) -> None:
        self._ca = ca
        self._retry_initial = retry_initial.total_seconds()
        self._retry_max = retry_max.total_seconds()
        self._metrics = metrics or Metrics()
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not a secret
        self._slots: dict[bytes, _Slot] = {}
        # PQC roots per trust domain: the latest the CA returned, plus configured federated ones.
        self._bundles: dict[TrustDomain, bytes] = dict(static_bundles or {})
        self.changes: Broadcast[int] = Broadcast()
        if self._bundles:
            self.changes.publish(1)
        self._closed = False

    # --- queries -------------------------------------------------------------------------------

    def pqc_bundles(self) -> dict[TrustDomain, bytes]:
        return dict(self._bundles)

    def credentials_for(self, svid: ClassicalSvid) -> PqcCredentials | None:
        """Credentials for ``svid``, else the newest still-valid ones of the same SPIFFE ID, else None."""
        slot = self._slots.get(svid.leaf_hash)
        if slot is not None and slot.credentials is not None:
            return slot.credentials
        now = self._clock()
        fallback = [
            s.credentials
            for s in self._slots.values()
            if s.credentials is not None
            and s.svid.spiffe_id == svid.spiffe_id
            and s.credentials.not_after > now
        ]
        return max(fallback, key=lambda c: c.obtained) if fallback else None

    def last_error(self, svid: ClassicalSvid) -> str | None:
        slot = self._slots.get(svid.leaf_hash)
        return slot.last_error if slot is not None else None

    async def wait_attempted(self, svids: Sequence[ClassicalSvid], timeout: float) -> None:
        """Wait (at most ``timeout``) until each SVID's first issuance attempt finished."""
        events = [self._slots[s.leaf_hash].attempted for s in svids if s.leaf_hash in self._slots]
        if events:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*(e.wait() for e in events)), timeout)

    # --- provisioning --------------------------------------------------------------------------

    def ensure(self, svids: Sequence[ClassicalSvid]) -> None:
        """Start provisioning each SVID not seen before (idempotent, cheap; called on every state)."""
        if self._closed:
            return
        now = self._clock()
        for svid in svids:
            key = svid.leaf_hash
            if key in self._slots or svid.not_after <= now:
                continue
            slot = _Slot(svid, time.monotonic())
            self._slots[key] = slot
            slot.task = asyncio.create_task(
                self._provision(slot), name=f"spire-pqc-provision {svid.spiffe_id}"
            )
            self._supersede(svid)
        self._prune(now)

    def _supersede(self, svid: ClassicalSvid) -> None:
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
        self._metrics.pqc_identities.set(sum(1 for s in self._slots.values() if s.credentials is not None))

    async def _provision(self, slot: _Slot) -> None:
        svid = slot.svid
        sid = str(svid.spiffe_id)
        mldsa = await generate_mldsa65()
        mlkem = await generate_mlkem768()
        delay = backoff_delays(self._retry_initial, self._retry_max, self._rng)
        while not self._closed:
            if svid.not_after <= self._clock():
                log.warning("classical SVID of %s expired before PQC credentials could be obtained", sid)
                break
            try:
                slot.credentials = await self._issue_once(svid, mldsa, mlkem)
            except SpirePqcError as exc:
                slot.last_error = str(exc)
                self._metrics.issuance.labels(result="failure").inc()
                log.warning("PQC issuance for %s failed (will retry): %s", sid, exc)
            else:
                slot.last_error = None
                self._metrics.issuance.labels(result="success").inc()
                lag = time.monotonic() - slot.first_seen
                self._metrics.rotation_lag.observe(lag)
                self._metrics.pqc_identities.set(
                    sum(1 for s in self._slots.values() if s.credentials is not None)
                )
                td = svid.spiffe_id.trust_domain
                if slot.credentials.pqc_bundle:
                    self._bundles[td] = b"".join(slot.credentials.pqc_bundle)
                log.info("PQC credentials for %s ready in %.3fs", sid, lag)
                slot.attempted.set()
                self.changes.publish(self.changes.version + 1)
                return
            slot.attempted.set()
            await asyncio.sleep(delay())
        slot.attempted.set()

    async def _issue_once(
        self, svid: ClassicalSvid, mldsa: MLDSA65PrivateKey, mlkem: MLKEM768PrivateKey
    ) -> PqcCredentials:
        now_ms = int(self._clock().timestamp() * 1000)
        request = await run_crypto(
            lambda: build_request(
                svid.chain_der_list, svid.key, mldsa, mlkem.public_key().spki(), timestamp_ms=now_ms
            )
        )
        response = await self._ca.issue(request)
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
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._slots.clear()
        self.changes.close()
        await self._ca.close()
