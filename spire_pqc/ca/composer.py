"""What the CredentialComposer adds to a workload X509-SVID, in domain terms (no gRPC here).

SPIRE calls the composer for every workload SVID it signs, including its CA health check
(``spiffe://<td>/for/health/check/only``). The composer signs a binding of (SPIFFE ID, SPKI) with
the intermediate PQC CA key and returns it as a non-critical extension; SPIRE copies it into the
certificate verbatim (``spiffe/spire:pkg/server/plugin/credentialcomposer/v1.go@v1.15.3``).
"""

from __future__ import annotations

from dataclasses import dataclass

from spire_pqc.crypto.mldsa import MLDSA65PrivateKey
from spire_pqc.x509.binding import sign_binding
from spire_pqc.x509.oids import ID_SPIRE_PQC_SVID_BINDING

HEALTH_CHECK_PATH = "/for/health/check/only"


@dataclass(frozen=True)
class Extension:
    oid: str
    value: bytes
    critical: bool = False


def binding_extension(key: MLDSA65PrivateKey, spiffe_id: str, subject_public_key_info: bytes) -> Extension:
    """The SvidBinding extension for one SVID (about 3.4 KB; one ML-DSA-65 signature, ~2 ms)."""
    return Extension(
        ID_SPIRE_PQC_SVID_BINDING, sign_binding(key, spiffe_id, subject_public_key_info).encode()
    )


def is_health_check(spiffe_id: str) -> bool:
    return spiffe_id.endswith(HEALTH_CHECK_PATH) and spiffe_id.count("/") == 6
