"""PQ-signed and PQ-sealed messages between workloads, outside any TLS session.

**Signed** (:func:`sign_message` / :func:`verify_message`): a detached ML-DSA-65 signature (FIPS 204
context ``spire-pqc/message/v1``) by the signer's PQC SVID key, carried with the PQC SVID chain.
The verifier checks the chain against the PQC bundle of the signer's trust domain, runs an
authorizer on the signer's SPIFFE ID, then the signature.

**Sealed** (:func:`seal` / :func:`open_sealed`): encryption to a recipient's KEM certificate,
authenticated by the sender. A KEM-DEM construction:

* ML-KEM-768 encapsulation to the public key of the recipient's KEM certificate (verified first
  against the PQC bundle, and the recipient authorized),
* key = HKDF-SHA256(shared secret, info = ``"spire-pqc/seal/v1" || 0x00 || SHA-256(header)``),
* AES-256-GCM with a random 96-bit nonce; the header (recipient and sender SPIFFE IDs, KEM
  ciphertext, nonce) is the associated data,
* inside the ciphertext, a signed message by the sender over ``SHA-256(header) || plaintext``,
  so only the named sender could have produced this envelope for this recipient.

Why not HPKE: cryptography 50 has ``hpke.KEM.MLKEM768``, but it takes cryptography's own ML-KEM key
objects, and only ``spire_pqc.crypto._backend`` may touch those (the backend-isolation rule, docs/architecture.md
"Code layout"). The construction above uses only our key classes plus standard HKDF and AES-GCM;
moving to HPKE (RFC 9180 base mode, KEM ML-KEM-768) means exposing it through the crypto backend.

Envelope layout::

    "SPQE" || version (1) || len (2) || recipient ID || len (2) || sender ID
           || KEM ciphertext (1088) || nonce (12) || AES-256-GCM(inner)          -- header = all but the last field
    inner  = len (4) || signature blob || plaintext
    signature blob = "SPQS" || version (1) || count (1) || count * (len (4) || certificate DER)
                     || len (2) || ML-DSA-65 signature
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import struct
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from spire_pqc.bundle import BundleSource
from spire_pqc.channel._framing import decode_chain_and_signature, encode_chain_and_signature
from spire_pqc.channel.authorize import Authorizer
from spire_pqc.crypto.mlkem import CIPHERTEXT_LEN
from spire_pqc.errors import (
    AuthorizationError,
    DecryptionError,
    IdentityMismatchError,
    InvalidSignatureError,
    MalformedCredentialError,
    MessageSignatureError,
    SpiffeIdError,
)
from spire_pqc.spiffeid import SpiffeId
from spire_pqc.svid import HybridSvid, verify_kem_certificate, verify_pqc_svid
from spire_pqc.x509 import certs

MESSAGE_CONTEXT = b"spire-pqc/message/v1"
SEAL_INFO = b"spire-pqc/seal/v1"
_SIG_MAGIC = b"SPQS\x01"
_ENV_MAGIC = b"SPQE\x01"
_NONCE_LEN = 12


def _bad(what: str) -> MalformedCredentialError:
    return MalformedCredentialError(what, check="message-format")


def _authorize(authorizer: Authorizer, spiffe_id: SpiffeId, chain: Sequence[x509.Certificate]) -> None:
    try:
        authorizer(spiffe_id, chain)
    except AuthorizationError:
        raise
    except Exception as exc:  # an authorizer bug refuses, never accepts
        raise AuthorizationError(f"authorizer failed for {spiffe_id}: {exc!r}") from exc


# --- signed messages ---------------------------------------------------------------------------


def sign_message(signer: HybridSvid, message: bytes) -> bytes:
    """A detached signature blob over ``message`` by ``signer``'s PQC SVID (CPU-bound)."""
    signature = signer.pqc_key.sign(message, context=MESSAGE_CONTEXT)
    return _SIG_MAGIC + encode_chain_and_signature(signer.pqc_chain, signature)


def _parse_signature(blob: bytes) -> tuple[tuple[x509.Certificate, ...], bytes]:
    if not blob.startswith(_SIG_MAGIC) or len(blob) < len(_SIG_MAGIC) + 1:
        raise _bad("not a spire-pqc message signature (magic/version)")
    return decode_chain_and_signature(blob[len(_SIG_MAGIC) :], _bad, what="blob")


def verify_message(
    message: bytes,
    signature: bytes,
    *,
    pqc_bundles: BundleSource,
    authorizer: Authorizer,
    at: dt.datetime | None = None,
) -> SpiffeId:
    """Verify a detached signature blob and return the signer's SPIFFE ID (CPU-bound).

    Raises a VerificationError subclass (chain, leaf, MessageSignatureError) or AuthorizationError.
    """
    chain, raw_signature = _parse_signature(signature)
    signer, _ = verify_pqc_svid(chain, pqc_bundles, at=at)
    _authorize(authorizer, signer, chain)
    try:
        certs.mldsa_public_key(chain[0], spiffe_id=str(signer)).verify(
            raw_signature, message, context=MESSAGE_CONTEXT
        )
    except InvalidSignatureError as exc:
        raise MessageSignatureError(
            "signature does not verify over this message", spiffe_id=str(signer)
        ) from exc
    return signer


