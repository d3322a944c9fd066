"""A table of bad credentials: each is refused with its specific typed error.

Every row builds one bad credential (or request, or file) that differs from a valid one in a single
property, and names the error class, the stable token (``check`` of a VerificationError, ``reason``
of an IssuanceError) and the SPIFFE ID the message must name, when one is known at that point.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from spire_pqc.bundle import BundleSet, X509Bundle
from spire_pqc.ca.request import build_request, sign_classical
from spire_pqc.cli.svid import load_bundle_set, load_chain
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey
from spire_pqc.crypto.mlkem import MLKEM768PrivateKey
from spire_pqc.errors import (
    AlgorithmError,
    BindingError,
    BundleError,
    ChainError,
    IdentityMismatchError,
    IssuanceError,
    KeyUsageError,
    LeafError,
    LifetimeError,
    MalformedCredentialError,
    ParseError,
    RelatedCertificateError,
    SpirePqcError,
    ValidityError,
    VerificationError,
)
from spire_pqc.svid import HybridSvid, verify_hybrid_svid
from spire_pqc.x509.binding import MAX_EXTENSION_LEN, SvidBinding, parse_binding
from spire_pqc.x509.related import parse_related_certificate

from .pki import (
    KEM_ONLY,
    SIGNING,
    Domain,
    KeyUsageBits,
    Minted,
    classical_issuer,
    der,
    fresh_mldsa_spki,
    fresh_mlkem_spki,
    now_ms,
    pem,
    spki,
    tamper_signature,
    utcnow,
)

Thunk = Callable[[], object]


@dataclass
class World:
    a: Domain  # example.org: the trust domain under test
    a2: Domain  # example.org again, but another PQC hierarchy nobody trusts
    b: Domain  # other.example: a second, unrelated trust domain
    valid: Minted  # a valid hybrid SVID of a
    tmp: Path

    @property
    def sid(self) -> str:
        return str(self.valid.spiffe_id)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    a = Domain.create("example.org")
    return World(
        a=a,
        a2=Domain.create("example.org"),
        b=Domain.create("other.example"),
        valid=a.mint(),
        tmp=tmp_path_factory.mktemp("bad-credentials"),
    )


def verify(
    w: World,
    *,
    classical: Sequence[x509.Certificate] | None = None,
    pqc: Sequence[x509.Certificate] | None = None,
    kem: Sequence[x509.Certificate] | None = None,
    classical_bundles: BundleSet | None = None,
    pqc_bundles: BundleSet | None = None,
    at: dt.datetime | None = None,
) -> Thunk:
    """verify_hybrid_svid of the valid hybrid SVID of ``a`` with the given parts replaced."""
    m = w.valid
    return lambda: verify_hybrid_svid(
        m.classical_chain if classical is None else classical,
        m.pqc_chain if pqc is None else pqc,
        m.kem_chain if kem is None else kem,
        classical_bundles=classical_bundles or w.a.classical_bundles,
        pqc_bundles=pqc_bundles or w.a.pqc_bundles,
        at=at,
    )


def with_classical(w: World, leaf: x509.Certificate) -> Thunk:
    """A hybrid whose classical leaf is ``leaf``, with PQC certificates re-issued to match it
    (RelatedCertificate over ``leaf``), so that only the classical property under test is wrong."""
    m = w.valid
    pqc = w.a.pqc_leaf(m.mldsa_key.public_key().spki(), leaf)
    kem = w.a.pqc_leaf(m.mlkem_key.public_key().spki(), leaf, usage=KEM_ONLY, eku=False)
    return verify(w, classical=[leaf], pqc=[pqc, w.a.intermediate], kem=[kem, w.a.intermediate])


def with_pqc(w: World, leaf: x509.Certificate, *chain: x509.Certificate) -> Thunk:
    return verify(w, pqc=[leaf, *(chain or (w.a.intermediate,))])


def with_kem(w: World, leaf: x509.Certificate) -> Thunk:
    return verify(w, kem=[leaf, w.a.intermediate])


def pqc_leaf(w: World, **kwargs: object) -> x509.Certificate:
    """A PQC SVID over the valid hybrid's ML-DSA key, bound to its classical leaf, one change."""
    return w.a.pqc_leaf(w.valid.mldsa_key.public_key().spki(), w.valid.classical_leaf, **kwargs)  # type: ignore[arg-type]


