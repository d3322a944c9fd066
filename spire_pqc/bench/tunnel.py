"""`spire-pqc bench tunnel`: an agent tunnel pair against direct TCP, in one run.

One dev agent hosts an outbound tunnel (loopback plaintext → hybrid channel) and the inbound tunnel
it connects to (hybrid channel → local target), with two service identities, so every byte crosses
a real X25519MLKEM768 channel with PQ proofs on loopback. Measured against the same local target
reached directly:

* throughput: MB/s of a bulk transfer to a sink that discards (after a warm-up);
* connect: a new connection until the first echoed byte (a tunnel connection pays the hybrid
  handshake and both PQ proofs);
* round trip: one small request/response on an already open connection (the added per-message
  latency of the two TLS hops and the agent's copying).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from spire_pqc.agent.config import parse
from spire_pqc.agent.server import Agent
from spire_pqc.agent.tunnel import OutboundTunnel

TRUST_DOMAIN = "bench.example"
CLIENT_ID = f"spiffe://{TRUST_DOMAIN}/svc/client"
SERVER_ID = f"spiffe://{TRUST_DOMAIN}/svc/server"
NOBODY = "unix:uid:4294967294"  # no caller matches: the entries serve the tunnels only


@dataclass(frozen=True)
class TunnelReport:
    megabytes: int
    direct_mb_s: float
    tunnel_mb_s: float
    direct_connect_ms: float
    tunnel_connect_ms: float
    direct_rtt_us: float
    tunnel_rtt_us: float


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Echo small messages; discard bulk data after a b"BULK" marker, then answer b"done"."""
    try:
        while data := await reader.read(1 << 18):
            if data.startswith(b"BULK"):
                while await reader.read(1 << 18):
                    pass
                writer.write(b"done")
                await writer.drain()
                break
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


async def _throughput(port: int, total: int) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    block = b"BULK" + bytes((1 << 20) - 4)
    started = time.perf_counter()
    sent = 0
    while sent < total:
        writer.write(block)
        sent += len(block)
        await writer.drain()
    writer.write_eof()
    assert await reader.read() == b"done"
    elapsed = time.perf_counter() - started
    writer.close()
    return total / elapsed / 1e6


async def _connect_ms(port: int) -> float:
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"x")
    await writer.drain()
    await reader.readexactly(1)
    elapsed = (time.perf_counter() - started) * 1e3
    writer.close()
    return elapsed


async def _rtt_us(port: int, rounds: int) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        writer.write(b"ping")
        await writer.drain()
        await reader.readexactly(4)
        samples.append((time.perf_counter() - started) * 1e6)
    writer.close()
    return statistics.median(samples)


async def _run(megabytes: int, connects: int) -> TunnelReport:
    target = await asyncio.start_server(_sink, "127.0.0.1", 0)
    target_port = int(target.sockets[0].getsockname()[1])
    inbound_port = _free_port()
    directory = Path(tempfile.mkdtemp(prefix="spa-bench-tunnel-", dir="/tmp"))
    entries = [{"spiffe_id": sid, "selectors": [NOBODY]} for sid in (CLIENT_ID, SERVER_ID)]
    config = parse(
        {
            "agent": {"socket_path": str(directory / "agent.sock"), "shutdown_grace": "1s"},
            "source": {"kind": "dev", "dev": {"trust_domain": TRUST_DOMAIN, "entries": entries}},
            "tunnel": {
                "outbound": [
                    {"name": "out", "listen": "127.0.0.1:0", "remote": f"127.0.0.1:{inbound_port}",
                     "peer_ids": [SERVER_ID], "spiffe_id": CLIENT_ID, "allowed_uids": [os.getuid()]},
                ],
                "inbound": [
                    {"name": "in", "listen": f"127.0.0.1:{inbound_port}", "target": f"127.0.0.1:{target_port}",
                     "spiffe_id": SERVER_ID, "allowed_ids": [CLIENT_ID]},
                ],
            },
        }
    )  # fmt: skip
    total = megabytes << 20
    try:
        async with Agent(config) as agent:
            outbound = next(t for t in agent.tunnels if isinstance(t, OutboundTunnel))
            tunnel_port = outbound.port
            await _throughput(tunnel_port, 8 << 20)  # warm-up: credentials, thread pool, code paths
            await _throughput(target_port, 8 << 20)
            direct_mb_s = await _throughput(target_port, total)
            tunnel_mb_s = await _throughput(tunnel_port, total)
            direct_connect = statistics.median([await _connect_ms(target_port) for _ in range(connects)])
            tunnel_connect = statistics.median([await _connect_ms(tunnel_port) for _ in range(connects)])
            direct_rtt = await _rtt_us(target_port, 500)
            tunnel_rtt = await _rtt_us(tunnel_port, 500)
    finally:
        target.close()
        await target.wait_closed()
        shutil.rmtree(directory, ignore_errors=True)
    return TunnelReport(
        megabytes, direct_mb_s, tunnel_mb_s, direct_connect, tunnel_connect, direct_rtt, tunnel_rtt
    )


def run(*, megabytes: int = 100, connects: int = 30) -> TunnelReport:
    return asyncio.run(_run(megabytes, connects))


def format_report(r: TunnelReport) -> str:
    return "\n".join(
        [
            f"tunnel pair (outbound -> hybrid channel -> inbound -> target) vs direct TCP, {r.megabytes} MB:",
            f"  throughput:           direct {r.direct_mb_s:8.1f} MB/s   tunnel {r.tunnel_mb_s:8.1f} MB/s "
            f"(x{r.tunnel_mb_s / r.direct_mb_s:.2f})",
            f"  new connection p50:   direct {r.direct_connect_ms:8.2f} ms     tunnel {r.tunnel_connect_ms:8.2f} ms "
            f"(+{r.tunnel_connect_ms - r.direct_connect_ms:.2f} ms)",
            f"  round trip p50:       direct {r.direct_rtt_us:8.0f} us     tunnel {r.tunnel_rtt_us:8.0f} us "
            f"(+{r.tunnel_rtt_us - r.direct_rtt_us:.0f} us)",
        ]
    )
