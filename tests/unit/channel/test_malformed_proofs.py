"""A hybrid-mode peer whose PQ proof carries a certificate cryptography cannot fully parse.

Issue 9: a PQC SVID whose commonName is a BIT STRING made the proof verification raise TypeError,
seen as "Task exception was never retrieved" on the channel. Each malformed proof must now end the
connection with MalformedCredentialError on the side that receives it (recorded in
``server.failures`` on a server), with no application byte delivered and no stray task exception.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import struct
from collections.abc import Callable, Iterator

import pytest

from spire_pqc._internal import der as asn1
from spire_pqc.channel import proof as pq
from spire_pqc.channel.api import SecureStreamWriter, open_connection, start_server
from spire_pqc.channel.authorize import authorize_id
from spire_pqc.channel.context import context_for
from spire_pqc.channel.sources import Mode
from spire_pqc.channel.tlsproto import TlsProtocol
from spire_pqc.errors import MalformedCredentialError
from spire_pqc.svid import HybridSvid, der
from tests.unit.channel._creds import World
from tests.unit.channel._peers import RawServer, raw_connect
from tests.unit.credentials.certedit import (
    SPKI,
    SUBJECT,
    VERSION,
    mldsa_signer,
    name_with_bit_string_cn,
    truncated_spki,
    with_field,
)

PROOF_TIMEOUT = 5.0

MALFORMED: dict[str, Callable[[HybridSvid, World], bytes]] = {
    "cn-bit-string": lambda svid, w: with_field(
        svid.pqc_chain[0], SUBJECT, name_with_bit_string_cn(), mldsa_signer(w.main.hierarchy.intermediate.key)
    ),
    "version-4": lambda svid, w: with_field(
        svid.pqc_chain[0],
        VERSION,
        asn1.tlv(0xA0, asn1.integer(3)),
        mldsa_signer(w.main.hierarchy.intermediate.key),
    ),
    "mldsa-key-1951-bytes": lambda svid, w: with_field(
        svid.pqc_chain[0],
        SPKI,
        truncated_spki(svid.pqc_chain[0]),
        mldsa_signer(w.main.hierarchy.intermediate.key),
    ),
}


def malformed_proof(svid: HybridSvid, world: World, kind: str, tls: TlsProtocol, role: str) -> bytes:
    """A proof record whose leaf is malformed, signed correctly for this session otherwise."""
    chain = [MALFORMED[kind](svid, world), *(der(c) for c in svid.pqc_chain[1:])]
    signature = svid.pqc_key.sign(
        pq.signed_message(pq.exporter(tls.tls), signer_role=role), context=pq.CONTEXT
    )
    body = bytes([len(chain)]) + b"".join(struct.pack(">I", len(c)) + c for c in chain)
    body += struct.pack(">H", len(signature)) + signature
    return pq.HEADER.pack(pq.RECORD_PROOF, pq.VERSION, len(body)) + body


class StrayTaskErrors(logging.Handler):
    """Collects asyncio's "Task exception was never retrieved" reports."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "never retrieved" in record.getMessage():
            self.messages.append(record.getMessage())


@pytest.fixture
def stray() -> Iterator[StrayTaskErrors]:
    handler = StrayTaskErrors()
    logger = logging.getLogger("asyncio")
    logger.addHandler(handler)
    yield handler
    gc.collect()  # unreferenced failed tasks report when they are collected
    logger.removeHandler(handler)
    assert handler.messages == []


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", sorted(MALFORMED))
async def test_client_refuses_a_server_proof_with_a_malformed_certificate(
    world: World, server_svid: HybridSvid, client_svid: HybridSvid, kind: str, stray: StrayTaskErrors
) -> None:
    async def behave(proto: TlsProtocol) -> None:
        await proto.handshake()
        proto.write(malformed_proof(server_svid, world, kind, proto, "server"))
        await asyncio.sleep(10)

    async with RawServer(context_for(Mode.HYBRID, server_svid), behave) as rogue:
        with pytest.raises(MalformedCredentialError, match="certificate 0") as refused:
            await open_connection(
                "127.0.0.1", rogue.port, source=world.source(client_svid),
                authorizer=authorize_id(server_svid.spiffe_id), mode=Mode.HYBRID, proof_timeout=PROOF_TIMEOUT,
            )  # fmt: skip
    assert refused.value.check == "pq-proof-format"


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", sorted(MALFORMED))
async def test_server_refuses_a_client_proof_with_a_malformed_certificate(
    world: World, server_svid: HybridSvid, client_svid: HybridSvid, kind: str, stray: StrayTaskErrors
) -> None:
    delivered: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: SecureStreamWriter) -> None:
        delivered.append(await reader.read(100))
        writer.close()

    server = await start_server(
        handler, "127.0.0.1", 0, source=world.source(server_svid),
        authorizer=authorize_id(client_svid.spiffe_id), mode=Mode.HYBRID, proof_timeout=PROOF_TIMEOUT,
    )  # fmt: skip
    async with server:
        rogue = await raw_connect(context_for(Mode.HYBRID, client_svid), server.port)
        await rogue.handshake()
        rogue.write(malformed_proof(client_svid, world, kind, rogue, "client") + b"application data")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while not server.failures and loop.time() < deadline:
            await asyncio.sleep(0.01)
        rogue.close()
    assert [type(e) for e in server.failures] == [MalformedCredentialError]
    assert "certificate 0" in str(server.failures[0])
    assert delivered == []
