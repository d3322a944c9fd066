"""Hybrid SVIDs and their one verification function (docs/formats.md, docs/trust-model.md).

A hybrid SVID is a classical X509-SVID (issued by SPIRE), a PQC SVID (ML-DSA-65) and a KEM
certificate (ML-KEM-768), all for one SPIFFE ID and bound together: the PQC certificates carry an
RFC 9763 RelatedCertificate hash of the classical leaf, and the classical leaf carries an
ML-DSA-65 SvidBinding by a trusted intermediate PQC CA.

:func:`verify_hybrid_svid` is used by every consumer (agent, channels, SDK, CLI). Each failure
raises a :class:`~spire_pqc.errors.VerificationError` subclass whose ``check`` names the failed
check and whose message names the SPIFFE ID.

Example::

    result = verify_hybrid_svid(
        classical_chain, pqc_chain, kem_chain,
        classical_bundles=classical_set, pqc_bundles=pqc_set, at=now,
    )
    print(result.spiffe_id)
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509 import verification

from spire_pqc.bundle import BundleSource
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey, MLDSA65PublicKey
from spire_pqc.crypto.mlkem import MLKEM768PrivateKey
from spire_pqc.errors import (
    AlgorithmError,
    BindingError,
    BundleError,
    ChainError,
    CryptoError,
    IdentityMismatchError,
    KeyUsageError,
    LeafError,
    LifetimeError,
    MalformedCredentialError,
    ParseError,
    RelatedCertificateError,
    RevokedError,
    SpiffeIdError,
    VerificationError,
)
from spire_pqc.spiffeid import SpiffeId
from spire_pqc.x509 import certs
from spire_pqc.x509.binding import parse_binding, verify_binding
from spire_pqc.x509.load import CRYPTOGRAPHY_PARSE_ERRORS, check_parsed, load_der_certificate
from spire_pqc.x509.memo import PATHS
from spire_pqc.x509.oids import ML_DSA_65, ML_KEM_768, RELATED_CERT, SVID_BINDING
from spire_pqc.x509.path import verify_pqc_chain
from spire_pqc.x509.related import parse_related_certificate, related_hash

MAX_CHAIN_LEN = 8


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _check_parseable(chain: Sequence[x509.Certificate], role: str) -> None:
    """Refuse a certificate whose lazily parsed parts (names, extensions, key) do not parse, before
    any check reads them, so such input ends in a typed VerificationError like every other bad
    credential (spire_pqc.x509.load explains what cryptography defers)."""
    for index, cert in enumerate(chain):
        try:
            check_parsed(cert, what=f"{role} certificate {index}")
        except ParseError as exc:
            raise MalformedCredentialError(str(exc)) from exc


# --- leaf rules --------------------------------------------------------------------------------


def spiffe_id_of(cert: x509.Certificate, *, role: str = "leaf") -> SpiffeId:
    """The SPIFFE ID of an X509-SVID leaf: exactly one URI SAN, a valid non-root SPIFFE ID."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise LeafError(f"{role} has no subjectAltName (no URI SAN)") from None
    except CRYPTOGRAPHY_PARSE_ERRORS as exc:
        raise MalformedCredentialError(f"{role} extensions do not parse: {exc}") from exc
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise LeafError(f"{role} must have exactly one URI SAN, has {len(uris)}")
    try:
        spiffe_id = SpiffeId.parse(uris[0])
    except SpiffeIdError as exc:
        raise LeafError(f"{role} URI SAN is not a SPIFFE ID: {exc}") from exc
    if spiffe_id.is_root:
        raise LeafError(f"{role} SPIFFE ID has no path", spiffe_id=str(spiffe_id))
    return spiffe_id


def _key_usage(cert: x509.Certificate, role: str, spiffe_id: str) -> x509.KeyUsage:
    try:
        ext = cert.extensions.get_extension_for_class(x509.KeyUsage)
    except x509.ExtensionNotFound:
        raise KeyUsageError(f"{role} has no keyUsage extension", spiffe_id=spiffe_id) from None
    if not ext.critical:
        raise KeyUsageError(f"{role} keyUsage must be critical", spiffe_id=spiffe_id)
    return ext.value


