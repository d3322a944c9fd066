"""Certificates that cryptography loads but cannot fully parse, at every boundary that takes them.

Each malformed certificate is a valid one with one TBSCertificate field replaced and signed again by
its real issuer (tests/unit/credentials/certedit.py), so it survives every signature check and the
malformed field reaches the code that reads it. Before issue 9 these escaped as TypeError (a
commonName encoded as a BIT STRING), ValueError (an ML-DSA-65 key of 1951 bytes, in a certificate or
a trust anchor) or x509.InvalidVersion; each boundary must now refuse them with its own typed error.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from spiffe._proto import workload_pb2 as wl

from spire_pqc._internal import der as asn1
from spire_pqc._proto.spire_pqc.workload.v1 import workload_pb2 as hy
from spire_pqc.bundle import BundleSet, SpiffeBundle, X509Bundle
from spire_pqc.channel import messages, proof
from spire_pqc.channel.authorize import authorize_member_of
from spire_pqc.errors import (
    BundleError,
    ChainError,
    MalformedCredentialError,
    ParseError,
    SpirePqcError,
    VerificationError,
)
from spire_pqc.svid import HybridSvid, X509Svid, verify_hybrid_svid
from spire_pqc.workload.client import parse_hybrid_response, parse_pqc_bundles, parse_x509_response
from spire_pqc.x509 import certs
from spire_pqc.x509.path import verify_pqc_chain
from tests.unit.crypto._pkcs8 import unknown_algorithm_pkcs8

from .certedit import (
    EXTENSIONS,
    ISSUER,
    SAN_WITH_X400_ADDRESS,
    SERIAL,
    SPKI,
    SUBJECT,
    VERSION,
    Signer,
    ecdsa_signer,
    extensions_field,
    extensions_of,
    mldsa_signer,
    name_with_bit_string_cn,
    truncated_spki,
    with_field,
)
from .pki import Domain, Minted, der


@dataclass(frozen=True)
class World:
    domain: Domain
    minted: Minted

    @property
    def at(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)


@pytest.fixture(scope="module")
def world() -> World:
    domain = Domain.create("example.org")
    return World(domain, domain.mint())


Malform = Callable[[x509.Certificate, Signer], bytes]

#: Malformations cryptography only notices when a part is read (so a certificate object exists).
LAZY: dict[str, Malform] = {
    "subject-cn-bit-string": lambda c, s: with_field(c, SUBJECT, name_with_bit_string_cn(), s),
    "issuer-cn-bit-string": lambda c, s: with_field(c, ISSUER, name_with_bit_string_cn(), s),
    "duplicate-extension": lambda c, s: with_field(
        c, EXTENSIONS, extensions_field(*extensions_of(c), extensions_of(c)[0]), s
    ),
    "san-x400-address": lambda c, s: with_field(c, EXTENSIONS, extensions_field(SAN_WITH_X400_ADDRESS), s),
}
#: The same for certificates with an ML-DSA-65 key.
LAZY_MLDSA: dict[str, Malform] = {
    **LAZY,
    "mldsa-key-1951-bytes": lambda c, s: with_field(c, SPKI, truncated_spki(c), s),
}
#: Malformations cryptography refuses (or warns about) when loading, so only bytes carry them.
AT_LOAD: dict[str, Malform] = {
    "version-4": lambda c, s: with_field(c, VERSION, asn1.tlv(0xA0, asn1.integer(3)), s),
    "serial-zero": lambda c, s: with_field(c, SERIAL, asn1.integer(0), s),
    "serial-negative": lambda c, s: with_field(c, SERIAL, asn1.tlv(asn1.INTEGER, b"\xfe"), s),
}
ALL_MLDSA = {**LAZY_MLDSA, **AT_LOAD}


def lazy(data: bytes) -> x509.Certificate:
    """Load bytes whose malformation cryptography notices only later."""
    return x509.load_der_x509_certificate(data)


def root_signer(w: World) -> Signer:
    return mldsa_signer(w.domain.hierarchy.root_key)


def intermediate_signer(w: World) -> Signer:
    return mldsa_signer(w.domain.intermediate_key)


# --- trust bundles -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(ALL_MLDSA))
def test_bundle_parsers_refuse_a_malformed_authority(world: World, kind: str) -> None:
    bad = ALL_MLDSA[kind](world.domain.hierarchy.root, root_signer(world))
    td = world.domain.trust_domain
    good = der(world.domain.hierarchy.root)
    pem = b"".join(
        b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(c) + b"-----END CERTIFICATE-----\n"
        for c in (good, bad)
    )
    document = {"keys": [{"use": "x509-svid", "kty": "AKP", "x5c": [base64.b64encode(bad).decode()]}]}
    for parse, position in (
        (lambda: X509Bundle.from_der(td, good + bad), "certificate 1"),
        (lambda: X509Bundle.from_pem(td, pem), "PEM block 1"),
        (lambda: SpiffeBundle.parse(td, json.dumps(document)), r"keys\[0\]"),
        (lambda: BundleSet.from_workload_api({"spiffe://example.org": good + bad}), "certificate 1"),
    ):
        with pytest.raises(BundleError, match=position):
            parse()


@pytest.mark.parametrize("kind", sorted(LAZY_MLDSA))
def test_bundle_types_refuse_a_malformed_certificate_object(world: World, kind: str) -> None:
    bad = lazy(LAZY_MLDSA[kind](world.domain.hierarchy.root, root_signer(world)))
    with pytest.raises(BundleError, match="authority 0"):
        X509Bundle(world.domain.trust_domain, [bad])
    with pytest.raises(BundleError, match="certificate 0"):
        BundleSet.from_certificates([bad], trust_domain=world.domain.trust_domain)


# --- verification of certificate objects -------------------------------------------------------


def _chains(w: World) -> dict[str, list[x509.Certificate]]:
    m = w.minted
    return {"classical": list(m.classical_chain), "pqc": list(m.pqc_chain), "kem": list(m.kem_chain)}


POSITIONS: dict[str, tuple[str, int, Callable[[World], Signer]]] = {
    # role, index in the chain, who signs it again
    "classical-leaf": ("classical", 0, lambda w: ecdsa_signer(w.domain.classical_ca.private_key)),
    "pqc-leaf": ("pqc", 0, intermediate_signer),
    "pqc-intermediate": ("pqc", 1, root_signer),
    "kem-leaf": ("kem", 0, intermediate_signer),
    "kem-intermediate": ("kem", 1, root_signer),
}


@pytest.mark.parametrize("position", sorted(POSITIONS))
@pytest.mark.parametrize("kind", sorted(LAZY_MLDSA))
def test_verify_hybrid_svid_refuses_a_malformed_certificate(world: World, kind: str, position: str) -> None:
    role, index, signer = POSITIONS[position]
    if kind == "mldsa-key-1951-bytes" and position in ("classical-leaf", "kem-leaf"):
        kind = "subject-cn-bit-string"  # these keys are not ML-DSA-65
    chains = _chains(world)
    chains[role][index] = lazy(LAZY_MLDSA[kind](chains[role][index], signer(world)))
    with pytest.raises(MalformedCredentialError, match="certificate") as refused:
        verify_hybrid_svid(
            chains["classical"], chains["pqc"], chains["kem"],
            classical_bundles=world.domain.classical_bundles, pqc_bundles=world.domain.pqc_bundles,
        )  # fmt: skip
    assert refused.value.check == "malformed"


@pytest.mark.parametrize("kind", sorted(LAZY_MLDSA))
def test_path_validation_with_a_malformed_anchor(world: World, kind: str) -> None:
    """A trust anchor handed in as an object (not through a bundle) with a malformed part is
    skipped; with no other anchor the chain is refused with a ChainError naming it."""
    root = world.domain.hierarchy.root
    bad = lazy(LAZY_MLDSA[kind](root, root_signer(world)))
    chain = world.minted.pqc_chain
    at = world.at
    assert verify_pqc_chain(chain, [bad, root], at=at, spiffe_id=None) == [chain[1], root]
    with pytest.raises(ChainError, match="anchor 0") as refused:
        verify_pqc_chain(chain, [bad], at=at, spiffe_id="spiffe://example.org/x")
    assert refused.value.spiffe_id == "spiffe://example.org/x"


def test_mldsa_public_key_of_a_malformed_key_is_typed(world: World) -> None:
    bad = lazy(LAZY_MLDSA["mldsa-key-1951-bytes"](world.minted.pqc_leaf, intermediate_signer(world)))
    with pytest.raises(MalformedCredentialError, match="public key"):
        certs.mldsa_public_key(bad, spiffe_id="spiffe://example.org/x")
    with pytest.raises(MalformedCredentialError, match="public key"):
        certs.spki_der(bad)


def test_hybrid_svid_model_refuses_a_malformed_leaf(world: World) -> None:
    m = world.minted
    bad = lazy(LAZY_MLDSA["mldsa-key-1951-bytes"](m.pqc_leaf, intermediate_signer(world)))
    with pytest.raises(MalformedCredentialError):
        HybridSvid(
            spiffe_id=m.spiffe_id, classical_chain=tuple(m.classical_chain), classical_key=m.classical_key,
            pqc_chain=(bad, *m.pqc_chain[1:]), pqc_key=m.mldsa_key,
            kem_chain=tuple(m.kem_chain), kem_key=m.mlkem_key,
        )  # fmt: skip


# --- the Workload API client -------------------------------------------------------------------


def _pkcs8(m: Minted) -> bytes:
    return m.classical_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _hybrid_item(w: World) -> hy.HybridSVID:
    m = w.minted
    return hy.HybridSVID(
        spiffe_id=str(m.spiffe_id),
        classical_chain=b"".join(der(c) for c in m.classical_chain),
        classical_key=_pkcs8(m),
        pqc_chain=b"".join(der(c) for c in m.pqc_chain),
        pqc_key=m.mldsa_key.pkcs8(),
        kem_certificate=b"".join(der(c) for c in m.kem_chain),
        kem_key=m.mlkem_key.pkcs8(),
        classical_bundle=der(w.domain.classical_ca.certificate),
        pqc_bundle=der(w.domain.hierarchy.root),
    )


def test_hybrid_response_fixture_parses(world: World) -> None:
    update = parse_hybrid_response(hy.HybridSVIDResponse(svids=[_hybrid_item(world)]))
    assert update.svids[0].spiffe_id == world.minted.spiffe_id


@pytest.mark.parametrize("field", ["pqc_chain", "kem_certificate", "pqc_bundle", "federated"])
@pytest.mark.parametrize("kind", sorted(ALL_MLDSA))
def test_hybrid_response_with_a_malformed_certificate(world: World, kind: str, field: str) -> None:
    m = world.minted
    message = hy.HybridSVIDResponse(svids=[_hybrid_item(world)])
    item = message.svids[0]  # the message holds a copy: edit that one
    if field == "pqc_chain":
        item.pqc_chain = ALL_MLDSA[kind](m.pqc_leaf, intermediate_signer(world)) + der(m.pqc_chain[1])
    elif field == "kem_certificate":
        item.kem_certificate = der(m.kem_leaf) + ALL_MLDSA[kind](m.kem_chain[1], root_signer(world))
    else:
        bad_root = ALL_MLDSA[kind](world.domain.hierarchy.root, root_signer(world))
        if field == "pqc_bundle":
            item.pqc_bundle = bad_root
        else:
            message.federated_pqc_bundles["other.org"] = bad_root
    with pytest.raises(SpirePqcError) as refused:
        parse_hybrid_response(message)
    assert isinstance(refused.value, MalformedCredentialError | BundleError)


@pytest.mark.parametrize("field", ["x509_svid", "bundle", "federated"])
@pytest.mark.parametrize("kind", sorted({**LAZY, **AT_LOAD}))
def test_x509_response_with_a_malformed_certificate(world: World, kind: str, field: str) -> None:
    m = world.minted
    classical_signer = ecdsa_signer(world.domain.classical_ca.private_key)
    bad_leaf = {**LAZY, **AT_LOAD}[kind](m.classical_leaf, classical_signer)
    bad_ca = {**LAZY, **AT_LOAD}[kind](world.domain.classical_ca.certificate, classical_signer)
    item = wl.X509SVID(
        spiffe_id=str(m.spiffe_id),
        x509_svid_key=_pkcs8(m),
        x509_svid=bad_leaf if field == "x509_svid" else der(m.classical_leaf),
        bundle=bad_ca if field == "bundle" else der(world.domain.classical_ca.certificate),
    )
    message = wl.X509SVIDResponse(svids=[item])
    if field == "federated":
        message.federated_bundles["spiffe://other.org"] = bad_ca
    with pytest.raises(SpirePqcError) as refused:
        parse_x509_response(message)
    assert isinstance(refused.value, ParseError | BundleError)


@pytest.mark.parametrize(
    "key", [b"", b"\x30\x00", unknown_algorithm_pkcs8()], ids=["empty", "empty-seq", "unknown-alg"]
)
def test_responses_with_a_classical_key_that_does_not_load(world: World, key: bytes) -> None:
    """Regression: cryptography's UnsupportedAlgorithm escaped parse_hybrid_response, and the
    standard response's key was not parsed at all (its consumer failed later, untyped)."""
    message = hy.HybridSVIDResponse(svids=[_hybrid_item(world)])
    message.svids[0].classical_key = key
    with pytest.raises(MalformedCredentialError, match="private key does not parse"):
        parse_hybrid_response(message)
    m = world.minted
    item = wl.X509SVID(spiffe_id=str(m.spiffe_id), x509_svid=der(m.classical_leaf), x509_svid_key=key)
    with pytest.raises(MalformedCredentialError, match="private key does not parse"):
        parse_x509_response(wl.X509SVIDResponse(svids=[item]))
    item.x509_svid_key = _pkcs8(m)
    assert parse_x509_response(wl.X509SVIDResponse(svids=[item])).svids[0].spiffe_id == m.spiffe_id


