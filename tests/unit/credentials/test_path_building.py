"""PQC path validation does not depend on the order of anchors or of the presented chain.

Issue 9: with a classical (ECDSA) anchor of the same subject listed before the ML-DSA root, a valid
PQC chain was refused, because path building stopped at the first subject match. Every candidate
issuer is now tried (subject, then key identifier, then signature), and decoys of every kind are
passed over: same subject with another key, same key identifier under another subject, a classical
key, a presented intermediate that signed nothing. The search is bounded.
"""

from __future__ import annotations

import datetime as dt
import itertools
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from spire_pqc.bundle import BundleSet, X509Bundle
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey
from spire_pqc.errors import ChainError, ValidityError, VerificationError
from spire_pqc.svid import verify_hybrid_svid, verify_pqc_svid
from spire_pqc.x509.path import MAX_SIGNATURE_CHECKS, verify_pqc_chain

from .certedit import SPKI, SUBJECT, name_with_bit_string_cn, truncated_spki, with_field
from .certedit import mldsa_signer as resigner
from .fuzz import PROPERTY
from .pki import Domain, Minted, mldsa_signer, public_key_object, utcnow

Key = MLDSA65PrivateKey | ec.EllipticCurvePrivateKey


def ca_certificate(
    subject: x509.Name,
    key: Key,
    *,
    issuer: tuple[x509.Name, Key] | None = None,
    ski: bytes | None = None,
    aki: bytes | None = None,
    not_after: dt.datetime | None = None,
) -> x509.Certificate:
    """A CA certificate for ``key`` (self-signed unless ``issuer``), with exactly the key
    identifiers given (None: the extension is left out)."""
    issuer_name, issuer_key = issuer or (subject, key)
    public = (
        key.public_key()
        if isinstance(key, ec.EllipticCurvePrivateKey)
        else public_key_object(key.public_key().spki())
    )
    now = utcnow()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(not_after or now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    )
    if ski is not None:
        builder = builder.add_extension(x509.SubjectKeyIdentifier(ski), critical=False)
    if aki is not None:
        builder = builder.add_extension(x509.AuthorityKeyIdentifier(aki, None, None), critical=False)
    if isinstance(issuer_key, ec.EllipticCurvePrivateKey):
        return builder.sign(issuer_key, hashes.SHA256())
    return builder.sign(mldsa_signer(issuer_key), None)  # type: ignore[arg-type]


def ski_of(cert: x509.Certificate) -> bytes:
    return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest


class Pki:
    """A trust domain's real hierarchy plus decoys around it."""

    def __init__(self) -> None:
        self.domain = Domain.create("example.org")
        self.minted: Minted = self.domain.mint()
        self.root = self.domain.hierarchy.root
        self.intermediate = self.domain.intermediate
        self.leaf = self.minted.pqc_leaf
        root_name, root_ski = self.root.subject, ski_of(self.root)
        self.decoy_anchors = {
            # The case of issue 9: the PQC root's name on an ECDSA key.
            "classical-same-subject": ca_certificate(
                root_name, ec.generate_private_key(ec.SECP256R1()), ski=b"\x01" * 20
            ),
            "classical-same-subject-same-key-id": ca_certificate(
                root_name, ec.generate_private_key(ec.SECP256R1()), ski=root_ski
            ),
            # A retired root under the same name (another key, another key id).
            "mldsa-same-subject-other-key-id": ca_certificate(
                root_name, MLDSA65PrivateKey.generate(), ski=b"\x02" * 20
            ),
            # Same name and the root's key id, but another key: only the signature tells it apart.
            "mldsa-same-subject-same-key-id": ca_certificate(
                root_name, MLDSA65PrivateKey.generate(), ski=root_ski
            ),
            # No key id at all: also only the signature tells it apart.
            "mldsa-same-subject-no-key-id": ca_certificate(root_name, MLDSA65PrivateKey.generate()),
            "mldsa-other-subject-same-key-id": ca_certificate(
                x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "decoy")]),
                MLDSA65PrivateKey.generate(),
                ski=root_ski,
            ),
        }
        # A presented intermediate under the real intermediate's name that signed nothing here.
        self.decoy_intermediate = ca_certificate(
            self.intermediate.subject,
            MLDSA65PrivateKey.generate(),
            issuer=(root_name, self.domain.hierarchy.root_key),
            ski=ski_of(self.intermediate),
            aki=root_ski,
        )


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