def kem_leaf(w: World, **kwargs: object) -> x509.Certificate:
    kwargs.setdefault("usage", KEM_ONLY)
    kwargs.setdefault("eku", False)
    return w.a.pqc_leaf(w.valid.mlkem_key.public_key().spki(), w.valid.classical_leaf, **kwargs)  # type: ignore[arg-type]


def valid_binding(w: World) -> SvidBinding:
    m = w.valid
    return w.a.binding_value(str(m.spiffe_id), spki(m.classical_key))


def flipped(data: bytes, index: int) -> bytes:
    raw = bytearray(data)
    raw[index] ^= 0x01
    return bytes(raw)


# --- issuance --------------------------------------------------------------------------------------


def issue_twice(w: World, second: Callable[[Minted], object]) -> Thunk:
    """A fresh CA that already answered ``m.request``; the thunk sends ``second(m)``."""
    m = w.a.mint()
    issuer = w.a.new_issuer()
    issuer.issue(m.request)
    return lambda: issuer.issue(second(m))  # type: ignore[arg-type]


def request_for(
    w: World,
    leaf: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    *,
    timestamp_ms: int | None = None,
    nonce: bytes | None = None,
    issuer_domain: Domain | None = None,
) -> Thunk:
    request = build_request(
        (der(leaf),),
        key,
        MLDSA65PrivateKey.generate(),
        fresh_mlkem_spki(),
        timestamp_ms=now_ms() if timestamp_ms is None else timestamp_ms,
        nonce=nonce,
    )
    issuer = (issuer_domain or w.a).new_issuer()
    return lambda: issuer.issue(request)


def fresh_svid(w: World, domain: Domain | None = None) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    d = domain or w.a
    return d.classical_ca.issue_svid(d.spiffe_id())


def forged_classical_proof(w: World) -> Thunk:
    leaf, key = fresh_svid(w)
    good = build_request(
        (der(leaf),), key, MLDSA65PrivateKey.generate(), fresh_mlkem_spki(), timestamp_ms=now_ms()
    )
    forged = sign_classical(ec.generate_private_key(ec.SECP256R1()), good.to_be_signed())
    request = type(good)(**{**good.__dict__, "classical_proof": forged})
    issuer = w.a.new_issuer()
    return lambda: issuer.issue(request)


def forged_mldsa_proof(w: World) -> Thunk:
    leaf, key = fresh_svid(w)
    good = build_request(
        (der(leaf),), key, MLDSA65PrivateKey.generate(), fresh_mlkem_spki(), timestamp_ms=now_ms()
    )
    # Signed over the right bytes with the right context, by a key other than the one presented.
    forged = MLDSA65PrivateKey.generate().sign(good.to_be_signed(), context=b"spire-pqc/issue/v1")
    request = type(good)(**{**good.__dict__, "mldsa_proof": forged})
    issuer = w.a.new_issuer()
    return lambda: issuer.issue(request)


def malformed_request(w: World, **changes: object) -> Thunk:
    leaf, key = fresh_svid(w)
    good = build_request(
        (der(leaf),), key, MLDSA65PrivateKey.generate(), fresh_mlkem_spki(), timestamp_ms=now_ms()
    )
    request = type(good)(**{**good.__dict__, **changes})
    issuer = w.a.new_issuer()
    return lambda: issuer.issue(request)


# --- files -------------------------------------------------------------------------------------


def file_with(w: World, name: str, data: bytes) -> Path:
    path = w.tmp / name
    path.write_bytes(data)
    return path


def truncated_pem(w: World) -> bytes:
    text = pem([w.valid.pqc_leaf]).decode()
    lines = text.splitlines()
    # Drop the middle of the base64 body but keep the armour: a PEM block whose DER is truncated.
    return ("\n".join([*lines[:3], *lines[-2:]]) + "\n").encode()


# --- the table ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    build: Callable[[World], Thunk]
    error: type[SpirePqcError]
    token: str | None  # VerificationError.check or IssuanceError.reason; None for parse errors
    names: Callable[[World], str] | None = None  # the SPIFFE ID the message must name
    says: str | None = None  # a fragment the message must contain (tells similar refusals apart)


def sid(w: World) -> str:
    return w.sid


def sid_b(w: World) -> str:
    return str(w.b.spiffe_id())


LATER = dt.timedelta(minutes=70)

