"""Post-quantum channels between SPIFFE workloads (docs/architecture.md, "Channel modes").

TLS 1.3 with the X25519MLKEM768 key exchange only, on asyncio over pyOpenSSL, in three modes:
``hybrid`` (default: classical SVIDs in TLS plus a session-bound ML-DSA-65 proof), ``spiffe``
(standard SPIFFE mTLS) and ``pq-tls`` (ML-DSA-65 PQC SVIDs as TLS certificates). Every entry point
that accepts a peer requires an authorizer. Also PQ-signed and PQ-sealed messages.
"""

from spire_pqc.channel.api import SecureServer, SecureStreamWriter, open_connection, start_server
from spire_pqc.channel.authorize import (
    Authorizer,
    authorize_id,
    authorize_matcher,
    authorize_member_of,
    authorize_one_of,
    unsafe_authorize_any,
)
from spire_pqc.channel.messages import open_sealed, seal, sign_message, verify_message
from spire_pqc.channel.session import ConnectionInfo
from spire_pqc.channel.sources import Mode

__all__ = [
    "Authorizer",
    "ConnectionInfo",
    "Mode",
    "SecureServer",
    "SecureStreamWriter",
    "authorize_id",
    "authorize_matcher",
    "authorize_member_of",
    "authorize_one_of",
    "open_connection",
    "open_sealed",
    "seal",
    "sign_message",
    "start_server",
    "unsafe_authorize_any",
    "verify_message",
]
