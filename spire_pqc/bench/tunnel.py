"""`spire-pqc bench tunnel`: a tunnel pair across two agent processes against direct TCP, in one run.

Two dev agents run as their own processes, as on two nodes (they share one dev CA directory, so they
trust each other): agent A hosts outbound tunnels (loopback plaintext → channel), agent B the inbound
tunnels they reach (channel → local target), one pair per mode (``hybrid`` and ``spiffe``), with two
service identities, so every byte crosses a real X25519MLKEM768 channel between processes. Measured
against the same local target reached directly:

* throughput: MB/s of one bulk transfer to a sink that discards (after a warm-up), and the CPU
  seconds both agent processes spent per GB carried (from ``/proc/<pid>/stat``);
* connect: a new connection until the first echoed byte (a tunnel connection pays the channel
  handshake, and in ``hybrid`` mode both PQ proofs);
* round trip: one small request/response on an already open connection (the added per-message
  latency of the two TLS hops and the agents' copying).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from spire_pqc.bench.agentproc import AgentProcess
from spire_pqc.bench.spirelab import free_port

TRUST_DOMAIN = "bench.example"
CLIENT_ID = f"spiffe://{TRUST_DOMAIN}/svc/client"
SERVER_ID = f"spiffe://{TRUST_DOMAIN}/svc/server"
MODES = ("hybrid", "spiffe")
NOBODY = "unix:uid:4294967294"  # no caller matches: the entries serve the tunnels only


@dataclass(frozen=True)
class TunnelReport:
    megabytes: int
    direct_mb_s: float
    tunnel_mb_s: float
    cpu_s_per_gb: float  # both agent processes together, during the tunnel's bulk transfer
    direct_connect_ms: float
    tunnel_connect_ms: dict[str, float]  # by mode
    direct_rtt_us: float
    tunnel_rtt_us: float
    backend: str


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (``/proc/<pid>/stat`` fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
    except asyncio.CancelledError:
        pass  # the benchmark is over; asyncio.start_server's callback would report the cancellation
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


def _agents(directory: Path, target_port: int) -> tuple[AgentProcess, AgentProcess, dict[str, int]]:
    """Agent A (outbound tunnels, one per mode) and agent B (the inbound tunnels), not started."""
    ca_dir = directory / "dev-ca"  # shared: the two agents trust each other
    entries = [{"spiffe_id": sid, "selectors": [NOBODY]} for sid in (CLIENT_ID, SERVER_ID)]
    inbound = {mode: free_port() for mode in MODES}
    outbound = {mode: free_port() for mode in MODES}

    def config(name: str, tunnels: dict[str, list[dict[str, object]]]) -> dict[str, object]:
        workdir = directory / name
        workdir.mkdir(mode=0o700)
        return {
            "agent": {"socket_path": str(workdir / "agent.sock"), "shutdown_grace": "1s"},
            "source": {"kind": "dev", "dev": {"trust_domain": TRUST_DOMAIN, "entries": entries,
                                              "ca_dir": str(ca_dir)}},
            "tunnel": tunnels,
        }  # fmt: skip

    a = AgentProcess(directory / "a", {})
    b = AgentProcess(directory / "b", {})
    a.config = config("a", {"outbound": [
        {"name": f"out-{mode}", "mode": mode, "listen": f"127.0.0.1:{outbound[mode]}",
         "remote": f"127.0.0.1:{inbound[mode]}", "peer_ids": [SERVER_ID], "spiffe_id": CLIENT_ID,
         "allowed_uids": [os.getuid()]}
        for mode in MODES
    ]})  # fmt: skip
    b.config = config("b", {"inbound": [
        {"name": f"in-{mode}", "mode": mode, "listen": f"127.0.0.1:{inbound[mode]}",
         "target": f"127.0.0.1:{target_port}", "spiffe_id": SERVER_ID, "allowed_ids": [CLIENT_ID]}
        for mode in MODES
    ]})  # fmt: skip
    return a, b, outbound


async def _wait_tunnel(port: int, timeout: float = 60.0) -> None:
    """Until a connection through the pair echoes (both agents have their tunnel credentials)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await asyncio.wait_for(_connect_ms(port), 10)
            return
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def _measure(megabytes: int, connects: int, target_port: int, a: AgentProcess, b: AgentProcess,
                   outbound: dict[str, int]) -> TunnelReport:  # fmt: skip
    for port in outbound.values():
        await _wait_tunnel(port)
    hybrid = outbound["hybrid"]
    total = megabytes << 20
    await _throughput(hybrid, 8 << 20)  # warm-up: code paths, buffers
    await _throughput(target_port, 8 << 20)
    direct_mb_s = await _throughput(target_port, total)
    cpu_before = _cpu_seconds(a.pid) + _cpu_seconds(b.pid)
    tunnel_mb_s = await _throughput(hybrid, total)
    cpu_s_per_gb = (_cpu_seconds(a.pid) + _cpu_seconds(b.pid) - cpu_before) / (total / 1e9)
    direct_connect = statistics.median([await _connect_ms(target_port) for _ in range(connects)])
    tunnel_connect = {
        mode: statistics.median([await _connect_ms(port) for _ in range(connects)])
        for mode, port in outbound.items()
    }
    direct_rtt = await _rtt_us(target_port, 500)
    tunnel_rtt = await _rtt_us(hybrid, 500)
    return TunnelReport(
        megabytes, direct_mb_s, tunnel_mb_s, cpu_s_per_gb, direct_connect, tunnel_connect,
        direct_rtt, tunnel_rtt, os.environ.get("SPIRE_PQC_BACKEND") or "auto",
    )  # fmt: skip