def _check_not_ca(cert: x509.Certificate, role: str, spiffe_id: str) -> None:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return
    if bc.ca:
        raise LeafError(f"{role} is a CA certificate (cA=true)", spiffe_id=spiffe_id)


def check_svid_leaf(cert: x509.Certificate, *, role: str = "leaf") -> SpiffeId:
    """X509-SVID leaf rules: one URI SAN, not a CA, digitalSignature, no keyCertSign/cRLSign."""
    spiffe_id = spiffe_id_of(cert, role=role)
    sid = str(spiffe_id)
    _check_not_ca(cert, role, sid)
    usage = _key_usage(cert, role, sid)
    if not usage.digital_signature:
        raise KeyUsageError(f"{role} keyUsage lacks digitalSignature", spiffe_id=sid)
    if usage.key_cert_sign or usage.crl_sign:
        raise KeyUsageError(f"{role} keyUsage must not contain keyCertSign or cRLSign", spiffe_id=sid)
    return spiffe_id


def _check_eku_both(cert: x509.Certificate, role: str, spiffe_id: str) -> None:
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return
    needed = {x509.oid.ExtendedKeyUsageOID.SERVER_AUTH, x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH}
    if not needed.issubset(set(eku)):
        raise KeyUsageError(
            f"{role} extendedKeyUsage must include serverAuth and clientAuth", spiffe_id=spiffe_id
        )


# --- classical chain ---------------------------------------------------------------------------


def verify_classical_svid(
    chain: Sequence[x509.Certificate], bundles: BundleSource, *, at: dt.datetime | None = None
) -> SpiffeId:
    """Verify a classical X509-SVID chain against the bundle of the *leaf's own* trust domain."""
    if not chain:
        raise ChainError("empty classical certificate chain")
    if len(chain) > MAX_CHAIN_LEN:
        raise ChainError(f"classical chain longer than {MAX_CHAIN_LEN} certificates")
    _check_parseable(chain, "classical")
    when = at or _now()
    leaf = chain[0]
    spiffe_id = check_svid_leaf(leaf, role="classical leaf")
    sid = str(spiffe_id)
    certs.check_validity(leaf, when, role="classical leaf", spiffe_id=sid)
    try:
        bundle = bundles.get_bundle_for_trust_domain(spiffe_id.trust_domain)
    except BundleError as exc:
        raise ChainError(
            f"no classical bundle for trust domain {spiffe_id.trust_domain}", spiffe_id=sid
        ) from exc
    if not bundle.authorities:
        raise ChainError(f"classical bundle of {spiffe_id.trust_domain} is empty", spiffe_id=sid)
    # RFC 5280 path validation by cryptography's verifier, anchored in this trust domain only.
    # The SPIFFE leaf rules were checked above; EKU is optional for X509-SVIDs, so relax that policy.
    anchors = bundle.authorities
    if PATHS.valid(chain, anchors, when):
        return spiffe_id  # this very chain verified against these very anchors, for a window holding `when`
    try:
        verifier = (
            verification.PolicyBuilder()
            .store(verification.Store(list(anchors)))
            .time(when)
            .extension_policies(
                ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(),
                ee_policy=verification.ExtensionPolicy.permit_all(),
            )
            .build_client_verifier()
        )
        path = verifier.verify(leaf, list(chain[1:])).chain
    except verification.VerificationError as exc:
        raise ChainError(f"classical chain does not verify: {exc}", spiffe_id=sid) from exc
    PATHS.remember(
        chain,
        anchors,
        max(c.not_valid_before_utc for c in path),
        min(c.not_valid_after_utc for c in path),
    )
    return spiffe_id


# --- hybrid ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifiedHybridSvid:
    """What a successful verification established."""

    spiffe_id: SpiffeId
    classical_leaf: x509.Certificate
    pqc_leaf: x509.Certificate
    kem_certificate: x509.Certificate
    binding_intermediate: MLDSA65PublicKey


