"""The one error hierarchy of spire-pqc.

Every error the library raises on purpose derives from :class:`SpirePqcError`, so an entry point
needs a single ``except`` clause. Subclasses name *what* failed; verification errors also carry
*which check* failed and for *which SPIFFE ID*, so a log line or an exit message is actionable.
"""

from __future__ import annotations

import enum


class SpirePqcError(Exception):
    """Root of every error raised by spire-pqc."""


# --- configuration -----------------------------------------------------------------------------


class ConfigError(SpirePqcError):
    """A configuration is invalid. ``problems`` lists every problem found, each naming its key."""

    def __init__(self, problems: list[str] | str, *, source: str = "configuration") -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.source = source
        super().__init__(f"{source}: " + "; ".join(self.problems))


# --- cryptography ------------------------------------------------------------------------------


class CryptoError(SpirePqcError):
    """A cryptographic operation or key could not be used."""


class BackendUnavailableError(CryptoError):
    """No usable post-quantum backend (there is never a fallback to classical crypto)."""


class InvalidKeyError(CryptoError):
    """Key material is malformed: wrong length, wrong encoding, or fails a FIPS 203/204 check."""


class InvalidContextError(CryptoError):
    """A FIPS 204 context string is longer than 255 bytes (an error to sign with, a failure to verify)."""


class InvalidSignatureError(CryptoError):
    """A signature did not verify."""


class DecryptionError(CryptoError):
    """A sealed message could not be opened."""


class KeyFileError(CryptoError):
    """A key file is unusable. ``path`` names the file."""

    def __init__(self, message: str, *, path: str) -> None:
        self.path = path
        super().__init__(f"{path}: {message}")


class KeyFilePermissionError(KeyFileError):
    """A key file is readable or writable by users other than its owner."""


class CorruptKeyFileError(KeyFileError):
    """A key file does not parse as the expected key."""


class KeyFileExistsError(KeyFileError):
    """Refused to overwrite an existing key or certificate file without ``force``."""


# --- identities and credentials ----------------------------------------------------------------


class SpiffeIdError(SpirePqcError, ValueError):
    """A string is not a valid SPIFFE ID or trust domain name."""


class BundleError(SpirePqcError):
    """A trust bundle is malformed, or no bundle exists for a trust domain."""


class UnknownTrustDomainError(BundleError):
    """No bundle is known for a trust domain: nothing of it is trusted (never "trust anything")."""


class ParseError(SpirePqcError):
    """Bytes from outside (DER, PEM, protobuf) do not parse as the expected structure."""


class VerificationError(SpirePqcError):
    """A credential did not verify.

    ``check`` names the check that failed (a stable, machine-readable token such as
    ``"classical-chain"`` or ``"binding-signature"``); ``spiffe_id`` is the identity being verified,
    when known.
    """

    check: str = "verification"

    def __init__(self, message: str, *, spiffe_id: str | None = None, check: str | None = None) -> None:
        if check is not None:
            self.check = check
        self.spiffe_id = spiffe_id
        who = f" for {spiffe_id}" if spiffe_id else ""
        super().__init__(f"{self.check}{who}: {message}")


class AuthorizationError(SpirePqcError):
    """A verified peer is not allowed by the authorizer."""


class RefusalReason(enum.StrEnum):
    """Why an issue request was refused: the one list of reasons, shared by the CA, the endpoint (on the
    wire as ``spire_pqc.ca.v1.RefusalReason`` in the gRPC status details) and the agent. The values are
    stable tokens: log them, alert on them, compare ``IssuanceError.reason`` against them."""

    MALFORMED = "malformed"  # request shape, sizes, encodings
    STALE = "stale"  # timestamp outside the freshness window
    UNTRUSTED_SVID = "untrusted-svid"  # classical chain does not verify for this trust domain
    BINDING = "binding"  # no SvidBinding from a trusted intermediate in the classical leaf
    BAD_PROOF = "bad-proof"  # a proof of possession does not verify
    REPLAY = "replay"  # the nonce was used before (at any server sharing the ledger)
    DUPLICATE = "duplicate"  # the classical SVID already obtained PQC credentials for other keys
    UNAVAILABLE = "unavailable"  # the CA cannot decide now (its ledger database is down): retry
    UNAUTHENTICATED = "unauthenticated"  # the caller presented no valid X509-SVID
    UNAUTHORIZED = "unauthorized"  # the caller is not an authorised node agent
    BAD_RESPONSE = "bad-response"  # (agent side) the CA's reply is unusable
    REFUSED = "refused"  # a refusal that carried no reason (a CA older than the reason codes)


class IssuanceError(SpirePqcError):
    """The PQC CA refused an issuance request. ``reason`` is a :class:`RefusalReason` (a str)."""

    reason: RefusalReason = RefusalReason.REFUSED

    def __init__(
        self, message: str, *, reason: RefusalReason | str | None = None, spiffe_id: str | None = None
    ) -> None:
        if reason is not None:
            self.reason = RefusalReason(reason)
        self.spiffe_id = spiffe_id
        who = f" for {spiffe_id}" if spiffe_id else ""
        super().__init__(f"{self.reason}{who}: {message}")


class NotConfiguredError(SpirePqcError):
    """An operation needs configuration that has not been applied yet."""


class UnavailableError(SpirePqcError):
    """A dependency (SPIRE agent, PQC CA endpoint) cannot be reached right now; retry later."""


