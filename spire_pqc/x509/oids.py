"""Object identifiers used by spire-pqc (docs/formats.md; RFC 9881, RFC 9935, RFC 9763)."""

from __future__ import annotations

from cryptography.x509 import ObjectIdentifier

#: ITU-T X.667 UUID arc of this project: UUID cc4edca0-a4ff-4f7e-90ae-11271dc415e6.
ID_SPIRE_PQC = "2.25.271571985152771553373558813120084055526"

#: The OID the SvidBinding extension is actually carried under.
#:
#: The design named ``id-spire-pqc.1`` (arc 2.25.<128-bit integer>.1), but that OID cannot travel on
#: an X509-SVID (verified against SPIRE v1.15.3 and Go 1.26):
#:   * SPIRE's composer facade parses extension OIDs with strconv.Atoi into asn1.ObjectIdentifier
#:     (spiffe/spire:pkg/server/plugin/credentialcomposer/v1.go@v1.15.3, parseOID) and fails the
#:     signing: "invalid OID: non-integer part".
#:   * Go's crypto/x509 rejects any certificate carrying it ("x509: malformed extension OID field";
#:     cryptobyte limits arcs to 31 bits), so go-spiffe peers, spire-agent and ghostunnel could not
#:     even parse such an SVID.
#: Interim value until the project has an OID arc with small arcs (an IANA Private Enterprise
#: Number): 2.25.<top 31 bits of the project UUID>.1. Every arc fits in 31 bits.
ID_SPIRE_PQC_SVID_BINDING = "2.25.1713860176.1"

#: Extended key usages of a trust-domain signer certificate (x509/signer.py), under the same interim arc:
#: the key signs the trust domain's PQC parts of JWT-SVIDs, and its federated PQC bundle document.
ID_SPIRE_PQC_KP_JWT_SVID = "2.25.1713860176.2"
ID_SPIRE_PQC_KP_BUNDLE = "2.25.1713860176.3"

ID_ML_DSA_65 = "2.16.840.1.101.3.4.3.18"
ID_ML_KEM_768 = "2.16.840.1.101.3.4.4.2"
ID_SHA256 = "2.16.840.1.101.3.4.2.1"
#: RFC 9763 id-pe-relatedCert.
ID_PE_RELATED_CERT = "1.3.6.1.5.5.7.1.36"

SVID_BINDING = ObjectIdentifier(ID_SPIRE_PQC_SVID_BINDING)
RELATED_CERT = ObjectIdentifier(ID_PE_RELATED_CERT)
KP_JWT_SVID = ObjectIdentifier(ID_SPIRE_PQC_KP_JWT_SVID)
KP_BUNDLE = ObjectIdentifier(ID_SPIRE_PQC_KP_BUNDLE)
ML_DSA_65 = ObjectIdentifier(ID_ML_DSA_65)
ML_KEM_768 = ObjectIdentifier(ID_ML_KEM_768)