def _related(cert: x509.Certificate, classical_leaf_der: bytes, role: str, sid: str) -> None:
    try:
        ext = cert.extensions.get_extension_for_oid(RELATED_CERT)
    except x509.ExtensionNotFound:
        raise RelatedCertificateError(f"{role} has no RelatedCertificate extension", spiffe_id=sid) from None
    value = ext.value
    if not isinstance(value, x509.UnrecognizedExtension):
        raise RelatedCertificateError(f"{role} RelatedCertificate has an unexpected form", spiffe_id=sid)
    try:
        digest = parse_related_certificate(value.value)
    except ParseError as exc:
        raise RelatedCertificateError(f"{role}: {exc}", spiffe_id=sid) from exc
    if digest != related_hash(classical_leaf_der):
        raise RelatedCertificateError(
            f"{role} RelatedCertificate does not match the classical leaf", spiffe_id=sid
        )


def binding_of(classical_leaf: x509.Certificate, *, spiffe_id: str) -> bytes:
    """The raw SvidBinding extension value of a classical leaf."""
    try:
        ext = classical_leaf.extensions.get_extension_for_oid(SVID_BINDING)
    except x509.ExtensionNotFound:
        raise BindingError("classical leaf carries no SvidBinding extension", spiffe_id=spiffe_id) from None
    if not isinstance(ext.value, x509.UnrecognizedExtension):
        raise BindingError("SvidBinding extension has an unexpected form", spiffe_id=spiffe_id)
    return ext.value.value


def verify_svid_binding(
    classical_leaf: x509.Certificate, trusted_intermediates: Sequence[MLDSA65PublicKey]
) -> MLDSA65PublicKey:
    """Check the classical leaf's SvidBinding under one of ``trusted_intermediates``."""
    spiffe_id = str(spiffe_id_of(classical_leaf, role="classical leaf"))
    raw = binding_of(classical_leaf, spiffe_id=spiffe_id)
    try:
        binding = parse_binding(raw)
    except ParseError as exc:
        raise BindingError(str(exc), spiffe_id=spiffe_id) from exc
    return verify_binding(
        binding, spiffe_id, certs.spki_der(classical_leaf), trusted_intermediates, carrier=classical_leaf
    )


def verify_pqc_svid(
    chain: Sequence[x509.Certificate], pqc_bundles: BundleSource, *, at: dt.datetime | None = None
) -> tuple[SpiffeId, list[x509.Certificate]]:
    """Verify a PQC SVID chain (ML-DSA-65 leaf) against its trust domain's PQC bundle.

    Returns the SPIFFE ID and the CA path (intermediates first, root last).
    """
    if not chain:
        raise ChainError("empty PQC SVID chain")
    _check_parseable(chain, "PQC SVID")
    when = at or _now()
    leaf = chain[0]
    if leaf.public_key_algorithm_oid == ML_KEM_768:
        raise KeyUsageError(
            "a KEM certificate (ML-KEM-768) cannot be used as a signing certificate",
            spiffe_id=str(spiffe_id_of(leaf, role="PQC SVID")),
        )
    spiffe_id = check_svid_leaf(leaf, role="PQC SVID")
    sid = str(spiffe_id)
    if leaf.public_key_algorithm_oid != ML_DSA_65:
        raise AlgorithmError(f"PQC SVID key is {certs.public_key_oid(leaf)}, not ML-DSA-65", spiffe_id=sid)
    usage = _key_usage(leaf, "PQC SVID", sid)
    if usage.key_encipherment or usage.data_encipherment or usage.key_agreement:
        raise KeyUsageError(
            "PQC SVID keyUsage must not allow encipherment or key agreement (RFC 9881)", spiffe_id=sid
        )
    _check_eku_both(leaf, "PQC SVID", sid)
    path = _pqc_path(chain, pqc_bundles, spiffe_id, when)
    return spiffe_id, path


