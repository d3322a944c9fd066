"""How an attached channel hands plaintext over: batched records, then EOF; handed to another protocol."""

from __future__ import annotations

import asyncio
import os

import pytest

from spire_pqc.channel.api import SecureStreamWriter, open_connection, start_server
from spire_pqc.channel.authorize import authorize_id
from spire_pqc.channel.sources import Mode
from spire_pqc.svid import HybridSvid
from tests.unit.channel._creds import World

RECORD = 16 * 1024  # TLS 1.3 plaintext record limit


class _Recorder(asyncio.Protocol):
    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.eof_after = -1
        self.done = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        assert self.eof_after < 0, "data after EOF"
        self.chunks.append(data)

    def eof_received(self) -> bool:
        self.eof_after = len(self.chunks)
        self.done.set_result(None)
        return True


@pytest.mark.asyncio
async def test_bulk_plaintext_arrives_in_batches_of_records_in_order_then_eof(
    world: World, server_svid: HybridSvid, client_svid: HybridSvid
) -> None:
    payload = os.urandom(4 * 1024 * 1024)
    recorder: asyncio.Future[_Recorder] = asyncio.get_running_loop().create_future()

    async def handler(reader: asyncio.StreamReader, writer: SecureStreamWriter) -> None:
        protocol = _Recorder()
        writer.transport.set_protocol(protocol)  # as a tunnel's splice does
        recorder.set_result(protocol)
        await protocol.done
        writer.close()

    async with await start_server(
        handler, "127.0.0.1", 0, source=world.source(server_svid),
        authorizer=authorize_id(client_svid.spiffe_id), mode=Mode.SPIFFE,
    ) as server:  # fmt: skip
        _, writer = await open_connection(
            "127.0.0.1", server.port, source=world.source(client_svid),
            authorizer=authorize_id(server_svid.spiffe_id), mode=Mode.SPIFFE,
        )  # fmt: skip
        protocol = await asyncio.wait_for(recorder, 30)
        writer.write(payload)
        await writer.drain()
        writer.write_eof()
        await asyncio.wait_for(protocol.done, 30)
        assert b"".join(protocol.chunks) == payload
        assert protocol.eof_after == len(protocol.chunks)
        sizes = [len(c) for c in protocol.chunks]
        assert max(sizes) > RECORD, "decrypted records are handed over together, not one by one"
        assert max(sizes) < 256 * 1024 + RECORD
        writer.close()
        await writer.wait_closed()