class LedgerError(UnavailableError):
    """The issuance ledger's database cannot answer (down, unreachable, corrupt, newer schema).

    ``database`` names it as an operator would look for it (``postgresql://spire@db:5432/ledger``,
    ``sqlite:///var/lib/spire-pqc/ledger.db``), never with a password. Issuance fails closed on it.
    """

    def __init__(self, message: str, *, database: str) -> None:
        self.database = database
        super().__init__(f"issuance ledger {database}: {message}")


# --- verification failures, one class per check (``check`` is the stable token) ---------------


class MalformedCredentialError(VerificationError):
    check = "malformed"


class LeafError(VerificationError):
    """The leaf certificate breaks the X509-SVID leaf rules (URI SAN, CA flag, key usage)."""

    check = "leaf"


class ChainError(VerificationError):
    """The chain does not lead to the trust domain's bundle."""

    check = "chain"


class ValidityError(VerificationError):
    """A certificate is expired or not yet valid at the verification time."""

    check = "validity"


class AlgorithmError(VerificationError):
    """A certificate carries an unexpected key or signature algorithm."""

    check = "algorithm"


class KeyUsageError(VerificationError):
    """A certificate's key usage does not allow what it is used for."""

    check = "key-usage"


class IdentityMismatchError(VerificationError):
    """Two credentials that must name the same SPIFFE ID (or trust domain) do not."""

    check = "spiffe-id-mismatch"


class RelatedCertificateError(VerificationError):
    """The RFC 9763 RelatedCertificate extension is missing or does not match the classical leaf."""

    check = "related-certificate"


class RevokedError(VerificationError):
    """A PQC credential was signed by an intermediate PQC CA its trust domain's PQC bundle revokes."""

    check = "revoked"


class BindingError(VerificationError):
    """The SvidBinding extension is missing, malformed, untrusted, or its signature does not verify."""

    check = "binding"


class LifetimeError(VerificationError):
    """A PQC credential outlives the classical SVID it is bound to."""

    check = "pqc-outlives-classical"


# --- channels (spire_pqc.channel) --------------------------------------------------------------


class ChannelError(SpirePqcError):
    """A secure channel could not be established or was broken."""


class HandshakeError(ChannelError):
    """The TLS handshake failed (or timed out) before any identity was established."""


class NoHybridGroupError(HandshakeError):
    """The peer offered no X25519MLKEM768 key exchange; a classical-only key exchange is refused."""


class ModeMismatchError(HandshakeError):
    """The peer runs another channel mode (ALPN, docs/architecture.md "Channel modes"); refused
    before any application byte is exchanged."""


class ProofMissingError(VerificationError):
    """The peer sent no hybrid-mode PQ proof within the timeout, or closed the channel first."""

    check = "pq-proof-missing"


class ProofSignatureError(VerificationError):
    """The peer's PQ proof signature does not verify over this session's channel binding (replayed
    from another session, or made by a key other than the PQC SVID's)."""

    check = "pq-proof-signature"


class MessageSignatureError(VerificationError):
    """A PQ-signed message's ML-DSA-65 signature does not verify under the signer's PQC SVID."""

    check = "message-signature"


# --- the node agent's limits (spire_pqc.agent) ------------------------------------------------


class RequestRefusedError(SpirePqcError):
    """A local caller's request was refused before it was served: too large, malformed, too slow, or
    over a per-uid limit. ``reason`` is a stable token (the agent's metric label)."""

    def __init__(self, message: str, *, reason: str) -> None:
        self.reason = reason
        super().__init__(f"{reason}: {message}")


# --- JWT-SVIDs (spire_pqc.jwtsvid) ---------------------------------------------------------------


class TokenMalformedError(MalformedCredentialError):
    """A JWT-SVID (or its PQC part) is not a well-formed, bounded compact JWS with the required claims."""

    check = "jwt-malformed"


class TokenAlgorithmError(VerificationError):
    """A token's ``alg`` is not the one its part must use: ``none``, HMAC, ML-DSA in the classical part,
    a classical algorithm in the PQC part, or a header that embeds or points at a key."""

    check = "jwt-algorithm"


class TokenKeyError(VerificationError):
    """The key named by a token's ``kid`` is not in its trust domain's JWT bundle, or (PQC part) its
    certificate does not chain to a trusted PQC root."""

    check = "jwt-key"


class TokenSignatureError(VerificationError):
    """A token signature (classical or ML-DSA-65) does not verify."""

    check = "jwt-signature"


class TokenBindingError(VerificationError):
    """The PQC part of a hybrid JWT-SVID was not made for this classical token (swapped or missing)."""

    check = "jwt-binding"


class TokenAudienceError(VerificationError):
    """The audience asked for is not in the token's ``aud``."""

    check = "jwt-audience"


class TokenExpiredError(VerificationError):
    """The token's ``exp`` has passed."""

    check = "jwt-expired"


# --- PQC bundle federation (spire_pqc.federation) --------------------------------------------------


class BundleSignatureError(VerificationError):
    """A federated PQC bundle document is unsigned, or its ML-DSA-65 signature does not verify under a
    key certified by a root the trust domain was already trusted with."""

    check = "bundle-signature"


class BundleSequenceError(VerificationError):
    """A federated PQC bundle document goes back in ``spiffe_sequence`` (a replay of an older one), or
    changes without a higher sequence number."""

    check = "bundle-sequence"


class FederationError(UnavailableError):
    """A remote PQC bundle endpoint could not be reached or answered with something unusable."""