def _pqc_path(
    chain: Sequence[x509.Certificate], pqc_bundles: BundleSource, spiffe_id: SpiffeId, when: dt.datetime
) -> list[x509.Certificate]:
    sid = str(spiffe_id)
    try:
        bundle = pqc_bundles.get_bundle_for_trust_domain(spiffe_id.trust_domain)
    except BundleError as exc:
        raise ChainError(f"no PQC bundle for trust domain {spiffe_id.trust_domain}", spiffe_id=sid) from exc
    path = verify_pqc_chain(chain, list(bundle.authorities), at=when, spiffe_id=sid)
    for cert in path[:-1]:
        key_id = certs.mldsa_public_key(cert, spiffe_id=sid).key_id().hex()
        if key_id in bundle.revoked:
            raise RevokedError(
                f"issued by revoked intermediate PQC CA {key_id[:16]} (revoked by the trust domain's PQC bundle)",
                spiffe_id=sid,
            )
    return path


def verify_kem_certificate(
    chain: Sequence[x509.Certificate], pqc_bundles: BundleSource, *, at: dt.datetime | None = None
) -> SpiffeId:
    """Verify a KEM certificate chain: ML-KEM-768 key, keyEncipherment only, chains to the PQC bundle."""
    if not chain:
        raise ChainError("empty KEM certificate chain")
    _check_parseable(chain, "KEM")
    when = at or _now()
    leaf = chain[0]
    spiffe_id = spiffe_id_of(leaf, role="KEM certificate")
    sid = str(spiffe_id)
    _check_not_ca(leaf, "KEM certificate", sid)
    certs.mlkem_public_key(leaf, spiffe_id=sid)
    usage = _key_usage(leaf, "KEM certificate", sid)
    others = (
        usage.digital_signature,
        usage.content_commitment,
        usage.data_encipherment,
        usage.key_agreement,
        usage.key_cert_sign,
        usage.crl_sign,
    )
    if not usage.key_encipherment or any(others):
        raise KeyUsageError("KEM certificate keyUsage must be keyEncipherment only (RFC 9935)", spiffe_id=sid)
    _pqc_path(chain, pqc_bundles, spiffe_id, when)
    return spiffe_id


def verify_hybrid_svid(
    classical_chain: Sequence[x509.Certificate],
    pqc_chain: Sequence[x509.Certificate],
    kem_chain: Sequence[x509.Certificate],
    *,
    classical_bundles: BundleSource,
    pqc_bundles: BundleSource,
    at: dt.datetime | None = None,
) -> VerifiedHybridSvid:
    """Verify a hybrid SVID completely; raise the VerificationError of the first failed check.

    The classical chain against its own trust domain's classical bundle, then
    :func:`verify_pqc_credentials` for the PQC SVID and the KEM certificate.
    """
    when = at or _now()
    spiffe_id = verify_classical_svid(classical_chain, classical_bundles, at=when)
    signer = verify_pqc_credentials(
        classical_chain[0], spiffe_id, pqc_chain, kem_chain, pqc_bundles=pqc_bundles, at=when
    )
    return VerifiedHybridSvid(spiffe_id, classical_chain[0], pqc_chain[0], kem_chain[0], signer)


