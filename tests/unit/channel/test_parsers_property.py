"""Property tests: the PQ proof record, signed messages and sealed envelopes raise only their typed
errors, within a time bound.

The inputs are structured so they reach the deep code: a framing with any certificate count and
certificates that are valid, edited and signed again by their real issuer (so they pass the
signature checks), or random DER; signature blobs inside correctly encrypted envelopes (the test
seals arbitrary inner bytes to the recipient's real KEM key, so the AES-GCM tag is no obstacle).
"""

from __future__ import annotations

import hashlib
import os
import struct
from functools import cache

from cryptography import x509
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given
from hypothesis import strategies as st

from spire_pqc.channel import messages, proof
from spire_pqc.channel._framing import encode_chain_and_signature
from spire_pqc.channel.authorize import authorize_member_of
from spire_pqc.errors import AuthorizationError, DecryptionError, MalformedCredentialError, VerificationError
from spire_pqc.spiffeid import SpiffeId
from spire_pqc.svid import HybridSvid
from tests.unit.credentials.certedit import mldsa_signer
from tests.unit.credentials.fuzz import EDITED, PROPERTY, PROPERTY_DEEP, der_values, resigned_certificates
from tests.unit.credentials.pki import Domain, Minted, der


@cache
def minted() -> tuple[Domain, Minted, HybridSvid]:
    domain = Domain.create("example.org")
    m = domain.mint()
    svid = HybridSvid(
        spiffe_id=m.spiffe_id, classical_chain=tuple(m.classical_chain), classical_key=m.classical_key,
        pqc_chain=tuple(m.pqc_chain), pqc_key=m.mldsa_key, kem_chain=tuple(m.kem_chain), kem_key=m.mlkem_key,
    )  # fmt: skip
    return domain, m, svid


@st.composite
def certificates(draw: st.DrawFn) -> bytes:
    domain, m, _ = minted()
    choice = draw(
        st.sampled_from(["leaf", "intermediate", "resigned-leaf", "resigned-intermediate", "random"])
    )
    if choice == "leaf":
        return der(m.pqc_leaf)
    if choice == "intermediate":
        return der(m.pqc_chain[1])
    if choice == "resigned-leaf":
        return draw(resigned_certificates(m.pqc_leaf, mldsa_signer(domain.intermediate_key)))
    if choice == "resigned-intermediate":
        return draw(resigned_certificates(m.pqc_chain[1], mldsa_signer(domain.hierarchy.root_key)))
    return draw(der_values())


@st.composite
def framed(draw: st.DrawFn) -> bytes:
    """count || count * (len || cert) || len || signature, with lengths that may lie."""
    chain = draw(st.lists(certificates(), min_size=0, max_size=3))
    count = draw(st.sampled_from([len(chain), len(chain), 0, 9, 255]))
    parts = [bytes([count])]
    for cert in chain:
        length = draw(st.sampled_from([len(cert), len(cert), len(cert) + 1, 0, 2**32 - 1]))
        parts += [struct.pack(">I", length), cert]
    signature = draw(st.sampled_from([3309, 3309, 0, 3308]).map(os.urandom))
    parts += [struct.pack(">H", draw(st.sampled_from([len(signature), len(signature) + 1]))), signature]
    return b"".join(parts)


def valid_body() -> bytes:
    _, m, _ = minted()
    return encode_chain_and_signature(m.pqc_chain, m.mldsa_key.sign(b"x", context=proof.CONTEXT))


bodies = st.one_of(framed(), EDITED.map(lambda v: v.apply(valid_body())), st.binary(max_size=64))


@PROPERTY
@given(header=st.binary(max_size=10))
def test_proof_header(header: bytes) -> None:
    try:
        length = proof.parse_header(header)
    except MalformedCredentialError as exc:
        assert exc.check == "pq-proof-format"
        return
    assert 0 <= length <= proof.MAX_BODY