CASES: dict[str, Case] = {
    # trust domains
    "classical-svid-of-other-td": Case(
        lambda w: verify(
            w, classical=w.b.mint().classical_chain,
            classical_bundles=w.a.classical_bundles, pqc_bundles=w.a.pqc_bundles,
        ),
        ChainError, "chain", sid_b, "no classical bundle for trust domain other.example",
    ),
    "classical-svid-of-other-td-signed-by-a": Case(
        # A's classical CA signs an SVID naming B: B has no classical bundle here, so it is refused.
        lambda w: with_classical(w, w.a.classical_leaf(w.b.spiffe_id())[0]),
        ChainError, "chain", sid_b,
    ),
    "pqc-svid-of-other-td": Case(
        lambda w: verify(w, pqc=w.b.mint().pqc_chain), ChainError, "chain", sid_b, "no PQC bundle"
    ),
    "pqc-svid-of-other-td-federated": Case(
        lambda w: verify(
            w, pqc=w.b.mint().pqc_chain,
            pqc_bundles=BundleSet([w.a.pqc_bundles.get(w.a.trust_domain), w.b.pqc_bundles.get(w.b.trust_domain)]),
        ),
        IdentityMismatchError, "spiffe-id-mismatch", sid,
    ),
    "classical-chain-unknown-ca": Case(
        lambda w: with_classical(w, w.a.classical_leaf(issuer=classical_issuer(w.a.trust_domain))[0]),
        ChainError, "chain", sid, "does not verify",
    ),
    "classical-chain-empty": Case(lambda w: verify(w, classical=[]), ChainError, "chain"),
    # validity
    "expired": Case(
        lambda w: verify(w, at=w.valid.classical_leaf.not_valid_after_utc + dt.timedelta(seconds=1)),
        ValidityError, "validity", sid, "expired",
    ),
    "not-yet-valid": Case(
        lambda w: verify(w, at=w.valid.classical_leaf.not_valid_before_utc - dt.timedelta(minutes=1)),
        ValidityError, "validity", sid, "not valid before",
    ),
    "pqc-svid-expired": Case(
        lambda w: with_pqc(
            w, pqc_leaf(w, not_before=utcnow() - dt.timedelta(hours=2), not_after=utcnow() - dt.timedelta(hours=1))
        ),
        ValidityError, "validity", sid, "expired",
    ),
    "pqc-outlives-classical": Case(
        lambda w: with_pqc(w, pqc_leaf(w, not_after=w.valid.classical_leaf.not_valid_after_utc + LATER)),
        LifetimeError, "pqc-outlives-classical", sid, "PQC SVID notAfter",
    ),
    "kem-outlives-classical": Case(
        lambda w: with_kem(w, kem_leaf(w, not_after=w.valid.classical_leaf.not_valid_after_utc + LATER)),
        LifetimeError, "pqc-outlives-classical", sid, "KEM certificate notAfter",
    ),
    # leaf rules
    "classical-ca-leaf": Case(
        lambda w: with_classical(w, w.a.classical_leaf(ca=True)[0]), LeafError, "leaf", sid, "cA=true"
    ),
    "pqc-ca-leaf": Case(lambda w: with_pqc(w, pqc_leaf(w, ca=True)), LeafError, "leaf", sid, "cA=true"),
    "classical-two-uri-sans": Case(
        lambda w: with_classical(
            w, w.a.classical_leaf(uris=[w.sid, "spiffe://example.org/ns/prod/sa/db"])[0]
        ),
        LeafError, "leaf", None, "exactly one URI SAN, has 2",
    ),
    "classical-no-uri-san": Case(
        lambda w: with_classical(w, w.a.classical_leaf(uris=[])[0]), LeafError, "leaf", None, "no subjectAltName"
    ),
    "classical-uri-not-spiffe": Case(
        lambda w: with_classical(w, w.a.classical_leaf(uris=["https://example.org/web"])[0]),
        LeafError, "leaf", None, "not a SPIFFE ID",
    ),
    "pqc-two-uri-sans": Case(
        lambda w: with_pqc(w, pqc_leaf(w, uris=[w.sid, w.sid + "/2"])), LeafError, "leaf", None, "has 2"
    ),
    "pqc-no-uri-san": Case(lambda w: with_pqc(w, pqc_leaf(w, uris=[])), LeafError, "leaf", None),
    "pqc-spiffe-id-without-path": Case(
        lambda w: with_pqc(w, pqc_leaf(w, uris=["spiffe://example.org"])), LeafError, "leaf", None, "no path"
    ),
    # key usage
    "classical-leaf-key-cert-sign": Case(
        lambda w: with_classical(
            w, w.a.classical_leaf(usage=KeyUsageBits(digital_signature=True, key_cert_sign=True))[0]
        ),
        KeyUsageError, "key-usage", sid, "keyCertSign",
    ),
    "classical-key-usage-not-critical": Case(
        lambda w: with_classical(w, w.a.classical_leaf(usage_critical=False)[0]),
        KeyUsageError, "key-usage", sid, "critical",
    ),
    "classical-no-digital-signature": Case(
        lambda w: with_classical(w, w.a.classical_leaf(usage=KeyUsageBits(key_encipherment=True))[0]),
        KeyUsageError, "key-usage", sid, "digitalSignature",
    ),
    "pqc-svid-key-encipherment": Case(
        lambda w: with_pqc(w, pqc_leaf(w, usage=KeyUsageBits(digital_signature=True, key_encipherment=True))),
        KeyUsageError, "key-usage", sid, "encipherment",
    ),
    "pqc-svid-key-cert-sign": Case(
        lambda w: with_pqc(w, pqc_leaf(w, usage=KeyUsageBits(digital_signature=True, key_cert_sign=True))),
        KeyUsageError, "key-usage", sid, "keyCertSign",
    ),
    "pqc-key-usage-not-critical": Case(
        lambda w: with_pqc(w, pqc_leaf(w, usage_critical=False)), KeyUsageError, "key-usage", sid, "critical"
    ),
    "kem-digital-signature": Case(
        lambda w: with_kem(w, kem_leaf(w, usage=KeyUsageBits(digital_signature=True, key_encipherment=True))),
        KeyUsageError, "key-usage", sid, "keyEncipherment only",
    ),
    "kem-cert-as-pqc-svid": Case(
        lambda w: verify(w, pqc=w.valid.kem_chain), KeyUsageError, "key-usage", sid, "signing certificate"
    ),
    # algorithms
    "ecdsa-key-as-pqc-svid": Case(
        lambda w: with_pqc(w, w.a.pqc_leaf(spki(ec.generate_private_key(ec.SECP256R1())), w.valid.classical_leaf)),
        AlgorithmError, "algorithm", sid, "not ML-DSA-65",
    ),
    "mldsa-key-as-kem-cert": Case(
        lambda w: with_kem(
            w, w.a.pqc_leaf(fresh_mldsa_spki(), w.valid.classical_leaf, usage=KEM_ONLY, eku=False)
        ),
        AlgorithmError, "algorithm", sid, "expected an ML-KEM-768 key",
    ),
    # PQC chains
    "pqc-chain-to-unknown-root": Case(
        # Same trust domain name, but an intermediate under a root that is not in the PQC bundle.
        lambda w: with_pqc(
            w,
            pqc_leaf(w, issuer=(w.a2.intermediate, w.a2.intermediate_key)),
            w.a2.intermediate,
        ),
        ChainError, "chain", sid, "does not lead to a certificate of the trust domain's PQC bundle",
    ),
    "pqc-chain-root-sent-as-intermediate": Case(
        lambda w: with_pqc(w, pqc_leaf(w, issuer=(w.a2.intermediate, w.a2.intermediate_key)), w.a2.intermediate,
                           w.a2.hierarchy.root),
        ChainError, "chain", sid,
    ),
    "pqc-signature-tampered": Case(
        lambda w: with_pqc(w, tamper_signature(w.valid.pqc_leaf)), ChainError, "chain", sid, "does not verify"
    ),
    "kem-signature-tampered": Case(
        lambda w: with_kem(w, tamper_signature(w.valid.kem_leaf)), ChainError, "chain", sid, "does not verify"
    ),
    "pqc-svid-issued-by-root": Case(
        # Chains to the bundle, but only an intermediate PQC CA may have made the binding.
        lambda w: verify(w, pqc=[pqc_leaf(w, issuer=(w.a.hierarchy.root, w.a.hierarchy.root_key))]),
        BindingError, "binding", sid, "not issued by an intermediate",
    ),
    # identity
    "pqc-spiffe-id-mismatch": Case(
        lambda w: with_pqc(w, pqc_leaf(w, spiffe_id=w.a.spiffe_id("/ns/prod/sa/db"))),
        IdentityMismatchError, "spiffe-id-mismatch", sid, "/ns/prod/sa/db",
    ),
    "kem-spiffe-id-mismatch": Case(
        lambda w: with_kem(w, kem_leaf(w, spiffe_id=w.a.spiffe_id("/ns/prod/sa/db"))),
        IdentityMismatchError, "spiffe-id-mismatch", sid, "KEM certificate names",
    ),
    # RelatedCertificate
    "related-certificate-mismatch": Case(
        lambda w: with_pqc(w, w.a.pqc_leaf(w.valid.mldsa_key.public_key().spki(), fresh_svid(w)[0])),
        RelatedCertificateError, "related-certificate", sid, "does not match",
    ),
    "related-certificate-missing": Case(
        lambda w: with_pqc(w, w.a.pqc_leaf(w.valid.mldsa_key.public_key().spki(), None)),
        RelatedCertificateError, "related-certificate", sid, "no RelatedCertificate",
    ),
    "kem-related-certificate-mismatch": Case(
        lambda w: with_kem(
            w, w.a.pqc_leaf(w.valid.mlkem_key.public_key().spki(), fresh_svid(w)[0], usage=KEM_ONLY, eku=False)
        ),
        RelatedCertificateError, "related-certificate", sid, "KEM certificate RelatedCertificate",
    ),
    # SvidBinding
    "binding-missing": Case(
        lambda w: with_classical(w, w.a.classical_leaf(binding=None)[0]),
        BindingError, "binding", sid, "no SvidBinding",
    ),
    "binding-by-untrusted-intermediate": Case(
        lambda w: with_classical(w, w.a.classical_leaf(binding_key=w.a2.intermediate_key)[0]),
        BindingError, "binding", sid, "untrusted intermediate",
    ),
    "binding-by-pqc-root": Case(
        lambda w: with_classical(w, w.a.classical_leaf(binding_key=w.a.hierarchy.root_key)[0]),
        BindingError, "binding", sid, "untrusted intermediate",
    ),
    "binding-over-another-key": Case(
        lambda w: with_classical(
            w, w.a.classical_leaf(binding_spki=spki(ec.generate_private_key(ec.SECP256R1())))[0]
        ),
        BindingError, "binding", sid, "does not verify",
    ),
    "binding-over-another-spiffe-id": Case(
        lambda w: with_classical(w, w.a.classical_leaf(binding_spiffe_id="spiffe://example.org/ns/prod/sa/db")[0]),
        BindingError, "binding", sid, "does not verify",
    ),
    "binding-signature-tampered": Case(
        lambda w: with_classical(
            w,
            w.a.classical_leaf(
                key=w.valid.classical_key,
                binding=SvidBinding(valid_binding(w).issuer_key_id, flipped(valid_binding(w).signature, 100)).encode(),
            )[0],
        ),
        BindingError, "binding", sid, "does not verify",
    ),
    "binding-truncated-der": Case(
        lambda w: with_classical(w, w.a.classical_leaf(binding=valid_binding(w).encode()[:-100])[0]),
        BindingError, "binding", sid, "runs past the end",
    ),
    "binding-garbage-der": Case(
        lambda w: with_classical(w, w.a.classical_leaf(binding=b"\x04\x05hello")[0]),
        BindingError, "binding", sid, "expected tag 0x30",
    ),
    "binding-oversized": Case(
        lambda w: with_classical(
            w, w.a.classical_leaf(binding=valid_binding(w).encode() + bytes(MAX_EXTENSION_LEN))[0]
        ),
        BindingError, "binding", sid, "byte limit",
    ),
    "binding-huge-issuer-key-id": Case(
        lambda w: with_classical(
            w, w.a.classical_leaf(binding=SvidBinding(bytes(600), valid_binding(w).signature).encode())[0]
        ),
        BindingError, "binding", sid, "issuerKeyId must be 32 bytes",
    ),
    # issuance requests
    "issue-replayed-request": Case(lambda w: issue_twice(w, lambda m: m.request), IssuanceError, "replay", sid),
    "issue-duplicate-for-one-serial": Case(
        lambda w: issue_twice(
            w,
            lambda m: build_request(
                (der(m.classical_leaf),), m.classical_key, MLDSA65PrivateKey.generate(),
                fresh_mlkem_spki(), timestamp_ms=now_ms(),
            ),
        ),
        IssuanceError, "duplicate", sid,
    ),
    "issue-stale-request": Case(
        lambda w: request_for(w, *fresh_svid(w), timestamp_ms=now_ms() - 10 * 60 * 1000), IssuanceError, "stale"
    ),
    "issue-request-from-the-future": Case(
        lambda w: request_for(w, *fresh_svid(w), timestamp_ms=now_ms() + 10 * 60 * 1000), IssuanceError, "stale"
    ),
    "issue-forged-classical-proof": Case(forged_classical_proof, IssuanceError, "bad-proof", sid, "classical"),
    "issue-forged-mldsa-proof": Case(forged_mldsa_proof, IssuanceError, "bad-proof", sid, "ML-DSA-65"),
    "issue-svid-without-binding": Case(
        lambda w: request_for(w, *w.a.classical_leaf(binding=None)), IssuanceError, "binding", sid
    ),
    "issue-svid-bound-by-other-intermediate": Case(
        lambda w: request_for(w, *w.a.classical_leaf(binding_key=w.a2.intermediate_key)),
        IssuanceError, "binding", sid, "untrusted intermediate",
    ),
    "issue-svid-of-other-td": Case(
        lambda w: request_for(w, *fresh_svid(w, w.b)), IssuanceError, "untrusted-svid", sid_b
    ),
    "issue-nonce-too-short": Case(
        lambda w: request_for(w, *fresh_svid(w), nonce=bytes(8)), IssuanceError, "malformed", None, "nonce"
    ),
    "issue-garbage-certificate": Case(
        lambda w: malformed_request(w, classical_chain=(b"\x30\x03\x02\x01\x01",)),
        IssuanceError, "malformed", None, "not DER X.509",
    ),
    "issue-garbage-mldsa-key": Case(
        lambda w: malformed_request(w, mldsa_spki=b"\x30\x00"), IssuanceError, "malformed", sid, "PQC public key"
    ),
    "issue-empty-chain": Case(lambda w: malformed_request(w, classical_chain=()), IssuanceError, "malformed"),
    # bytes from files: the CLI chain loader, the bundle loaders, our own DER parsers
    "cli-loader-truncated-pem": Case(
        lambda w: lambda: load_chain(file_with(w, "truncated.pem", truncated_pem(w))), ParseError, None
    ),
    "cli-loader-garbage": Case(
        lambda w: lambda: load_chain(file_with(w, "garbage.pem", b"\x00\x01garbage\xff" * 50)), ParseError, None
    ),
    "cli-bundle-loader-truncated-pem": Case(
        lambda w: lambda: load_bundle_set(file_with(w, "bundle-truncated.pem", truncated_pem(w))), ParseError, None
    ),
    "bundle-loader-truncated-der": Case(
        lambda w: lambda: X509Bundle.from_der(w.a.trust_domain, der(w.a.hierarchy.root)[:-40]), BundleError, None
    ),
    "bundle-loader-garbage-pem": Case(
        lambda w: lambda: X509Bundle.from_pem(
            w.a.trust_domain, b"-----BEGIN CERTIFICATE-----\nMIIBAAAA\n-----END CERTIFICATE-----\n"
        ),
        BundleError, None,
    ),
    "bundle-loader-truncated-pem": Case(
        lambda w: lambda: X509Bundle.from_pem(w.a.trust_domain, truncated_pem(w)), BundleError, None
    ),
    "parse-binding-truncated": Case(
        lambda w: lambda: parse_binding(valid_binding(w).encode()[:200]), ParseError, None
    ),
    "parse-binding-trailing-bytes": Case(
        lambda w: lambda: parse_binding(valid_binding(w).encode() + b"\x00"), ParseError, None
    ),
    "parse-related-garbage": Case(lambda w: lambda: parse_related_certificate(b"\x30\x80\x00\x00"), ParseError, None),
}  # fmt: skip