async def _run(megabytes: int, connects: int) -> TunnelReport:
    target = await asyncio.start_server(_sink, "127.0.0.1", 0)
    target_port = int(target.sockets[0].getsockname()[1])
    directory = Path(tempfile.mkdtemp(prefix="spa-bench-tunnel-", dir="/tmp"))
    directory.chmod(0o700)
    a, b, outbound = _agents(directory, target_port)
    try:
        # Start both, then wait: the first to start creates the shared dev CA, the other loads it.
        a.start(wait=False)
        b.start(wait=False)
        await asyncio.to_thread(a.wait_ready)
        await asyncio.to_thread(b.wait_ready)
        return await _measure(megabytes, connects, target_port, a, b, outbound)
    finally:
        a.stop()
        b.stop()
        target.close()
        await target.wait_closed()
        shutil.rmtree(directory, ignore_errors=True)


def run(*, megabytes: int = 100, connects: int = 30) -> TunnelReport:
    return asyncio.run(_run(megabytes, connects))


def format_report(r: TunnelReport) -> str:
    connect = "   ".join(
        f"{mode} {ms:6.2f} ms (+{ms - r.direct_connect_ms:.2f})" for mode, ms in r.tunnel_connect_ms.items()
    )
    return "\n".join(
        [
            f"tunnel pair across two agent processes (outbound -> channel -> inbound -> target) vs direct TCP, "
            f"{r.megabytes} MB, PQ backend {r.backend}:",
            f"  throughput (hybrid):  direct {r.direct_mb_s:8.1f} MB/s   tunnel {r.tunnel_mb_s:8.1f} MB/s "
            f"(x{r.tunnel_mb_s / r.direct_mb_s:.2f}); both agents {r.cpu_s_per_gb:.2f} CPU-s per GB",
            f"  new connection p50:   direct {r.direct_connect_ms:8.2f} ms     tunnel {connect}",
            f"  round trip p50:       direct {r.direct_rtt_us:8.0f} us     tunnel {r.tunnel_rtt_us:8.0f} us "
            f"(+{r.tunnel_rtt_us - r.direct_rtt_us:.0f} us)",
        ]
    )
