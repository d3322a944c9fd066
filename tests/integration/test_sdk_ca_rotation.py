"""A long-running SDK server keeps accepting valid peers across SPIRE CA rotations.

Real spire-server (with the spire-pqc composer and CA endpoint), spire-agent and the spire-pqc
agent; spire-server's ``ca_ttl`` is one minute, so SPIRE prepares a new self-signed CA after 30 s
and activates it after 50 s (SPIRE v1.15.3: preparation at 1/2, activation at 5/6 of the CA's
lifetime, checked every 10 s). The workload's X509-SVID lives 10 s (the longest SPIRE guarantees
under that CA, ca_ttl / 6), so new SVIDs soon chain to authorities the server's start-up bundle
never contained. One server, started once from the SDK's live source, must accept a fresh client
connection all along: the bundles that verify a peer are read from the source at every handshake.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest
from cryptography import x509

from spire_pqc.errors import UnavailableError
from spire_pqc.svid import HybridSvid
from spire_pqc.workload import (
    HybridX509Source,
    SecureStreamWriter,
    authorize_id,
    open_connection,
    start_server,
)
from tests.integration.test_end_to_end_spire import WORKLOAD, spire_stack

pytestmark = [pytest.mark.spire, pytest.mark.timeout(600)]

ROTATIONS = 2  # SPIRE CAs, after the one in force when the server starts, that must sign accepted peers


def _workload(svids: Sequence[HybridSvid]) -> HybridSvid:
    for svid in svids:
        if str(svid.spiffe_id) == WORKLOAD:
            return svid
    raise UnavailableError(f"no hybrid SVID for {WORKLOAD} at the moment (PQC issuance under way)")


def _issuer_key_id(svid: HybridSvid) -> bytes:
    return (
        svid.classical_chain[-1]
        .extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
        .value.key_identifier
        or b""
    )


async def _echo(reader: asyncio.StreamReader, writer: SecureStreamWriter) -> None:
    writer.write((await reader.readexactly(4)).upper())
    await writer.drain()
    writer.close()


@pytest.mark.asyncio
async def test_long_running_sdk_server_accepts_peers_across_spire_ca_rotations() -> None:
    async with spire_stack(ttl_seconds=10, ca_ttl="60s") as stack:
        address = f"unix://{stack.config.socket_path}"
        async with HybridX509Source(address=address, picker=_workload) as source:
            peer = authorize_id(WORKLOAD)
            server = await start_server(_echo, "127.0.0.1", 0, source=source, authorizer=peer)
            async with server:
                first_ca = _issuer_key_id(source.svid)
                cas = [first_ca]
                deadline = time.monotonic() + 300
                while len(cas) <= ROTATIONS:
                    assert time.monotonic() < deadline, f"SPIRE rotated its CA {len(cas) - 1} times in 300 s"
                    try:
                        ca = _issuer_key_id(source.svid)  # the CA that signed the SVID both ends present
                    except UnavailableError:
                        await asyncio.sleep(0.5)
                        continue
                    reader, writer = await open_connection(
                        "127.0.0.1", server.port, source=source, authorizer=peer
                    )
                    writer.write(b"ping")
                    assert await reader.readexactly(4) == b"PING"
                    writer.close()
                    if ca not in cas:
                        cas.append(ca)
                    await asyncio.sleep(2)
                assert server.accepted >= ROTATIONS
                refused = [f for f in server.failures if not isinstance(f, UnavailableError)]
                assert not refused, refused
