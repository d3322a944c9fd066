"""Property tests: the Workload API client turns any response into domain objects or a spire-pqc error.

Responses come from the agent's socket, so a compromised or buggy agent must not be able to crash a
workload with anything but a typed error. Inputs: the serialized valid responses with byte edits
(protobuf decoding is allowed to refuse them with DecodeError, as grpclib would), and valid
responses with each field replaced: edited bytes, random bytes, or certificates edited
structurally and signed again by their real issuer.
"""

from __future__ import annotations

from functools import cache

from cryptography.hazmat.primitives import serialization
from google.protobuf.message import DecodeError
from hypothesis import given
from hypothesis import strategies as st
from spiffe._proto import workload_pb2 as wl

from spire_pqc._proto.spire_pqc.workload.v1 import workload_pb2 as hy
from spire_pqc.errors import SpirePqcError
from spire_pqc.workload.client import parse_hybrid_response, parse_pqc_bundles, parse_x509_response
from tests.unit.credentials.certedit import ecdsa_signer, mldsa_signer
from tests.unit.credentials.fuzz import EDITED, PROPERTY, Variant, resigned_certificates, variants
from tests.unit.credentials.pki import Domain, Minted, der


@cache
def world() -> tuple[Domain, Minted]:
    domain = Domain.create("example.org")
    return domain, domain.mint()


def classical_key_der(m: Minted) -> bytes:
    return m.classical_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def valid_hybrid() -> dict[str, bytes]:
    domain, m = world()
    return {
        "classical_chain": der(m.classical_leaf),
        "classical_key": classical_key_der(m),
        "pqc_chain": der(m.pqc_leaf) + der(m.pqc_chain[1]),
        "pqc_key": m.mldsa_key.pkcs8(),
        "kem_certificate": der(m.kem_leaf) + der(m.kem_chain[1]),
        "kem_key": m.mlkem_key.pkcs8(),
        "classical_bundle": der(domain.classical_ca.certificate),
        "pqc_bundle": der(domain.hierarchy.root),
    }


def hybrid_item(spiffe_id: str, fields: dict[str, bytes], hint: str = "") -> hy.HybridSVID:
    item = hy.HybridSVID(spiffe_id=spiffe_id, hint=hint)
    for name, value in fields.items():
        setattr(item, name, value)
    return item


@st.composite
def field_values(draw: st.DrawFn, name: str, valid: bytes) -> bytes:
    """A field's bytes: valid, edited, random, or (for certificate fields) a re-signed edit."""
    domain, m = world()
    resign = {
        "classical_chain": (m.classical_leaf, ecdsa_signer(domain.classical_ca.private_key), b""),
        "pqc_chain": (m.pqc_leaf, mldsa_signer(domain.intermediate_key), der(m.pqc_chain[1])),
        "kem_certificate": (m.kem_leaf, mldsa_signer(domain.intermediate_key), der(m.kem_chain[1])),
        "pqc_bundle": (domain.hierarchy.root, mldsa_signer(domain.hierarchy.root_key), b""),
        "classical_bundle": (
            domain.classical_ca.certificate,
            ecdsa_signer(domain.classical_ca.private_key),
            b"",
        ),
    }
    if name in resign and draw(st.booleans()):
        cert, signer, rest = resign[name]
        return draw(resigned_certificates(cert, signer)) + rest
    variant: Variant = draw(variants(random_size=48))
    return variant.apply(valid)


@st.composite
def hybrid_responses(draw: st.DrawFn) -> hy.HybridSVIDResponse:
    _, m = world()
    valid = valid_hybrid()
    item = hybrid_item(
        draw(st.sampled_from([str(m.spiffe_id), "spiffe://example.org", "", "not an id", "spiffe://a/b"])),
        {name: draw(field_values(name, value)) for name, value in valid.items()},
        draw(st.text(max_size=8)),
    )
    message = hy.HybridSVIDResponse(svids=[item])
    for name in draw(
        st.lists(st.sampled_from(["other.org", "spiffe://other.org", "", "Bad TD"]), max_size=2)
    ):
        message.federated_pqc_bundles[name] = draw(field_values("pqc_bundle", valid["pqc_bundle"]))
    return message


@PROPERTY
@given(message=hybrid_responses())
def test_hybrid_response_fields(message: hy.HybridSVIDResponse) -> None:
    try:
        update = parse_hybrid_response(message)
    except SpirePqcError:
        return
    assert len(update.svids) == 1


@PROPERTY
@given(edit=EDITED)
def test_hybrid_response_bytes(edit: Variant) -> None:
    _, m = world()
    wire = hy.HybridSVIDResponse(svids=[hybrid_item(str(m.spiffe_id), valid_hybrid())])
    try:
        message = hy.HybridSVIDResponse.FromString(edit.apply(wire.SerializeToString()))
    except DecodeError:
        return
    try:
        parse_hybrid_response(message)
    except SpirePqcError:
        return


@st.composite
def x509_responses(draw: st.DrawFn) -> wl.X509SVIDResponse:
    _, m = world()
    valid = valid_hybrid()
    item = wl.X509SVID(
        spiffe_id=draw(st.sampled_from([str(m.spiffe_id), "spiffe://example.org", "", "x"])),
        x509_svid=draw(field_values("classical_chain", valid["classical_chain"])),
        x509_svid_key=draw(field_values("classical_key", valid["classical_key"])),
        bundle=draw(field_values("classical_bundle", valid["classical_bundle"])),
    )
    message = wl.X509SVIDResponse(svids=[item])
    for name in draw(st.lists(st.sampled_from(["spiffe://other.org", "other.org", ""]), max_size=2)):
        message.federated_bundles[name] = draw(field_values("classical_bundle", valid["classical_bundle"]))
    return message


@PROPERTY
@given(message=x509_responses())
def test_x509_response_fields(message: wl.X509SVIDResponse) -> None:
    try:
        context = parse_x509_response(message)
    except SpirePqcError:
        return
    assert len(context.svids) == 1


@PROPERTY
@given(st.data())
def test_pqc_bundles_response(data: st.DataObject) -> None:
    valid = valid_hybrid()["pqc_bundle"]
    names = data.draw(st.lists(st.sampled_from(["example.org", "spiffe://other.org", "", "x y"]), max_size=3))
    message = hy.PQCBundlesResponse(bundles={n: data.draw(field_values("pqc_bundle", valid)) for n in names})
    try:
        parse_pqc_bundles(message)
    except SpirePqcError:
        return


def test_the_valid_responses_parse() -> None:
    """The properties start from responses that do parse, so they are not vacuous."""
    _, m = world()
    valid = valid_hybrid()
    update = parse_hybrid_response(hy.HybridSVIDResponse(svids=[hybrid_item(str(m.spiffe_id), valid)]))
    assert update.svids[0].spiffe_id == m.spiffe_id
    item = wl.X509SVID(
        spiffe_id=str(m.spiffe_id), x509_svid=valid["classical_chain"], x509_svid_key=valid["classical_key"],
        bundle=valid["classical_bundle"],
    )  # fmt: skip
    assert parse_x509_response(wl.X509SVIDResponse(svids=[item])).svids[0].spiffe_id == m.spiffe_id