def verify_pqc_credentials(
    classical_leaf: x509.Certificate,
    spiffe_id: SpiffeId,
    pqc_chain: Sequence[x509.Certificate],
    kem_chain: Sequence[x509.Certificate] | None,
    *,
    pqc_bundles: BundleSource,
    at: dt.datetime,
) -> MLDSA65PublicKey:
    """The hybrid checks, the one place they are written: PQC credentials against the classical leaf
    (``spiffe_id``) already verified against its classical bundle — by :func:`verify_hybrid_svid`, or
    by a channel's TLS handshake for the hybrid-mode PQ proof (``kem_chain`` None: a proof carries no
    KEM certificate).

    Order: PQC SVID chain and KEM certificate chain (own trust domain's PQC bundle) → same SPIFFE ID
    everywhere → RelatedCertificate matches the classical leaf → SvidBinding verifies under an
    intermediate of the verified PQC path → the PQC credentials do not outlive the classical SVID.
    Returns the intermediate's key that made the binding.
    """
    sid = str(spiffe_id)
    pqc_id, pqc_path = verify_pqc_svid(pqc_chain, pqc_bundles, at=at)
    if pqc_id != spiffe_id:
        raise IdentityMismatchError(
            f"PQC SVID names {pqc_id}, classical SVID names {spiffe_id}", spiffe_id=sid
        )
    leaves = [(pqc_chain[0], "PQC SVID")]
    if kem_chain is not None:
        kem_id = verify_kem_certificate(kem_chain, pqc_bundles, at=at)
        if kem_id != spiffe_id:
            raise IdentityMismatchError(
                f"KEM certificate names {kem_id}, classical SVID names {spiffe_id}", spiffe_id=sid
            )
        leaves.append((kem_chain[0], "KEM certificate"))
    classical_der = der(classical_leaf)
    for cert, role in leaves:
        _related(cert, classical_der, role, sid)
    signer = verify_svid_binding(
        classical_leaf, binding_signers(pqc_chain, pqc_path, pqc_bundles, spiffe_id=spiffe_id, at=at)
    )
    classical_end = classical_leaf.not_valid_after_utc
    for cert, role in leaves:
        if cert.not_valid_after_utc > classical_end:
            raise LifetimeError(
                f"{role} notAfter {cert.not_valid_after_utc.isoformat()} is after the classical SVID's "
                f"{classical_end.isoformat()}",
                spiffe_id=sid,
            )
    return signer


def binding_signers(
    pqc_chain: Sequence[x509.Certificate],
    pqc_path: Sequence[x509.Certificate],
    pqc_bundles: BundleSource,
    *,
    spiffe_id: SpiffeId,
    at: dt.datetime,
) -> list[MLDSA65PublicKey]:
    """The intermediates whose SvidBinding is accepted with this PQC SVID chain (every verifier's rule).

    Only intermediate PQC CAs are trusted binding signers (roots sign nothing else): the one of the
    verified PQC path, and another intermediate the chain carries (an intermediate superseded by a
    rotation, or a SPIRE HA sibling's) when it made the binding, accepted if the trust domain's PQC
    root certified it. Intermediates the bundle lists as revoked never are.
    """
    sid = str(spiffe_id)
    path_intermediates = list(pqc_path[:-1])
    if not path_intermediates:
        raise BindingError("PQC SVID was not issued by an intermediate PQC CA", spiffe_id=sid)
    bundle = pqc_bundles.get_bundle_for_trust_domain(spiffe_id.trust_domain)
    roots = list(bundle.authorities)
    siblings = [c for c in pqc_chain[1:] if c not in path_intermediates and _is_intermediate(c, roots, at)]
    keys = [certs.mldsa_public_key(c) for c in (*path_intermediates, *siblings)]
    return [k for k in keys if k.key_id().hex() not in bundle.revoked]


def _is_intermediate(cert: x509.Certificate, roots: Sequence[x509.Certificate], when: dt.datetime) -> bool:
    """``cert`` is an intermediate PQC CA (cA=true) signed by one of ``roots`` and valid at ``when``."""
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        if not constraints.ca:
            return False
        verify_pqc_chain([cert], roots, at=when, spiffe_id=None)
    except (x509.ExtensionNotFound, ValueError, VerificationError, CryptoError):
        return False
    return True


# --- the model a workload holds ----------------------------------------------------------------


