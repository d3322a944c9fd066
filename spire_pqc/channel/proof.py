"""The hybrid mode's PQ proof: a PQC SVID chain plus an ML-DSA-65 signature bound to one TLS session.

Right after the handshake each side sends one record inside TLS::

    record    = type (1 byte, 0x01) || version (1 byte, 0x01) || length (4 bytes, big endian) || body
    body      = count (1 byte) || count * (length (4 bytes) || certificate DER)   -- PQC SVID chain,
                                                                                  -- leaf first
                || signature length (2 bytes) || ML-DSA-65 signature

The signature uses the FIPS 204 context ``spire-pqc/channel-binding/v1`` over::

    "spire-pqc hybrid proof v1" || 0x00 || signer role || 0x00 || verifier role || 0x00 || exporter

where ``exporter`` is the session's TLS exporter value (RFC 8446 §7.5, label
``EXPORTER-spire-pqc-hybrid``, 32 bytes) and the roles are ``client``/``server``. The exporter
ties the proof to this handshake's transcript (a proof copied from another session fails); the
roles stop a side's own proof being reflected back at it.

The verifier checks, each with a typed error: the chain verifies against the PQC bundle of the
peer's trust domain (verify_pqc_svid), its SPIFFE ID equals the TLS identity, its RFC 9763
RelatedCertificate equals SHA-256 of the peer's TLS leaf DER, the classical leaf's SvidBinding
verifies under the PQC SVID's issuing intermediate, then the signature.
"""

from __future__ import annotations

import datetime as dt
import struct
from dataclasses import dataclass

from cryptography import x509
from OpenSSL import SSL

from spire_pqc.bundle import BundleSource
from spire_pqc.channel._framing import decode_chain_and_signature, encode_chain_and_signature
from spire_pqc.errors import (
    IdentityMismatchError,
    InvalidSignatureError,
    MalformedCredentialError,
    ParseError,
    ProofSignatureError,
    RelatedCertificateError,
)
from spire_pqc.spiffeid import SpiffeId
from spire_pqc.svid import HybridSvid, binding_signers, der, verify_pqc_svid, verify_svid_binding
from spire_pqc.x509 import certs
from spire_pqc.x509.oids import RELATED_CERT
from spire_pqc.x509.related import parse_related_certificate, related_hash

CONTEXT = b"spire-pqc/channel-binding/v1"
EXPORTER_LABEL = b"EXPORTER-spire-pqc-hybrid"
EXPORTER_LEN = 32
RECORD_PROOF = 0x01
VERSION = 0x01
HEADER = struct.Struct(">BBI")
MAX_BODY = 128 * 1024
_LABEL = b"spire-pqc hybrid proof v1"


def exporter(tls: SSL.Connection) -> bytes:
    """This session's channel-binding value (TLS 1.3 exporter, RFC 8446 §7.5)."""
    return tls.export_keying_material(EXPORTER_LABEL, EXPORTER_LEN)


def signed_message(exporter_value: bytes, *, signer_role: str) -> bytes:
    verifier_role = "server" if signer_role == "client" else "client"
    return b"\x00".join((_LABEL, signer_role.encode(), verifier_role.encode(), exporter_value))


@dataclass(frozen=True)
class Proof:
    chain: tuple[x509.Certificate, ...]
    signature: bytes

    def encode(self) -> bytes:
        """The whole record (header included)."""
        body = encode_chain_and_signature(self.chain, self.signature)
        return HEADER.pack(RECORD_PROOF, VERSION, len(body)) + body


def make_proof(svid: HybridSvid, exporter_value: bytes, *, role: str) -> Proof:
    """Sign this session's binding with the PQC SVID key (CPU-bound: call through crypto.aio)."""
    signature = svid.pqc_key.sign(signed_message(exporter_value, signer_role=role), context=CONTEXT)
    return Proof(svid.pqc_chain, signature)


def parse_header(header: bytes) -> int:
    """The body length of a proof record; MalformedCredentialError for anything else."""
    if len(header) != HEADER.size:
        raise MalformedCredentialError(
            f"PQ proof header must be {HEADER.size} bytes, got {len(header)}", check="pq-proof-format"
        )
    kind, version, length = (int(v) for v in HEADER.unpack(header))
    if kind != RECORD_PROOF:
        raise MalformedCredentialError(
            f"expected the peer's PQ proof record, got record type 0x{kind:02x} (is the peer in hybrid mode?)",
            check="pq-proof-format",
        )
    if version != VERSION:
        raise MalformedCredentialError(
            f"PQ proof version {version} is not supported", check="pq-proof-format"
        )
    if length > MAX_BODY:
        raise MalformedCredentialError(
            f"PQ proof of {length} bytes exceeds {MAX_BODY}", check="pq-proof-format"
        )
    return length


def parse_body(body: bytes) -> Proof:
    def bad(why: str) -> MalformedCredentialError:
        return MalformedCredentialError(f"PQ proof: {why}", check="pq-proof-format")

    chain, signature = decode_chain_and_signature(body, bad, what="record")
    return Proof(chain, signature)


def verify_proof(
    proof: Proof,
    *,
    tls_id: SpiffeId,
    tls_leaf: x509.Certificate,
    exporter_value: bytes,
    signer_role: str,
    pqc_bundles: BundleSource,
    at: dt.datetime | None = None,
) -> SpiffeId:
    """Verify a peer's proof for this session (CPU-bound: call through crypto.aio)."""
    pqc_id, path = verify_pqc_svid(proof.chain, pqc_bundles, at=at)
    sid = str(tls_id)
    if pqc_id != tls_id:
        raise IdentityMismatchError(
            f"PQ proof names {pqc_id}, the TLS certificate names {tls_id}", spiffe_id=sid
        )
    leaf = proof.chain[0]
    try:
        value = leaf.extensions.get_extension_for_oid(RELATED_CERT).value
        digest = parse_related_certificate(
            value.value if isinstance(value, x509.UnrecognizedExtension) else b""
        )
    except (x509.ExtensionNotFound, ParseError) as exc:
        raise RelatedCertificateError(f"PQC SVID RelatedCertificate unusable: {exc}", spiffe_id=sid) from exc
    if digest != related_hash(der(tls_leaf)):
        raise RelatedCertificateError(
            "PQC SVID is bound to another classical SVID than the one in this TLS session", spiffe_id=sid
        )
    # The classical leaf's SvidBinding must verify under an intermediate the chain establishes (the
    # same rule as verify_hybrid_svid: after an intermediate rotation the binder is carried in the chain).
    now = at or dt.datetime.now(dt.UTC)
    verify_svid_binding(tls_leaf, binding_signers(proof.chain, path, pqc_bundles, spiffe_id=pqc_id, at=now))
    try:
        certs.mldsa_public_key(leaf, spiffe_id=sid).verify(
            proof.signature, signed_message(exporter_value, signer_role=signer_role), context=CONTEXT
        )
    except InvalidSignatureError as exc:
        raise ProofSignatureError(
            "PQ proof signature does not verify over this session's channel binding (replayed from "
            "another session, or signed by a key other than the PQC SVID's)",
            spiffe_id=sid,
        ) from exc
    return pqc_id
