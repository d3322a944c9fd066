"""The signed PQC bundle document: what is accepted and every refusal (spire_pqc.federation.document)."""

from __future__ import annotations

import json

import pytest

from spire_pqc.bundle import SpiffeBundle
from spire_pqc.errors import BundleError, BundleSequenceError, BundleSignatureError
from spire_pqc.federation.client import BundleEndpoint
from spire_pqc.federation.document import SignedBundle, sign_bundle, verify_signed_bundle
from spire_pqc.jwtsvid.jws import b64url_encode
from spire_pqc.spiffeid import SpiffeId
from spire_pqc.x509.signer import TrustDomainSigner
from tests.unit.federation.pki import RemoteDomain, signer_of


@pytest.fixture
def remote() -> RemoteDomain:
    return RemoteDomain.generate()


def test_a_signed_document_verifies_under_the_trusted_root(remote: RemoteDomain) -> None:
    signed = remote.publish(refresh_hint=30)
    bundle = verify_signed_bundle(remote.td, signed, trusted_roots=remote.roots)
    assert bundle.x509_authorities == remote.roots
    assert bundle.sequence == 1 and bundle.refresh_hint == 30
    # The document is a SPIFFE bundle any parser reads; the signing key is listed with its chain.
    assert SpiffeBundle.parse(remote.td, signed.document) == bundle
    [entry] = bundle.jwt_authorities.values()
    assert entry["kty"] == "AKP" and entry["alg"] == "ML-DSA-65" and len(entry["x5c"]) == 2


def test_an_unsigned_document_is_refused(remote: RemoteDomain) -> None:
    signed = remote.publish()
    with pytest.raises(BundleSignatureError, match="unsigned"):
        verify_signed_bundle(remote.td, SignedBundle(signed.document, ""), trusted_roots=remote.roots)


@pytest.mark.parametrize("edit", ["sequence", "byte", "root-removed"])
def test_a_tampered_document_is_refused(remote: RemoteDomain, edit: str) -> None:
    signed = remote.publish()
    doc = json.loads(signed.document)
    if edit == "sequence":
        doc["spiffe_sequence"] += 1
        tampered = json.dumps(doc, indent=2).encode()
    elif edit == "root-removed":
        doc["keys"] = [k for k in doc["keys"] if k["use"] != "x509-svid"]
        tampered = json.dumps(doc, indent=2).encode()
    else:
        tampered = signed.document.replace(b'"keys"', b'"keys" ', 1)  # same JSON, other bytes
    with pytest.raises(BundleSignatureError, match="does not verify"):
        verify_signed_bundle(remote.td, SignedBundle(tampered, signed.signature), trusted_roots=remote.roots)


def test_a_document_signed_under_an_untrusted_root_is_refused(remote: RemoteDomain) -> None:
    impostor = RemoteDomain.generate(remote.td.name)  # same trust domain name, its own PQC root
    signed = impostor.publish()
    with pytest.raises(BundleSignatureError, match="not certified under a trusted PQC root"):
        verify_signed_bundle(remote.td, signed, trusted_roots=remote.roots)


def test_a_signer_without_the_bundle_usage_is_refused(remote: RemoteDomain) -> None:
    # A workload's PQC SVID key under the right intermediate is not a bundle signer.
    from spire_pqc.crypto.mldsa import MLDSA65PrivateKey
    from spire_pqc.x509 import certs

    inter = remote.active.intermediate
    key = MLDSA65PrivateKey.generate()
    svid = certs.build_pqc_svid(
        inter.certificate, inter.key, key.public_key(), "spiffe://b.org/w", trust_domain="b.org",
        classical_leaf_der=b"x", not_before=inter.certificate.not_valid_before_utc,
        not_after=inter.certificate.not_valid_after_utc,
    )  # fmt: skip
    bundle = SpiffeBundle(remote.td, remote.roots, {}, 1, 1)
    signed = sign_bundle(bundle, TrustDomainSigner(key, (svid, inter.certificate)))
    with pytest.raises(BundleSignatureError, match="not certified"):
        verify_signed_bundle(remote.td, signed, trusted_roots=remote.roots)


