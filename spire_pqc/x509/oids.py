"""Object identifiers used by spire-pqc (DESIGN.md §3, RFC 9881, RFC 9935, RFC 9763)."""

from __future__ import annotations

from cryptography.x509 import ObjectIdentifier

#: ITU-T X.667 UUID arc of this project.
ID_SPIRE_PQC = "2.25.271571985152771553373558813120084055526"
#: Non-critical extension carrying the ML-DSA-65 SvidBinding on classical X509-SVIDs.
ID_SPIRE_PQC_SVID_BINDING = ID_SPIRE_PQC + ".1"

ID_ML_DSA_65 = "2.16.840.1.101.3.4.3.18"
ID_ML_KEM_768 = "2.16.840.1.101.3.4.4.2"
ID_SHA256 = "2.16.840.1.101.3.4.2.1"
#: RFC 9763 id-pe-relatedCert.
ID_PE_RELATED_CERT = "1.3.6.1.5.5.7.1.36"

SVID_BINDING = ObjectIdentifier(ID_SPIRE_PQC_SVID_BINDING)
RELATED_CERT = ObjectIdentifier(ID_PE_RELATED_CERT)
ML_DSA_65 = ObjectIdentifier(ID_ML_DSA_65)
ML_KEM_768 = ObjectIdentifier(ID_ML_KEM_768)