def test_table_is_large_enough() -> None:
    assert len(CASES) >= 25
    verification = [c for c in CASES.values() if issubclass(c.error, VerificationError)]
    # Every check verify_hybrid_svid can fail has a row (``malformed`` is HybridSvid's, below).
    checks = [LeafError, ChainError, ValidityError, AlgorithmError, KeyUsageError, IdentityMismatchError]
    checks += [RelatedCertificateError, BindingError, LifetimeError]
    tokens = {cls.check for cls in checks}
    assert tokens <= {c.token for c in verification}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_credential_is_refused_with_its_typed_error(world: World, name: str) -> None:
    case = CASES[name]
    attempt = case.build(world)
    with pytest.raises(SpirePqcError) as caught:
        attempt()
    exc = caught.value
    assert type(exc) is case.error, f"{name}: got {type(exc).__name__}: {exc}"
    message = str(exc)
    if isinstance(exc, VerificationError):
        assert exc.check == case.token
        assert message.startswith(f"{case.token}")
    if isinstance(exc, IssuanceError):
        assert exc.reason == case.token
    if case.names is not None:
        expected = case.names(world)
        assert expected in message
        assert getattr(exc, "spiffe_id", None) == expected
    if case.says is not None:
        assert case.says in message, message


# --- the valid case ----------------------------------------------------------------------------


