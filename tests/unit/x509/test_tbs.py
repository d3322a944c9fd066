"""Certificates signed through the selected PQ backend (spire_pqc.x509.tbs).

The TBSCertificate our encoder writes must be byte for byte what cryptography's CertificateBuilder
writes for the same fields (so every verifier reads it as before), and the signature must be made by
the backend the process chose - on liboqs, never by OpenSSL through cryptography.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from spire_pqc.crypto import _backend
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey
from spire_pqc.crypto.mlkem import MLKEM768PrivateKey
from spire_pqc.x509 import certs
from spire_pqc.x509.oids import RELATED_CERT
from spire_pqc.x509.tbs import TbsBuilder

NAME = x509.Name(
    [
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "spire-pqc"),
        x509.NameAttribute(NameOID.COMMON_NAME, "tbs test é"),
    ]
)
OTHER = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "issuer")])


def _extensions() -> list[tuple[x509.ExtensionType, bool]]:
    return [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (x509.SubjectAlternativeName([x509.UniformResourceIdentifier("spiffe://td/w")]), False),
        (x509.UnrecognizedExtension(RELATED_CERT, b"\x30\x03\x04\x01\x00"), False),
        (x509.KeyUsage(True, False, False, False, False, False, False, False, False), True),
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), False),
        (x509.SubjectKeyIdentifier(b"\x01" * 20), False),
    ]


@pytest.mark.parametrize(
    ("not_before", "not_after"),
    [
        # microseconds are dropped; 2049 is the last UTCTime year, 2050 the first GeneralizedTime one
        (
            dt.datetime(2026, 12, 1, 8, 5, 3, 123456, tzinfo=dt.UTC),
            dt.datetime(2049, 12, 31, 23, 59, 59, tzinfo=dt.UTC),
        ),
        (dt.datetime(1950, 1, 1, tzinfo=dt.UTC), dt.datetime(2050, 1, 1, tzinfo=dt.UTC)),
        (
            dt.datetime(2026, 1, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=5))),
            dt.datetime(9999, 12, 31, tzinfo=dt.UTC),
        ),
    ],
)
@pytest.mark.parametrize("serial", [1, 0x7F, 0x80, (1 << 159) - 1])
def test_tbs_is_what_cryptography_encodes(
    serial: int, not_before: dt.datetime, not_after: dt.datetime
) -> None:
    key = MLDSA65PrivateKey.generate()
    subject_spki = MLKEM768PrivateKey.generate().public_key().spki()
    ours = TbsBuilder().subject_name(NAME).issuer_name(OTHER).public_key_spki(subject_spki)
    ours = ours.serial_number(serial).validity(not_before, not_after)
    theirs = (
        x509.CertificateBuilder()
        .subject_name(NAME)
        .issuer_name(OTHER)
        .public_key(certs._public_key_object(subject_spki))
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    for extension, critical in _extensions():
        ours = ours.add_extension(extension, critical=critical)
        theirs = theirs.add_extension(extension, critical=critical)
    reference = theirs.sign(_backend.openssl_helpers().cryptography_mldsa65_private_key(key.seed()), None)
    assert ours.tbs_certificate() == reference.tbs_certificate_bytes
    signed = ours.sign(key)
    assert signed.tbs_certificate_bytes == reference.tbs_certificate_bytes
    assert signed.signature_algorithm_oid == reference.signature_algorithm_oid
    assert certs.check_mldsa_signature(signed, key.public_key())


def test_builder_refuses_incomplete_or_invalid_templates() -> None:
    spki = MLDSA65PrivateKey.generate().public_key().spki()
    with pytest.raises(ValueError, match="incomplete"):
        TbsBuilder().subject_name(NAME).issuer_name(NAME).public_key_spki(spki).tbs_certificate()
    with pytest.raises(ValueError, match="serial"):
        TbsBuilder().serial_number(0)
    with pytest.raises(ValueError, match="serial"):
        TbsBuilder().serial_number(1 << 159)
    with pytest.raises(ValueError, match="notAfter"):
        TbsBuilder().validity(dt.datetime(2027, 1, 1, tzinfo=dt.UTC), dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    with pytest.raises(ValueError, match="already added"):
        TbsBuilder().add_extension(x509.SubjectKeyIdentifier(b"1"), critical=False).add_extension(
            x509.SubjectKeyIdentifier(b"2"), critical=False
        )


class _CountingBackend:
    """The selected backend, with every ML-DSA-65 signature made through it counted."""

    def __init__(self, inner: _backend.Backend) -> None:
        self._inner = inner
        self.name, self.version = inner.name, inner.version
        self.signatures = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def mldsa65_from_seed(self, seed: bytes) -> tuple[bytes, _backend.MLDSASigner]:
        public, signer = self._inner.mldsa65_from_seed(seed)
        outer = self

        class Counted:
            def sign(self, message: bytes, context: bytes) -> bytes:
                outer.signatures += 1
                return signer.sign(message, context)

        return public, Counted()


def test_certificates_are_signed_by_the_selected_backend(
    pq_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    counting = _CountingBackend(_backend.backend())
    monkeypatch.setattr(_backend, "_selected", counting)
    if pq_backend == "liboqs":
        # Nothing may reach OpenSSL's ML-DSA through cryptography on the liboqs backend.
        def refuse() -> None:
            raise AssertionError("certificate signed through cryptography on the liboqs backend")

        monkeypatch.setattr(_backend, "openssl_helpers", refuse)
    now = dt.datetime.now(dt.UTC)
    root_key, leaf_key = MLDSA65PrivateKey.generate(), MLDSA65PrivateKey.generate()
    root = certs.build_pqc_root(root_key, "td.example", not_before=now, not_after=now + dt.timedelta(days=1))
    leaf = certs.build_pqc_svid(
        root, root_key, leaf_key.public_key(), "spiffe://td.example/w",
        trust_domain="td.example", classical_leaf_der=b"classical", not_before=now,
        not_after=now + dt.timedelta(hours=1),
    )  # fmt: skip
    kem = certs.build_kem_certificate(
        root, root_key, MLKEM768PrivateKey.generate().public_key(), "spiffe://td.example/w",
        trust_domain="td.example", classical_leaf_der=b"classical", not_before=now,
        not_after=now + dt.timedelta(hours=1),
    )  # fmt: skip
    assert counting.signatures == 3
    for cert in (root, leaf, kem):
        assert certs.check_mldsa_signature(cert, root_key.public_key())
    assert leaf.issuer == root.subject
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest


def test_cross_certificate_is_still_classical() -> None:
    now = dt.datetime.now(dt.UTC)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    classical_root = (
        x509.CertificateBuilder().subject_name(OTHER).issuer_name(OTHER).public_key(ec_key.public_key())
        .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ec_key.public_key()), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ec_key, hashes.SHA256())
    )  # fmt: skip
    inter = MLDSA65PrivateKey.generate().public_key()
    cross = certs.cross_certify_intermediate(
        classical_root, ec_key, inter, "td.example", not_before=now, not_after=now + dt.timedelta(hours=1)
    )
    cross.verify_directly_issued_by(classical_root)
    assert certs.mldsa_public_key(cross) == inter


@pytest.mark.parametrize("kind", ["pqc", "kem"])
def test_leaf_profiles_are_what_cryptography_encodes(kind: str) -> None:
    """The CA's one-step leaf templates encode what cryptography's builder does for the same fields."""
    now = dt.datetime.now(dt.UTC)
    root_key = MLDSA65PrivateKey.generate()
    root = certs.build_pqc_root(root_key, "td.example", not_before=now, not_after=now + dt.timedelta(days=1))
    later, sid, related = now + dt.timedelta(hours=1), "spiffe://td.example/w", b"classical leaf"
    expected: list[type[x509.ExtensionType]] = [
        x509.SubjectKeyIdentifier, x509.AuthorityKeyIdentifier, x509.BasicConstraints,
        x509.SubjectAlternativeName, x509.UnrecognizedExtension, x509.KeyUsage,
    ]  # fmt: skip
    if kind == "pqc":
        leaf = certs.build_pqc_svid(
            root, root_key, MLDSA65PrivateKey.generate().public_key(), sid,
            trust_domain="td.example", classical_leaf_der=related, not_before=now, not_after=later,
        )  # fmt: skip
        expected.append(x509.ExtendedKeyUsage)
    else:
        leaf = certs.build_kem_certificate(
            root, root_key, MLKEM768PrivateKey.generate().public_key(), sid,
            trust_domain="td.example", classical_leaf_der=related, not_before=now, not_after=later,
        )  # fmt: skip
    assert [type(e.value) for e in leaf.extensions] == expected
    theirs = (
        x509.CertificateBuilder()
        .subject_name(leaf.subject)
        .issuer_name(root.subject)
        .public_key(leaf.public_key())
        .serial_number(leaf.serial_number)
        .not_valid_before(leaf.not_valid_before_utc)
        .not_valid_after(leaf.not_valid_after_utc)
    )
    for extension in leaf.extensions:
        theirs = theirs.add_extension(extension.value, critical=extension.critical)
    reference = theirs.sign(
        _backend.openssl_helpers().cryptography_mldsa65_private_key(root_key.seed()), None
    )
    assert leaf.tbs_certificate_bytes == reference.tbs_certificate_bytes
    assert certs.check_mldsa_signature(leaf, root_key.public_key())
    ski = leaf.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(leaf.public_key())