@pytest.mark.parametrize("kind", sorted(ALL_MLDSA))
def test_pqc_bundles_response_with_a_malformed_root(world: World, kind: str) -> None:
    bad = ALL_MLDSA[kind](world.domain.hierarchy.root, root_signer(world))
    with pytest.raises(BundleError):
        parse_pqc_bundles(hy.PQCBundlesResponse(bundles={"example.org": bad}))


# --- signed messages and PQ proofs (one framing of chain + signature) ---------------------------


def framed(chain: list[bytes], signature: bytes) -> bytes:
    parts = [bytes([len(chain)])]
    for cert in chain:
        parts += [struct.pack(">I", len(cert)), cert]
    return b"".join([*parts, struct.pack(">H", len(signature)), signature])


@pytest.mark.parametrize("kind", sorted(ALL_MLDSA))
def test_proof_and_message_parsers_refuse_a_malformed_certificate(world: World, kind: str) -> None:
    m = world.minted
    chain = [ALL_MLDSA[kind](m.pqc_leaf, intermediate_signer(world)), der(m.pqc_chain[1])]
    signature = m.mldsa_key.sign(b"message", context=messages.MESSAGE_CONTEXT)
    with pytest.raises(MalformedCredentialError, match="certificate 0") as refused:
        proof.parse_body(framed(chain, signature))
    assert refused.value.check == "pq-proof-format"
    with pytest.raises(VerificationError) as rejected:
        messages.verify_message(
            b"message",
            b"SPQS\x01" + framed(chain, signature),
            pqc_bundles=world.domain.pqc_bundles,
            authorizer=authorize_member_of("example.org"),
        )
    assert isinstance(rejected.value, MalformedCredentialError)
    assert rejected.value.check == "message-format"