def test_valid_hybrid_svid_verifies(world: World) -> None:
    m = world.valid
    result = verify(world)()
    assert str(result.spiffe_id) == world.sid  # type: ignore[attr-defined]
    assert result.binding_intermediate == world.a.hierarchy.intermediate.public_key  # type: ignore[attr-defined]
    hybrid = HybridSvid(
        spiffe_id=m.spiffe_id,
        classical_chain=tuple(m.classical_chain),
        classical_key=m.classical_key,
        pqc_chain=tuple(m.pqc_chain),
        pqc_key=m.mldsa_key,
        kem_chain=tuple(m.kem_chain),
        kem_key=m.mlkem_key,
    )
    verified = hybrid.verify(classical_bundles=world.a.classical_bundles, pqc_bundles=world.a.pqc_bundles)
    assert verified.pqc_leaf == m.pqc_leaf
    assert hybrid.not_after == min(m.classical_leaf.not_valid_after_utc, m.pqc_leaf.not_valid_after_utc)
    # The PQC credentials never outlive the classical SVID, and the crafted variants start from
    # valid inputs: the same builders with no change verify.
    assert m.pqc_leaf.not_valid_after_utc <= m.classical_leaf.not_valid_after_utc
    with_classical(world, world.a.classical_leaf(key=m.classical_key)[0])()
    with_pqc(world, pqc_leaf(world, usage=SIGNING))()


