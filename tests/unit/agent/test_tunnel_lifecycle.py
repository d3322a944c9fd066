"""Tunnel start without credentials (refuse, count, log once, then carry) and drain on shutdown."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import logging
import shutil
import time

import pytest

from spire_pqc.agent.config import DevSourceConfig
from spire_pqc.agent.server import Agent
from spire_pqc.agent.sources.dev import DevIdentitySource
from spire_pqc.agent.tunnel import InboundTunnel, OutboundTunnel
from tests.unit.agent._tunnels import (
    hash_handler,
    http_handler,
    local_server,
    send_and_hash,
    tunnel_agent,
    tunnel_config,
    wait_ready,
)
from tests.unit.agent.test_hybrid import FlakyCA

MB = 1 << 20


async def _refused(port: int) -> bool:
    """True when a connection to ``port`` is closed or reset without a byte of answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET / HTTP/1.0\r\n\r\n")
        return await asyncio.wait_for(reader.read(), 10) == b""
    except ConnectionResetError:
        return True
    finally:
        writer.close()
        await asyncio.gather(writer.wait_closed(), return_exceptions=True)


@pytest.mark.asyncio
async def test_tunnels_start_without_credentials_refuse_then_carry(caplog: pytest.LogCaptureFixture) -> None:
    async with local_server(http_handler) as http_port:
        config = dataclasses.replace(
            tunnel_config(http_port),
            retry_initial=dt.timedelta(seconds=0.05),
            retry_max=dt.timedelta(seconds=0.1),
        )
        assert isinstance(config.source, DevSourceConfig)
        source = DevIdentitySource(config.source)
        ca = FlakyCA(source)  # the PQC CA is unreachable at start
        agent = Agent(config, source=source, ca_client=ca)
        caplog.set_level(logging.INFO, logger="spire_pqc.agent.tunnel")
        try:
            started = time.monotonic()
            await asyncio.wait_for(agent.start(), 30)
            out, inb = agent.tunnels
            assert isinstance(out, OutboundTunnel) and isinstance(inb, InboundTunnel)
            assert time.monotonic() - started < 5  # it used to wait 10 s per tunnel, then exit
            assert agent.live and not out.ready and not inb.ready
            # Both listeners are up and refuse (a reset, no answer), counted, logged once per tunnel.
            for _ in range(10):
                assert await _refused(out.port)
                assert await _refused(inb.port)
            assert out.stats.unavailable == 10 and inb.stats.unavailable == 10
            assert out.stats.accepted == inb.stats.accepted == 0
            ready_while_refusing = agent.ready
            metrics = agent.render_metrics()
            assert (
                'spire_pqc_agent_tunnel_connections_total{kind="inbound",result="unavailable",tunnel="in"} 10.0'
                in (metrics)
            )
            warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
            assert sum("refusing connections, no credentials yet" in w for w in warnings) == 2, warnings
            # The CA comes back: the same listeners carry traffic, and the outage's end is logged.
            ca.up.set()
            await wait_ready(out, inb)
            reader, writer = await asyncio.open_connection("127.0.0.1", out.port)
            writer.write(b"GET /back HTTP/1.0\r\n\r\n")
            assert (await asyncio.wait_for(reader.read(), 10)).endswith(b"GET /back HTTP/1.0")
            writer.close()
            assert (ready_while_refusing, agent.ready) == (False, True)
            infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
            assert any("tunnel out: refusing connections" in m and "recovered after 10" in m for m in infos)
        finally:
            await agent.close()
            shutil.rmtree(config.socket_path.parent, ignore_errors=True)


@pytest.mark.asyncio
async def test_shutdown_lets_an_open_transfer_finish_and_refuses_new_connections() -> None:
    async with (
        local_server(hash_handler) as port,
        tunnel_agent(tunnel_config(port, grace="30s")) as (agent, out, inb),
    ):
        # About 2 s of paced transfer; the agent is told to stop a quarter of the way in.
        transfer = asyncio.create_task(send_and_hash(out.port, 8 * MB, chunk=256 * 1024, pause=0.06))
        deadline = time.monotonic() + 20
        while out.stats.open == 0 or inb.stats.open == 0:
            assert time.monotonic() < deadline, "the transfer did not start"
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)
        assert not transfer.done()
        started = time.monotonic()
        closing = asyncio.create_task(agent.close())
        await asyncio.sleep(0.1)
        with pytest.raises(ConnectionRefusedError):  # stopped accepting at once
            await asyncio.open_connection("127.0.0.1", out.port)
        sent, received, size = await asyncio.wait_for(transfer, 30)
        await asyncio.wait_for(closing, 30)
        assert size == 8 * MB and received == sent  # intact: the open connection was drained, not cut
        assert time.monotonic() - started < 15  # it ended when the transfer did, not at the grace
        assert out.stats.cut == inb.stats.cut == 0


_received = [0]  # bytes the target below has read (the tunnel's own counters update at the end)


async def _tolerant_hash_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Like hash_handler, for a connection that may be reset: answers only after a clean end of stream."""
    digest = hashlib.sha256()
    try:
        while data := await reader.read(1 << 18):
            _received[0] += len(data)
            digest.update(data)
        writer.write(digest.hexdigest().encode())
        await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@pytest.mark.asyncio
async def test_connections_still_open_after_the_grace_are_cut_with_a_reset() -> None:
    async with (
        local_server(_tolerant_hash_handler) as port,
        tunnel_agent(tunnel_config(port, grace="0.5s")) as (agent, out, inb),
    ):
        _received[0] = 0
        reader, writer = await asyncio.open_connection("127.0.0.1", out.port)
        block = b"x" * (256 * 1024)
        for _ in range(4):
            writer.write(block)
            await writer.drain()
        deadline = time.monotonic() + 20
        while _received[0] < MB:
            assert time.monotonic() < deadline, "no data through the tunnel"
            await asyncio.sleep(0.01)
        started = time.monotonic()
        await agent.close()
        assert time.monotonic() - started < 10
        # The outbound side was cut; the inbound side was cut too, or saw the reset first.
        assert out.stats.cut == 1 and inb.stats.cut + inb.stats.failed == 1
        # The client sees a reset (or at worst end of stream with no answer), never a clean answer.
        try:
            answer = await asyncio.wait_for(reader.read(), 10)
        except ConnectionResetError:
            answer = b""
        assert answer == b""
        writer.close()
