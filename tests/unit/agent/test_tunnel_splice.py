"""The tunnel's splice on real loopback sockets: buffered bytes, half-close, back-pressure, resets.

``client ⇄ [local | splice | remote] ⇄ target``: the middle pair is what a tunnel holds.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from spire_pqc.agent.tunnel import TunnelStats, splice

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _pair() -> tuple[Stream, Stream, asyncio.Server]:
    """A connected (client side, accepted side) pair of streams on loopback."""
    accepted: asyncio.Future[Stream] = asyncio.get_running_loop().create_future()

    async def on_accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set_result((reader, writer))

    server = await asyncio.start_server(on_accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = await asyncio.open_connection("127.0.0.1", port)
    return client, await accepted, server


@asynccontextmanager
async def _chain() -> AsyncIterator[tuple[Stream, Stream, Stream, Stream]]:
    client, local, s1 = await _pair()
    remote, target, s2 = await _pair()
    try:
        yield client, local, remote, target
    finally:
        for writer in (client[1], target[1]):
            writer.transport.abort()
        s1.close()
        s2.close()


@pytest.mark.asyncio
async def test_bytes_and_eof_read_before_the_splice_are_carried_then_both_sides_close() -> None:
    async with _chain() as (client, local, remote, target):
        client[1].write(b"early bytes")
        client[1].write_eof()
        await asyncio.sleep(0.05)  # the local stream has read them (and the EOF) already
        stats = TunnelStats()
        task = asyncio.create_task(splice(local, remote, stats))
        assert await target[0].read() == b"early bytes"  # … carried, and the half-close passed on
        target[1].write(b"answer after the client's EOF")
        target[1].write_eof()
        assert await client[0].read() == b"answer after the client's EOF"
        await asyncio.wait_for(task, 5)
        assert (stats.bytes_out, stats.bytes_in, stats.failed) == (11, 29, 0)
        assert local[1].transport.is_closing() and remote[1].transport.is_closing()


@pytest.mark.asyncio
async def test_a_slow_receiver_pauses_the_sender_and_every_byte_arrives() -> None:
    async with _chain() as (client, local, remote, target):
        stats = TunnelStats()
        task = asyncio.create_task(splice(local, remote, stats))
        payload = os.urandom(24 << 20)
        client[1].write(payload)
        client[1].write_eof()
        sender = asyncio.create_task(client[1].drain())
        await asyncio.sleep(0.3)  # the target reads nothing meanwhile: the splice stops reading the client
        assert isinstance(local[1].transport, asyncio.Transport) and not local[1].transport.is_reading()
        assert remote[1].transport.get_write_buffer_size() < 4 << 20  # bounded, not the 24 MiB
        digest = hashlib.sha256()
        while chunk := await target[0].read(1 << 20):
            digest.update(chunk)
        assert digest.digest() == hashlib.sha256(payload).digest()
        await sender
        target[1].write_eof()
        await asyncio.wait_for(task, 5)
        assert stats.bytes_out == len(payload) and stats.failed == 0


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST (SO_LINGER 0), as a crashed or killed peer's kernel may."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _ended(reader: asyncio.StreamReader) -> bool:
    """Whether the stream ends (EOF or reset) within 5 s."""
    try:
        return await asyncio.wait_for(reader.read(), 5) == b""
    except ConnectionResetError:
        return True


@pytest.mark.asyncio
async def test_a_reset_on_one_side_aborts_the_other_and_counts_a_failure() -> None:
    async with _chain() as (client, local, remote, target):
        stats = TunnelStats()
        task = asyncio.create_task(splice(local, remote, stats))
        client[1].write(b"partial request")
        assert await target[0].readexactly(15) == b"partial request"
        _reset(client[1])  # the client vanished mid-request
        await asyncio.wait_for(task, 5)
        assert stats.failed == 1 and stats.bytes_out == 15
        assert await _ended(target[0])


@pytest.mark.asyncio
async def test_cancelling_the_splice_cuts_both_sides() -> None:
    async with _chain() as (client, local, remote, target):
        stats = TunnelStats()
        task = asyncio.create_task(splice(local, remote, stats))
        client[1].write(b"x")
        assert await target[0].readexactly(1) == b"x"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert local[1].transport.is_closing() and remote[1].transport.is_closing()
        assert await _ended(client[0]) and await _ended(target[0])