def at() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@pytest.mark.parametrize(
    "decoy",
    [
        "classical-same-subject",
        "classical-same-subject-same-key-id",
        "mldsa-same-subject-other-key-id",
        "mldsa-same-subject-same-key-id",
        "mldsa-same-subject-no-key-id",
        "mldsa-other-subject-same-key-id",
    ],
)
def test_decoy_anchor_before_or_after_the_root(pki: Pki, decoy: str) -> None:
    chain = [pki.leaf, pki.intermediate]
    for anchors in ([pki.decoy_anchors[decoy], pki.root], [pki.root, pki.decoy_anchors[decoy]]):
        assert verify_pqc_chain(chain, anchors, at=at(), spiffe_id=None) == [pki.intermediate, pki.root]
    with pytest.raises(ChainError):
        verify_pqc_chain(chain, [pki.decoy_anchors[decoy]], at=at(), spiffe_id=None)


def test_every_order_of_every_decoy_anchor(pki: Pki) -> None:
    decoys = list(pki.decoy_anchors.values())
    chain = [pki.leaf, pki.intermediate]
    for position in range(len(decoys) + 1):
        anchors = [*decoys[:position], pki.root, *decoys[position:]]
        assert verify_pqc_chain(chain, anchors, at=at(), spiffe_id=None)[-1] == pki.root
        assert verify_pqc_chain(chain, anchors[::-1], at=at(), spiffe_id=None)[-1] == pki.root


def test_classical_anchor_first_in_a_real_bundle_through_verify_hybrid_svid(pki: Pki) -> None:
    """The issue-9 scenario end to end: the PQC bundle of example.org lists an ECDSA CA with the
    root's name before the ML-DSA root."""
    m = pki.minted
    bundle = X509Bundle(pki.domain.trust_domain, [pki.decoy_anchors["classical-same-subject"], pki.root])
    assert bundle.authorities[0].public_key_algorithm_oid.dotted_string == "1.2.840.10045.2.1"
    result = verify_hybrid_svid(
        m.classical_chain, m.pqc_chain, m.kem_chain,
        classical_bundles=pki.domain.classical_bundles, pqc_bundles=BundleSet([bundle]),
    )  # fmt: skip
    assert result.spiffe_id == m.spiffe_id


def test_presented_chain_in_any_order_with_decoys(pki: Pki) -> None:
    extras = [
        pki.intermediate,
        pki.root,
        pki.decoy_intermediate,
        pki.decoy_anchors["mldsa-same-subject-no-key-id"],
    ]
    bundle = BundleSet([X509Bundle(pki.domain.trust_domain, [pki.root])])
    for order in itertools.permutations(extras):
        spiffe_id, path = verify_pqc_svid([pki.leaf, *order], bundle, at=at())
        assert path == [pki.intermediate, pki.root]
        assert spiffe_id == pki.minted.spiffe_id


def test_a_rotated_root_under_the_same_name(pki: Pki) -> None:
    """Old and new roots share the subject; the intermediate names the new one by key id."""
    old_root = pki.decoy_anchors["mldsa-same-subject-other-key-id"]
    for anchors in itertools.permutations([old_root, pki.root]):
        assert (
            verify_pqc_chain([pki.leaf, pki.intermediate], list(anchors), at=at(), spiffe_id=None)[-1]
            == pki.root
        )


def test_expired_twin_does_not_hide_the_valid_anchor(pki: Pki) -> None:
    """An expired copy of the root (same key and name) first: the valid one is still found, and
    alone it is refused for its validity, the most specific reason."""
    key, name = pki.domain.hierarchy.root_key, pki.root.subject
    expired = ca_certificate(name, key, ski=ski_of(pki.root), not_after=utcnow() - dt.timedelta(minutes=1))
    chain = [pki.leaf, pki.intermediate]
    assert verify_pqc_chain(chain, [expired, pki.root], at=at(), spiffe_id=None)[-1] == pki.root
    with pytest.raises(ValidityError, match="PQC root expired"):
        verify_pqc_chain(chain, [expired], at=at(), spiffe_id="spiffe://example.org/x")