def test_proof_header_of_the_wrong_size_is_typed() -> None:
    with pytest.raises(MalformedCredentialError, match="header"):
        proof.parse_header(b"\x01\x01")


@pytest.mark.parametrize("kind", sorted(LAZY_MLDSA))
def test_seal_to_a_malformed_kem_chain_is_refused(world: World, kind: str) -> None:
    m = world.minted
    sender = HybridSvid(
        spiffe_id=m.spiffe_id, classical_chain=tuple(m.classical_chain), classical_key=m.classical_key,
        pqc_chain=tuple(m.pqc_chain), pqc_key=m.mldsa_key, kem_chain=tuple(m.kem_chain), kem_key=m.mlkem_key,
    )  # fmt: skip
    if kind == "mldsa-key-1951-bytes":  # the KEM leaf has no ML-DSA key: break its issuer instead
        recipient = [m.kem_leaf, lazy(LAZY_MLDSA[kind](m.kem_chain[1], root_signer(world)))]
    else:
        recipient = [lazy(LAZY_MLDSA[kind](m.kem_leaf, intermediate_signer(world))), m.kem_chain[1]]
    with pytest.raises(MalformedCredentialError):
        messages.seal(
            b"secret", sender=sender, recipient_kem_chain=recipient,
            pqc_bundles=world.domain.pqc_bundles, authorizer=authorize_member_of("example.org"),
        )  # fmt: skip


@pytest.mark.parametrize("kind", ["version-4", "serial-negative", "unknown-key"])
def test_agent_classical_svid_from_spire_refuses_what_does_not_parse(world: World, kind: str) -> None:
    """The node agent's model of an SVID from SPIRE's Delegated Identity API: typed, not InvalidVersion
    or UnsupportedAlgorithm out of the subscription loop."""
    m = world.minted
    signer = ecdsa_signer(world.domain.classical_ca.private_key)
    chain, key = [der(m.classical_leaf)], _pkcs8(m)
    if kind == "unknown-key":
        key = unknown_algorithm_pkcs8()
    else:
        chain = [AT_LOAD[kind](m.classical_leaf, signer)]
    with pytest.raises(MalformedCredentialError, match="X509-SVID does not parse"):
        X509Svid.from_der(m.spiffe_id, chain, key)
    assert X509Svid.from_der(m.spiffe_id, [der(m.classical_leaf)], _pkcs8(m)).leaf == m.classical_leaf
