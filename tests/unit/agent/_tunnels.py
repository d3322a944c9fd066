"""Helpers for tunnel tests: an agent hosting a tunnel pair, small local servers, a plaintext client.

The tunnel pair (outbound "client side" → inbound "server side") lives in one agent, with two service
identities, which still sends every byte through a real hybrid channel over loopback TCP (pairs
across two agents sharing a dev CA directory: tests/integration/test_dev_agents_shared_ca.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from spire_pqc.agent.config import AgentConfig, parse
from spire_pqc.agent.server import Agent
from spire_pqc.agent.tunnel import InboundTunnel, OutboundTunnel
from tests.unit.agent._support import TRUST_DOMAIN, running_agent, short_dir

CLIENT_ID = f"spiffe://{TRUST_DOMAIN}/svc/client"  # presented by the outbound tunnel
SERVER_ID = f"spiffe://{TRUST_DOMAIN}/svc/server"  # presented by the inbound tunnel
NOBODY = "unix:uid:4294967294"  # selector no test process has: the entries serve tunnels only


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tunnel_config(
    target_port: int,
    *,
    ttl: str = "1h",
    peer_ids: list[str] | None = None,
    allowed: dict[str, Any] | None = None,
    outbound_mode: str = "hybrid",
    inbound_mode: str = "hybrid",
    grace: str = "1s",
) -> AgentConfig:
    inbound_port = free_port()
    entries = [{"spiffe_id": sid, "selectors": [NOBODY]} for sid in (CLIENT_ID, SERVER_ID)]
    return parse(
        {
            "agent": {"socket_path": str(short_dir() / "agent.sock"), "shutdown_grace": grace},
            "source": {
                "kind": "dev",
                "dev": {"trust_domain": TRUST_DOMAIN, "svid_ttl": ttl, "entries": entries},
            },
            "tunnel": {
                "outbound": [
                    {
                        "name": "out",
                        "listen": "127.0.0.1:0",
                        "remote": f"127.0.0.1:{inbound_port}",
                        "peer_ids": peer_ids or [SERVER_ID],
                        "spiffe_id": CLIENT_ID,
                        "mode": outbound_mode,
                        "allowed_uids": [os.getuid()],
                    }
                ],
                "inbound": [
                    {
                        "name": "in",
                        "listen": f"127.0.0.1:{inbound_port}",
                        "target": f"127.0.0.1:{target_port}",
                        "spiffe_id": SERVER_ID,
                        "mode": inbound_mode,
                        **(allowed or {"allowed_ids": [CLIENT_ID]}),
                    }
                ],
            },
        }
    )


@asynccontextmanager
async def tunnel_agent(config: AgentConfig) -> AsyncIterator[tuple[Agent, OutboundTunnel, InboundTunnel]]:
    async with running_agent(config) as agent:
        out, inb = agent.tunnels
        assert isinstance(out, OutboundTunnel) and isinstance(inb, InboundTunnel)
        await wait_ready(out, inb)
        yield agent, out, inb


async def wait_ready(*tunnels: OutboundTunnel | InboundTunnel, timeout: float = 30.0) -> None:
    """Tunnels start without waiting for credentials; tests that carry data wait for them."""
    deadline = time.monotonic() + timeout
    while not all(t.ready for t in tunnels):
        assert time.monotonic() < deadline, "tunnel identities got no credentials"
        await asyncio.sleep(0.01)


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def local_server(handler: Handler) -> AsyncIterator[int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


async def http_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A minimal HTTP/1.0 server: echoes the request line in the body, then closes."""
    head = await reader.readuntil(b"\r\n\r\n")
    line = head.split(b"\r\n", 1)[0]
    body = b"hello through the tunnel: " + line
    writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    await writer.drain()
    writer.close()
    await writer.wait_closed()


async def hash_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Hashes everything until EOF (the client's half-close), then answers the hex digest and its size."""
    digest, size = hashlib.sha256(), 0
    while data := await reader.read(1 << 18):
        digest.update(data)
        size += len(data)
    writer.write(f"{digest.hexdigest()} {size}".encode())
    await writer.drain()
    writer.close()
    await writer.wait_closed()


async def send_and_hash(
    port: int, total: int, *, chunk: int = 1 << 20, pause: float = 0.0
) -> tuple[str, str, int]:
    """Stream ``total`` bytes (half-close after), return (sent digest, received reply digest, size)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    digest = hashlib.sha256()
    block = hashlib.shake_256(b"spire-pqc tunnel").digest(chunk)
    sent = 0
    counter = 0
    while sent < total:
        # Vary each chunk (a counter prefix) so a reordered or repeated chunk changes the digest.
        data = counter.to_bytes(8, "big") + block[8 : min(chunk, total - sent)]
        writer.write(data)
        digest.update(data)
        sent += len(data)
        counter += 1
        await writer.drain()
        if pause:
            await asyncio.sleep(pause)
    writer.write_eof()
    reply = (await reader.read()).decode()
    writer.close()
    await writer.wait_closed()
    their_digest, _, size = reply.partition(" ")
    return digest.hexdigest(), their_digest, int(size or -1)