def _with_signature_header(signed: SignedBundle, **changes: object) -> SignedBundle:
    head, payload, signature = signed.signature.split(".")
    header = json.loads(__import__("base64").urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    header.update(changes)
    return SignedBundle(
        signed.document, ".".join([b64url_encode(json.dumps(header).encode()), payload, signature])
    )


@pytest.mark.parametrize(
    "changes",
    [{"alg": "none"}, {"alg": "ES256"}, {"alg": "HS256"}, {"typ": "JWT"}, {"jwk": {}}, {"kid": "other"}],
)
def test_signature_header_confusion_is_refused(remote: RemoteDomain, changes: dict[str, object]) -> None:
    signed = _with_signature_header(remote.publish(), **changes)
    with pytest.raises(BundleSignatureError):
        verify_signed_bundle(remote.td, signed, trusted_roots=remote.roots)


def test_an_attached_payload_is_refused(remote: RemoteDomain) -> None:
    signed = remote.publish()
    head, _, signature = signed.signature.split(".")
    attached = SignedBundle(signed.document, f"{head}.{b64url_encode(b'{}')}.{signature}")
    with pytest.raises(BundleSignatureError, match="detached"):
        verify_signed_bundle(remote.td, attached, trusted_roots=remote.roots)


def test_replay_of_an_older_document_is_refused(remote: RemoteDomain) -> None:
    old = remote.publish()
    new = remote.publish()
    previous = verify_signed_bundle(remote.td, new, trusted_roots=remote.roots)
    with pytest.raises(BundleSequenceError, match="older"):
        verify_signed_bundle(remote.td, old, trusted_roots=remote.roots, previous=previous)


def test_a_change_without_a_new_sequence_number_is_refused(remote: RemoteDomain) -> None:
    first = verify_signed_bundle(remote.td, remote.publish(refresh_hint=1), trusted_roots=remote.roots)
    remote.sequence -= 1  # the next document reuses the number
    same_number = remote.publish(refresh_hint=2)
    with pytest.raises(BundleSequenceError, match="without a new number"):
        verify_signed_bundle(remote.td, same_number, trusted_roots=remote.roots, previous=first)


def test_a_root_rotation_is_accepted_only_when_signed_under_a_trusted_root(remote: RemoteDomain) -> None:
    old_roots = remote.roots
    first = verify_signed_bundle(remote.td, remote.publish(), trusted_roots=old_roots)
    new = remote.rotate()
    # Step 1: the new root is published beside the old one, signed under the old (trusted) root.
    overlap = verify_signed_bundle(
        remote.td, remote.publish(sign_with=remote.hierarchies[0]), trusted_roots=old_roots, previous=first
    )
    assert set(overlap.x509_authorities) == {old_roots[0], new.root}
    # Step 2: the old root goes; the document is now signed under the new root, trusted since step 1.
    remote.retire_first()
    final = remote.publish()
    after = verify_signed_bundle(remote.td, final, trusted_roots=overlap.x509_authorities, previous=overlap)
    assert after.x509_authorities == (new.root,)
    # Skipping step 1 (an abrupt rotation) is refused: nothing trusted certifies the new signer.
    with pytest.raises(BundleSignatureError):
        verify_signed_bundle(remote.td, final, trusted_roots=old_roots, previous=first)


def test_a_document_without_roots_is_refused(remote: RemoteDomain) -> None:
    signed = sign_bundle(SpiffeBundle(remote.td, (), {}, 1, 1), signer_of(remote.active, remote.td))
    with pytest.raises(BundleError, match="no PQC root"):
        verify_signed_bundle(remote.td, signed, trusted_roots=remote.roots)


def test_a_document_without_a_sequence_number_cannot_be_signed(remote: RemoteDomain) -> None:
    with pytest.raises(BundleError, match="spiffe_sequence"):
        sign_bundle(SpiffeBundle(remote.td, remote.roots), signer_of(remote.active, remote.td))


def test_the_endpoint_id_must_be_in_the_remote_trust_domain() -> None:
    remote = RemoteDomain.generate()
    with pytest.raises(ValueError, match="not in trust domain"):
        BundleEndpoint(remote.td, "127.0.0.1", 1, SpiffeId.parse("spiffe://a.org/spire/server"))
