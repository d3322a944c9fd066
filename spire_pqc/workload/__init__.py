"""The spire-pqc workload SDK: everything an application needs, from one module.

Hello world, a client (the server is ``start_server(handler, host, port, source=…, authorizer=…)``)::

    import asyncio
    from spire_pqc.workload import HybridX509Source, authorize_id, open_connection

    async def main() -> None:
        async with HybridX509Source() as source:  # the agent at SPIFFE_ENDPOINT_SOCKET
            reader, writer = await open_connection(
                "127.0.0.1", 8443, source=source, authorizer=authorize_id("spiffe://example.org/server")
            )
            writer.write(b"hello")
            print(await reader.read(100))

    asyncio.run(main())

The source keeps the hybrid SVID and the classical and PQC bundles current; every handshake reads
them again (docs/workload-api.md). Modes, ALPN and errors: docs/architecture.md.
"""

from spire_pqc.bundle import BundleSet, X509Bundle
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
from spire_pqc.source import HybridSource, StaticHybridSource
from spire_pqc.spiffeid import SpiffeId, TrustDomain
from spire_pqc.svid import HybridSvid
from spire_pqc.workload.client import WorkloadClient
from spire_pqc.workload.source import HybridX509Source

__all__ = [
    "Authorizer",
    "BundleSet",
    "ConnectionInfo",
    "HybridSource",
    "HybridSvid",
    "HybridX509Source",
    "Mode",
    "SecureServer",
    "SecureStreamWriter",
    "SpiffeId",
    "StaticHybridSource",
    "TrustDomain",
    "WorkloadClient",
    "X509Bundle",
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