def test_search_is_bounded_by_signature_checks(pki: Pki) -> None:
    """Anchors that can only be told apart by signature (the root's name and key id, another key)
    cost one check each: past the bound the validation stops with a ChainError instead of trying
    them all."""
    key = MLDSA65PrivateKey.generate()
    decoys = [
        ca_certificate(pki.root.subject, key, ski=ski_of(pki.root)) for _ in range(MAX_SIGNATURE_CHECKS + 4)
    ]
    chain = [pki.leaf, pki.intermediate]
    started = time.process_time()
    with pytest.raises(ChainError, match=f"stopped after {MAX_SIGNATURE_CHECKS} signature checks"):
        verify_pqc_chain(chain, [*decoys, pki.root], at=at(), spiffe_id=None)
    # Generous bound (about 30 ML-DSA-65 verifications take a few ms): it is the count that matters.
    assert time.process_time() - started < 5


def test_decoys_filtered_by_key_id_cost_no_signature_check(pki: Pki) -> None:
    """Same-name anchors with other key ids are passed over without a signature check, so even
    many of them (a bundle mid-rotation, or a crafted one) leave the real root reachable."""
    key = MLDSA65PrivateKey.generate()
    decoys = [
        ca_certificate(pki.root.subject, key, ski=index.to_bytes(20, "big"))
        for index in range(1, 3 * MAX_SIGNATURE_CHECKS)
    ]
    chain = [pki.leaf, pki.intermediate]
    assert verify_pqc_chain(chain, [*decoys, pki.root], at=at(), spiffe_id=None)[-1] == pki.root


def test_cross_signed_loop_in_the_presented_chain_terminates(pki: Pki) -> None:
    """Two presented CAs that certify each other, neither anchored: refused, not an endless loop."""
    name_a = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "loop a")])
    name_b = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "loop b")])
    key_a, key_b = MLDSA65PrivateKey.generate(), MLDSA65PrivateKey.generate()
    a = ca_certificate(name_a, key_a, issuer=(name_b, key_b))
    b = ca_certificate(name_b, key_b, issuer=(name_a, key_a))
    leaf = ca_certificate(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "leaf")]),
                          MLDSA65PrivateKey.generate(), issuer=(name_a, key_a))  # fmt: skip
    with pytest.raises(ChainError, match="does not lead to"):
        verify_pqc_chain([leaf, a, b], [pki.root], at=at(), spiffe_id=None, max_intermediates=8)


def test_presented_chain_length_is_bounded(pki: Pki) -> None:
    with pytest.raises(ChainError, match="at most 8 allowed"):
        verify_pqc_chain([pki.leaf, *[pki.intermediate] * 9], [pki.root], at=at(), spiffe_id=None)


@PROPERTY
@given(st.data())
def test_a_path_is_found_exactly_when_one_exists_whatever_the_order(pki: Pki, data: st.DataObject) -> None:
    """Random anchors and presented certificates, in random order, drawn from the real ones, every
    decoy and malformed ones: validation succeeds exactly when a path exists (the root is an anchor
    and the intermediate is presented, or the intermediate is itself an anchor), always with the same
    path, and otherwise fails typed."""
    root_signer = resigner(pki.domain.hierarchy.root_key)
    malformed = {
        "root-cn-bit-string": x509.load_der_x509_certificate(
            with_field(pki.root, SUBJECT, name_with_bit_string_cn(), root_signer)
        ),
        "root-mldsa-key-1951-bytes": x509.load_der_x509_certificate(
            with_field(pki.root, SPKI, truncated_spki(pki.root), root_signer)
        ),
        "intermediate-cn-bit-string": x509.load_der_x509_certificate(
            with_field(pki.intermediate, SUBJECT, name_with_bit_string_cn(), root_signer)
        ),
    }
    pool = {"root": pki.root, "intermediate": pki.intermediate, "decoy-intermediate": pki.decoy_intermediate}
    pool |= pki.decoy_anchors | malformed
    names = sorted(pool)
    anchors = data.draw(st.lists(st.sampled_from(names), unique=True, max_size=6).flatmap(st.permutations))
    presented = data.draw(st.lists(st.sampled_from(names), unique=True, max_size=6).flatmap(st.permutations))
    exists = "intermediate" in anchors or ("root" in anchors and "intermediate" in presented)
    try:
        path = verify_pqc_chain(
            [pki.leaf, *(pool[n] for n in presented)], [pool[n] for n in anchors], at=at(), spiffe_id=None
        )
    except VerificationError:
        assert not exists
        return
    assert exists
    # A bundle that holds the intermediate itself anchors the path there (anchors come first).
    assert path == ([pki.intermediate] if "intermediate" in anchors else [pki.intermediate, pki.root])