@PROPERTY_DEEP
@given(body=bodies)
def test_proof_body(body: bytes) -> None:
    try:
        parsed = proof.parse_body(body)
    except MalformedCredentialError as exc:
        assert exc.check == "pq-proof-format"
        return
    # Strict framing: what parses re-encodes to exactly the input.
    assert proof.Proof(parsed.chain, parsed.signature).encode()[proof.HEADER.size :] == body
    assert all(isinstance(c, x509.Certificate) for c in parsed.chain)


def _verify(message: bytes, blob: bytes) -> None:
    domain, _, _ = minted()
    messages.verify_message(
        message, blob, pqc_bundles=domain.pqc_bundles, authorizer=authorize_member_of("example.org")
    )


@PROPERTY_DEEP
@given(body=bodies, magic=st.sampled_from([b"SPQS\x01", b"SPQS\x01", b"SPQS\x02", b""]))
def test_verify_message(body: bytes, magic: bytes) -> None:
    try:
        _verify(b"message", magic + body)
    except (VerificationError, AuthorizationError):
        return


def seal_inner(inner: bytes, *, recipient: SpiffeId, sender: SpiffeId) -> bytes:
    """An envelope around arbitrary ``inner`` bytes, encrypted correctly to the recipient's KEM key."""
    _, _, svid = minted()
    shared, kem_ciphertext = svid.kem_key.public_key().encapsulate()
    nonce = os.urandom(12)
    header = messages._header(recipient, sender, kem_ciphertext, nonce)
    return header + AESGCM(messages._key(shared, header)).encrypt(nonce, inner, header)


@st.composite
def envelopes(draw: st.DrawFn) -> bytes:
    _, m, svid = minted()
    kind = draw(st.sampled_from(["structured", "structured", "edited"]))
    if kind == "edited":
        valid = messages.seal(
            b"plaintext", sender=svid, recipient_kem_chain=svid.kem_chain, pqc_bundles=minted()[0].pqc_bundles,
            authorizer=authorize_member_of("example.org"),
        )  # fmt: skip
        return draw(EDITED).apply(valid)
    body = draw(bodies)
    signature = draw(st.sampled_from([b"SPQS\x01", b""])) + body
    length = draw(st.sampled_from([len(signature), len(signature), len(signature) + 5, 2**32 - 1]))
    inner = draw(st.sampled_from([struct.pack(">I", length) + signature + b"plaintext", b"", b"\x00\x00"]))
    sender = draw(st.sampled_from([m.spiffe_id, SpiffeId.parse("spiffe://example.org/other")]))
    return seal_inner(inner, recipient=svid.spiffe_id, sender=sender)


@PROPERTY_DEEP
@given(envelope=envelopes())
def test_open_sealed(envelope: bytes) -> None:
    domain, _, svid = minted()
    try:
        sender, plaintext = messages.open_sealed(
            envelope,
            recipient=svid,
            pqc_bundles=domain.pqc_bundles,
            authorizer=authorize_member_of("example.org"),
        )
    except (VerificationError, DecryptionError, AuthorizationError):
        return
    assert sender == svid.spiffe_id  # only the real sender's signature opens an envelope
    assert hashlib.sha256(plaintext).digest()  # a bytes plaintext came out


def test_the_sealing_helper_is_not_vacuous() -> None:
    """An envelope built by the helper around a real inner signature opens: the properties above
    reach the signature check, not only the decryption."""
    domain, m, svid = minted()
    recipient, sender = svid.spiffe_id, m.spiffe_id
    shared, kem_ciphertext = svid.kem_key.public_key().encapsulate()
    nonce = os.urandom(12)
    header = messages._header(recipient, sender, kem_ciphertext, nonce)
    signature = messages.sign_message(svid, hashlib.sha256(header).digest() + b"hello")
    inner = struct.pack(">I", len(signature)) + signature + b"hello"
    envelope = header + AESGCM(messages._key(shared, header)).encrypt(nonce, inner, header)
    assert messages.open_sealed(
        envelope,
        recipient=svid,
        pqc_bundles=domain.pqc_bundles,
        authorizer=authorize_member_of("example.org"),
    ) == (sender, b"hello")