@dataclass(frozen=True)
class X509Svid:
    """A classical X509-SVID (as SPIRE or the dev CA issued it): parsed chain (leaf first) and key.

    The one classical SVID type: the agent's sources, the Workload API client and the CA client's
    mutual TLS all hold this (it is not verified by construction; :func:`verify_classical_svid` is).
    """

    spiffe_id: SpiffeId
    chain: tuple[x509.Certificate, ...]
    key: PrivateKeyTypes = field(repr=False)
    hint: str = ""

    def __post_init__(self) -> None:
        if not self.chain:
            raise MalformedCredentialError("empty X509-SVID chain", spiffe_id=str(self.spiffe_id))

    @classmethod
    def from_der(cls, spiffe_id: SpiffeId, chain: list[bytes], key_pkcs8: bytes, hint: str = "") -> X509Svid:
        sid = str(spiffe_id)
        try:
            parsed = tuple(load_der_certificate(c, what=f"certificate {i}") for i, c in enumerate(chain))
            key = serialization.load_der_private_key(key_pkcs8, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm, ParseError) as exc:
            raise MalformedCredentialError(f"X509-SVID does not parse: {exc}", spiffe_id=sid) from exc
        return cls(spiffe_id, parsed, key, hint)

    @classmethod
    def of(cls, chain: Sequence[x509.Certificate], key: PrivateKeyTypes, hint: str = "") -> X509Svid:
        """An SVID whose SPIFFE ID is read from its leaf."""
        if not chain:
            raise MalformedCredentialError("empty X509-SVID chain")
        return cls(spiffe_id_of(chain[0]), tuple(chain), key, hint)

    @property
    def leaf(self) -> x509.Certificate:
        return self.chain[0]

    @property
    def chain_der(self) -> bytes:
        """Leaf first, concatenated DER: the Workload API ``x509_svid`` form."""
        return b"".join(c.public_bytes(serialization.Encoding.DER) for c in self.chain)

    @property
    def chain_der_list(self) -> tuple[bytes, ...]:
        return tuple(c.public_bytes(serialization.Encoding.DER) for c in self.chain)

    @property
    def key_der(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    @property
    def leaf_hash(self) -> bytes:
        """Identifies this SVID (and so one PQC issuance) across callers and streams."""
        return hashlib.sha256(self.leaf.public_bytes(serialization.Encoding.DER)).digest()

    @property
    def not_after(self) -> dt.datetime:
        return self.leaf.not_valid_after_utc


@dataclass(frozen=True)
class HybridSvid:
    """A workload's hybrid SVID: three chains (leaf first) and their private keys."""

    spiffe_id: SpiffeId
    classical_chain: tuple[x509.Certificate, ...]
    classical_key: PrivateKeyTypes = field(repr=False)
    pqc_chain: tuple[x509.Certificate, ...]
    pqc_key: MLDSA65PrivateKey = field(repr=False)
    kem_chain: tuple[x509.Certificate, ...]
    kem_key: MLKEM768PrivateKey = field(repr=False)
    hint: str = ""

    def __post_init__(self) -> None:
        # An HybridSvid whose keys do not match its certificates cannot be constructed.
        sid = str(self.spiffe_id)
        if not (self.classical_chain and self.pqc_chain and self.kem_chain):
            raise MalformedCredentialError("hybrid SVID needs three non-empty chains", spiffe_id=sid)
        if certs.spki_der(self.classical_chain[0]) != self.classical_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ):
            raise MalformedCredentialError("classical key does not match the classical SVID", spiffe_id=sid)
        if certs.mldsa_public_key(self.pqc_chain[0], spiffe_id=sid) != self.pqc_key.public_key():
            raise MalformedCredentialError("ML-DSA-65 key does not match the PQC SVID", spiffe_id=sid)
        if certs.mlkem_public_key(self.kem_chain[0], spiffe_id=sid) != self.kem_key.public_key():
            raise MalformedCredentialError("ML-KEM-768 key does not match the KEM certificate", spiffe_id=sid)

    @property
    def not_after(self) -> dt.datetime:
        return min(c[0].not_valid_after_utc for c in (self.classical_chain, self.pqc_chain, self.kem_chain))

    def verify(
        self, *, classical_bundles: BundleSource, pqc_bundles: BundleSource, at: dt.datetime | None = None
    ) -> VerifiedHybridSvid:
        return verify_hybrid_svid(
            self.classical_chain,
            self.pqc_chain,
            self.kem_chain,
            classical_bundles=classical_bundles,
            pqc_bundles=pqc_bundles,
            at=at,
        )