# --- sealed messages ---------------------------------------------------------------------------


def _header(recipient: SpiffeId, sender: SpiffeId, kem_ciphertext: bytes, nonce: bytes) -> bytes:
    r, s = str(recipient).encode(), str(sender).encode()
    return b"".join(
        (_ENV_MAGIC, struct.pack(">H", len(r)), r, struct.pack(">H", len(s)), s, kem_ciphertext, nonce)
    )


def _key(shared_secret: bytes, header: bytes) -> bytes:
    info = SEAL_INFO + b"\x00" + hashlib.sha256(header).digest()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared_secret)


def seal(
    plaintext: bytes,
    *,
    sender: HybridSvid,
    recipient_kem_chain: Sequence[x509.Certificate],
    pqc_bundles: BundleSource,
    authorizer: Authorizer,
    at: dt.datetime | None = None,
) -> bytes:
    """Encrypt ``plaintext`` to the holder of ``recipient_kem_chain``, signed by ``sender`` (CPU-bound).

    The recipient's KEM certificate is verified against the PQC bundle of its trust domain and its
    SPIFFE ID must pass ``authorizer`` before anything is encrypted to it.
    """
    recipient = verify_kem_certificate(recipient_kem_chain, pqc_bundles, at=at)
    _authorize(authorizer, recipient, recipient_kem_chain)
    public_key = certs.mlkem_public_key(recipient_kem_chain[0], spiffe_id=str(recipient))
    shared_secret, kem_ciphertext = public_key.encapsulate()
    nonce = os.urandom(_NONCE_LEN)
    header = _header(recipient, sender.spiffe_id, kem_ciphertext, nonce)
    signature = sign_message(sender, hashlib.sha256(header).digest() + plaintext)
    inner = struct.pack(">I", len(signature)) + signature + plaintext
    return header + AESGCM(_key(shared_secret, header)).encrypt(nonce, inner, header)


def _parse_envelope(envelope: bytes) -> tuple[SpiffeId, SpiffeId, bytes, bytes, bytes, bytes]:
    if not envelope.startswith(_ENV_MAGIC):
        raise _bad("not a spire-pqc sealed message (magic/version)")
    offset = len(_ENV_MAGIC)
    ids = []
    for role in ("recipient", "sender"):
        if offset + 2 > len(envelope):
            raise _bad(f"truncated {role} ID")
        (length,) = struct.unpack_from(">H", envelope, offset)
        offset += 2
        try:
            ids.append(SpiffeId.parse(envelope[offset : offset + length].decode()))
        except (UnicodeDecodeError, SpiffeIdError) as exc:
            raise _bad(f"{role} ID does not parse: {exc}") from exc
        offset += length
    end = offset + CIPHERTEXT_LEN + _NONCE_LEN
    if end > len(envelope):
        raise _bad("truncated KEM ciphertext or nonce")
    kem_ciphertext = envelope[offset : offset + CIPHERTEXT_LEN]
    nonce = envelope[offset + CIPHERTEXT_LEN : end]
    return ids[0], ids[1], kem_ciphertext, nonce, envelope[:end], envelope[end:]


def open_sealed(
    envelope: bytes,
    *,
    recipient: HybridSvid,
    pqc_bundles: BundleSource,
    authorizer: Authorizer,
    at: dt.datetime | None = None,
) -> tuple[SpiffeId, bytes]:
    """Decrypt a sealed message for ``recipient``; return ``(sender ID, plaintext)`` (CPU-bound).

    The sender's PQC SVID is verified against the PQC bundle of its trust domain, must name the
    sender ID in the header, must pass ``authorizer``, and its signature must verify.
    """
    recipient_id, sender_id, kem_ciphertext, nonce, header, ciphertext = _parse_envelope(envelope)
    if recipient_id != recipient.spiffe_id:
        raise IdentityMismatchError(
            f"sealed for {recipient_id}, not for {recipient.spiffe_id}", spiffe_id=str(recipient.spiffe_id)
        )
    shared_secret = recipient.kem_key.decapsulate(kem_ciphertext)
    try:
        inner = AESGCM(_key(shared_secret, header)).decrypt(nonce, ciphertext, header)
    except InvalidTag:
        raise DecryptionError("sealed message does not decrypt (tampered, or not for this key)") from None
    if len(inner) < 4:
        raise _bad("sealed message has no sender signature")
    (sig_len,) = struct.unpack_from(">I", inner, 0)
    if 4 + sig_len > len(inner):
        raise _bad("sender signature truncated")
    signature, plaintext = inner[4 : 4 + sig_len], inner[4 + sig_len :]
    signer = verify_message(
        hashlib.sha256(header).digest() + plaintext,
        signature,
        pqc_bundles=pqc_bundles,
        authorizer=authorizer,
        at=at,
    )
    if signer != sender_id:
        raise IdentityMismatchError(
            f"sealed message claims sender {sender_id} but is signed by {signer}", spiffe_id=str(signer)
        )
    return signer, plaintext
