"""Verification results already established: each intermediate, peer leaf and binding checked once.

A peer presents the same intermediate PQC CA, PQC SVID and classical leaf on every connection until
its credentials rotate. Checking their ML-DSA-65 signatures again each time is pure waste: a
signature over fixed bytes under a fixed key verifies or not, forever. :class:`SignatureMemo` keeps
the *positive* outcomes, keyed by the identity of the signed certificate object (certificates from
outside come from :func:`spire_pqc.x509.load.load_der_certificate`, which hands out one object per
DER while it is cached) and the signer's raw public key. It stores nothing else:

* every other check still runs on every verification: validity at the given time, CA rules, path
  length, names and key identifiers, membership of the anchor in the trust domain's *current* bundle,
  the SPIFFE rules — so an expired intermediate, or a root removed from the bundle, is refused at
  once, cached or not;
* a tampered certificate is another DER, hence another object, hence a miss, and its signature fails;
* an entry holds its certificate, so an ``id`` is never reused while the entry lives; entries end at
  the certificate's notAfter and the memo is bounded (least recently used out first).

:class:`PathMemo` does the same for classical chains, which cryptography's RFC 5280 verifier checks
against a trust domain's bundle: keyed by the identity of every presented certificate *and* of every
authority of the bundle used (a rotated or revoked bundle is other objects, hence a miss), it keeps
the built path's validity window and answers only for a time inside it. Everything else the verifier
decides (signatures, names, constraints, policy) does not depend on time.

Revocation: :func:`forget_key` drops every result that a given intermediate's key vouched for
(call it with the revoked key's identifier, SHA-256 of its SubjectPublicKeyInfo, the SvidBinding's
``issuerKeyId``); :func:`forget_all` empties the memo. Refusing what a revoked key signed is the
verifier's job (its trust decisions run on every verification); the hook makes sure no result that
depended on that key outlives the revocation.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from spire_pqc.crypto.mldsa import MLDSA65PublicKey

#: Results kept per process: a node talks to few distinct peers; each entry holds one certificate.
MEMO_SIZE = 1024
#: Expired entries are swept out at most this often (seconds), when an entry is added: under rotation
#: every new SVID adds entries, and without the sweep each held its parsed certificate (~30 KB) until
#: MEMO_SIZE newer ones pushed it out - RSS grew for thousands of rotations (README, memory under
#: rotation).
SWEEP_INTERVAL = 1.0


class SignatureMemo:
    """Positive verification results by (signed object, signer key); bounded, expiring, thread-safe."""

    def __init__(self, size: int = MEMO_SIZE) -> None:
        self._size = size
        # (id(signed), signer raw key, purpose) -> (signed, signer key id, expiry)
        self._entries: OrderedDict[tuple[int, bytes, str], tuple[object, bytes, dt.datetime]] = OrderedDict()
        self._lock = threading.Lock()
        self._swept = 0.0
        self.hits = 0
        self.misses = 0

    def verified(
        self,
        signed: object,
        signer: MLDSA65PublicKey,
        *,
        purpose: str,
        expires: dt.datetime,
        check: Callable[[], bool],
    ) -> bool:
        """``check()`` (the signature verification) unless it already succeeded for this object and key.

        ``purpose`` separates signatures over different bytes of one object (the certificate's own
        signature, its SvidBinding); ``expires`` is when the result is dropped (the notAfter of the
        signed certificate). A False from ``check`` is returned and not remembered.
        """
        key = (id(signed), signer.raw(), purpose)
        now = dt.datetime.now(dt.UTC)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] is signed and now <= entry[2]:
                self._entries.move_to_end(key)
                self.hits += 1
                return True
        self.misses += 1
        if not check():
            return False
        if now > expires:
            return True  # correct but not worth keeping
        with self._lock:
            self._entries[key] = (signed, signer.key_id(), expires)
            self._entries.move_to_end(key)
            if time.monotonic() - self._swept >= SWEEP_INTERVAL:
                self._swept = time.monotonic()
                for stale in [k for k, entry in self._entries.items() if entry[2] < now]:
                    del self._entries[stale]
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
        return True

    def forget_key(self, key_id: bytes) -> int:
        """Drop every result vouched for by the key whose identifier is ``key_id``; return how many."""
        with self._lock:
            stale = [k for k, entry in self._entries.items() if entry[1] == key_id]
            for k in stale:
                del self._entries[k]
        return len(stale)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class PathMemo:
    """Classical paths already validated, by the identities of the chain and of the anchors; bounded."""

    def __init__(self, size: int = 256) -> None:
        self._size = size
        # ids of chain + anchors -> (the objects themselves, notBefore, notAfter of the built path)
        self._entries: OrderedDict[tuple[int, ...], tuple[tuple[object, ...], dt.datetime, dt.datetime]] = (
            OrderedDict()
        )
        self._lock = threading.Lock()
        self._swept = 0.0

    def valid(self, chain: Sequence[object], anchors: Sequence[object], at: dt.datetime) -> bool:
        """Whether this exact chain was validated against these exact anchors, for a window holding ``at``."""
        objects = (*chain, None, *anchors)
        key = tuple(map(id, objects))
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or not all(a is b for a, b in zip(entry[0], objects, strict=True)):
                return False
            if not entry[1] <= at <= entry[2]:
                return False
            self._entries.move_to_end(key)
            return True

    def remember(
        self,
        chain: Sequence[object],
        anchors: Sequence[object],
        not_before: dt.datetime,
        not_after: dt.datetime,
    ) -> None:
        """Record that ``chain`` validated against ``anchors`` with this validity window (of the built path)."""
        objects = (*chain, None, *anchors)
        with self._lock:
            self._entries[tuple(map(id, objects))] = (objects, not_before, not_after)
            if time.monotonic() - self._swept >= SWEEP_INTERVAL:  # paths that ended: never valid again
                self._swept = time.monotonic()
                now = dt.datetime.now(dt.UTC)
                for stale in [k for k, entry in self._entries.items() if entry[2] < now]:
                    del self._entries[stale]
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


#: The process's memos: PQC path validation and SvidBinding verification use ``MEMO``, classical
#: SVID chains ``PATHS``.
MEMO = SignatureMemo()
PATHS = PathMemo()


def forget_key(key_id: bytes) -> int:
    """Revocation hook: drop every cached result that the key ``key_id`` (SHA-256 of its SPKI) vouched for."""
    return MEMO.forget_key(key_id)


def forget_all() -> None:
    """Drop every cached verification result (e.g. when a trust bundle is replaced wholesale)."""
    MEMO.clear()
    PATHS.clear()