@pytest.mark.parametrize("wrong", ["classical_key", "pqc_key", "kem_key"])
def test_hybrid_svid_refuses_mismatched_keys(world: World, wrong: str) -> None:
    m = world.valid
    keys: dict[str, object] = {
        "classical_key": m.classical_key,
        "pqc_key": m.mldsa_key,
        "kem_key": m.mlkem_key,
    }
    keys[wrong] = {
        "classical_key": ec.generate_private_key(ec.SECP256R1()),
        "pqc_key": MLDSA65PrivateKey.generate(),
        "kem_key": MLKEM768PrivateKey.generate(),
    }[wrong]
    with pytest.raises(MalformedCredentialError) as caught:
        HybridSvid(
            spiffe_id=m.spiffe_id,
            classical_chain=tuple(m.classical_chain),
            pqc_chain=tuple(m.pqc_chain),
            kem_chain=tuple(m.kem_chain),
            **keys,  # type: ignore[arg-type]
        )
    assert caught.value.check == "malformed"
    assert world.sid in str(caught.value)


def test_hybrid_svid_refuses_empty_chain(world: World) -> None:
    m = world.valid
    with pytest.raises(MalformedCredentialError):
        HybridSvid(
            spiffe_id=m.spiffe_id,
            classical_chain=(),
            classical_key=m.classical_key,
            pqc_chain=tuple(m.pqc_chain),
            pqc_key=m.mldsa_key,
            kem_chain=tuple(m.kem_chain),
            kem_key=m.mlkem_key,
        )


def test_refused_issuance_leaves_the_ca_usable(world: World) -> None:
    """A refused replay does not poison the ledger: a fresh retry with the same keys gets the same
    certificates back (one issuance per classical SVID, idempotent for its own keys)."""
    m = world.a.mint()
    issuer = world.a.new_issuer()
    first = issuer.issue(m.request)
    with pytest.raises(IssuanceError):
        issuer.issue(m.request)
    # The agent retries with the same keys, newly signed (fresh nonce and timestamp).
    retry = build_request(
        m.request.classical_chain, m.classical_key, m.mldsa_key, m.request.mlkem_spki, timestamp_ms=now_ms()
    )
    again = issuer.issue(retry)
    assert again.reissued
    assert again.response == first.response
