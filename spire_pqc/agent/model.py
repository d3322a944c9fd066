"""Domain types of the node agent. No protobuf here: the adapters (handler, sources) convert."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from spire_pqc.crypto.mldsa import MLDSA65PrivateKey
from spire_pqc.crypto.mlkem import MLKEM768PrivateKey
from spire_pqc.errors import MalformedCredentialError, ParseError, SpirePqcError
from spire_pqc.spiffeid import TrustDomain
from spire_pqc.svid import HybridSvid, X509Svid, binding_of
from spire_pqc.x509 import certs
from spire_pqc.x509.binding import parse_binding
from spire_pqc.x509.load import load_der_certificate

_DER = serialization.Encoding.DER


@dataclass(frozen=True)
class Caller:
    """A process on the other end of the Workload API socket, from SO_PEERCRED at connect time.

    ``starttime`` (field 22 of ``/proc/<pid>/stat``) is the attested process's start time when the
    caller was checked against ``/proc`` (:mod:`spire_pqc.agent.peercred`), so that a source keying by
    process need not read it again; it is not part of equality (the same caller with or without it).
    """

    pid: int
    uid: int
    gid: int
    starttime: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class X509State:
    """What the Workload API X.509 profile serves one caller: full state, never deltas.

    ``bundles`` maps trust domain → concatenated DER CA certificates; it holds the SVIDs' own trust
    domain(s) and any federated ones.
    """

    svids: tuple[X509Svid, ...]
    bundles: Mapping[TrustDomain, bytes]

    def __post_init__(self) -> None:
        object.__setattr__(self, "bundles", MappingProxyType(dict(self.bundles)))


@dataclass(frozen=True)
class PqcCredentials:
    """The PQC SVID and KEM certificate obtained for one classical SVID, with their node-generated keys."""

    classical: X509Svid
    pqc_chain: tuple[bytes, ...]
    pqc_key: MLDSA65PrivateKey = field(repr=False)
    kem_chain: tuple[bytes, ...]
    kem_key: MLKEM768PrivateKey = field(repr=False)
    pqc_bundle: tuple[bytes, ...]
    obtained: dt.datetime

    @functools.cached_property
    def signer_key_ids(self) -> frozenset[str]:
        """Key ids (hex) of every intermediate these credentials depend on: the issuers in both
        chains and the classical SVID's SvidBinding signer (what a revocation is checked against)."""
        ids = set()
        for der_cert in (*self.pqc_chain[1:], *self.kem_chain[1:]):
            with contextlib.suppress(SpirePqcError, ValueError):
                cert = load_der_certificate(der_cert, what="PQC chain")
                ids.add(certs.mldsa_public_key(cert).key_id().hex())
        with contextlib.suppress(SpirePqcError, ValueError):
            leaf = self.classical.leaf
            ids.add(
                parse_binding(binding_of(leaf, spiffe_id=str(self.classical.spiffe_id))).issuer_key_id.hex()
            )
        return frozenset(ids)

    @functools.cached_property
    def not_after(self) -> dt.datetime:
        leaf = x509.load_der_x509_certificate(self.pqc_chain[0])
        return min(leaf.not_valid_after_utc, self.classical.not_after)

    def hybrid_svid(self) -> HybridSvid:
        """As the SDK's HybridSvid (parsed; raises MalformedCredentialError if a key does not match)."""
        try:
            pqc_chain = tuple(load_der_certificate(c, what="PQC SVID chain") for c in self.pqc_chain)
            kem_chain = tuple(load_der_certificate(c, what="KEM certificate chain") for c in self.kem_chain)
        except ParseError as exc:
            raise MalformedCredentialError(str(exc), spiffe_id=str(self.classical.spiffe_id)) from exc
        return HybridSvid(
            spiffe_id=self.classical.spiffe_id,
            classical_chain=self.classical.chain,
            classical_key=self.classical.key,
            pqc_chain=pqc_chain,
            pqc_key=self.pqc_key,
            kem_chain=kem_chain,
            kem_key=self.kem_key,
            hint=self.classical.hint,
        )
