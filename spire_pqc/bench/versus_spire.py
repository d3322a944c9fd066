"""`spire-pqc bench agent-vs-spire`: our node agent side by side with SPIRE's own agent, same workload.

A real spire-server v1.15.3 (with the spire-pqc plugin and its PQC CA endpoint), a real spire-agent
(Delegated Identity API for our agent) and our agent on the ``spire`` source run as processes. This
process is the workload: one registration entry (``unix:uid:0``, X509-SVID TTL ``--ttl``) gives it an
SVID, and it asks spire-agent's Workload API socket and ours the same questions with the same client
(grpclib, the standard ``FetchX509SVID`` call, one connection per stream as separate workloads would
open them). The two agents are measured one after the other, each alone, so neither's clients load
the other:

* one-shot ``FetchX509SVID`` on a new connection until the first response (p50 of ``--fetches``);
* first streamed response on an open connection (p50);
* opening ``--streams`` streams (one connection each) until every one has its first response;
* rotation fan-out: when SPIRE rotates the SVID, the time from the first of the open streams to see
  the new SVID to the last (our agent issues the PQC credentials before its first push; that delay
  is not part of the fan-out);
* agent RSS (``VmRSS``) with the streams open.
"""

from __future__ import annotations

import asyncio
import resource
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from grpclib.client import Channel
from grpclib.const import Cardinality
from spiffe._proto import workload_pb2 as wl

from spire_pqc.bench.spirelab import (
    PqcAgent,
    SpireAgent,
    SpireServer,
    cleanup,
    free_port,
    running,
    short_tempdir,
)

TD = "example.org"
HEADER = {"workload.spiffe.io": "true"}
FETCH = "/SpiffeWorkloadAPI/FetchX509SVID"


@dataclass(frozen=True)
class AgentFigures:
    name: str
    fetch_p50_ms: float
    first_p50_ms: float
    open_streams_s: float
    fanout_ms: float  # first → last stream to see a rotation
    rss_kib: int


@dataclass(frozen=True)
class VersusReport:
    streams: int
    fetches: int
    spire: AgentFigures
    ours: AgentFigures


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def _serial(response: wl.X509SVIDResponse) -> bytes:
    """The SVIDs' certificates: what changes when SPIRE rotates."""
    return b"".join(svid.x509_svid for svid in response.svids)


async def _first(channel: Channel) -> wl.X509SVIDResponse:
    async with channel.request(
        FETCH, Cardinality.UNARY_STREAM, wl.X509SVIDRequest, wl.X509SVIDResponse, metadata=HEADER
    ) as stream:  # fmt: skip
        await stream.send_message(wl.X509SVIDRequest(), end=True)
        response = await stream.recv_message()
        await stream.cancel()
    if response is None or not response.svids:
        raise RuntimeError("the agent answered without an SVID")
    return response


async def _fetch_ms(socket: Path) -> float:
    started = time.perf_counter()
    channel = Channel(path=str(socket))
    try:
        await _first(channel)
    finally:
        channel.close()
    return (time.perf_counter() - started) * 1e3


async def _first_ms(channel: Channel) -> float:
    started = time.perf_counter()
    await _first(channel)
    return (time.perf_counter() - started) * 1e3


async def _streams(socket: Path, count: int, pid: int, timeout: float) -> tuple[float, float, int]:
    """Open ``count`` streams; return (seconds until all answered, rotation fan-out ms, RSS KiB)."""
    channels = [Channel(path=str(socket)) for _ in range(count)]
    first = [asyncio.Event() for _ in range(count)]
    initial: list[bytes] = [b""] * count
    rotated = [0.0] * count

    async def watch(index: int) -> None:
        async with channels[index].request(
            FETCH, Cardinality.UNARY_STREAM, wl.X509SVIDRequest, wl.X509SVIDResponse, metadata=HEADER
        ) as stream:  # fmt: skip
            await stream.send_message(wl.X509SVIDRequest(), end=True)
            response = await stream.recv_message()
            assert response is not None
            initial[index] = _serial(response)
            first[index].set()
            while (response := await stream.recv_message()) is not None:
                if _serial(response) != initial[index]:
                    rotated[index] = time.perf_counter()
                    await stream.cancel()
                    return

    tasks = [asyncio.create_task(watch(i)) for i in range(count)]
    try:
        started = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in first)), timeout)
        opened = time.perf_counter() - started
        rss = _rss_kib(pid)
        await asyncio.wait_for(asyncio.gather(*tasks), timeout)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for channel in channels:
            channel.close()
    return opened, (max(rotated) - min(rotated)) * 1e3, rss


async def _measure(name: str, socket: Path, pid: int, streams: int, fetches: int, ttl: int) -> AgentFigures:
    for _ in range(3):  # warm-up: connection paths, caches
        await _fetch_ms(socket)
    fetch = statistics.median([await _fetch_ms(socket) for _ in range(fetches)])
    channel = Channel(path=str(socket))
    try:
        await _first(channel)
        first = statistics.median([await _first_ms(channel) for _ in range(fetches)])
    finally:
        channel.close()
    opened, fanout, rss = await _streams(socket, streams, pid, timeout=3.0 * ttl + 60)
    return AgentFigures(name, fetch, first, opened, fanout, rss)


def _pqc_agent_config(
    workdir: Path, spire_agent: SpireAgent, delegate: str, endpoint: int, health: int
) -> str:
    return f"""
[agent]
socket_path = "{workdir}/pqc.sock"
state_dir = "{workdir}/pqc-state"
shutdown_grace = "1s"
[source]
kind = "spire"
[source.spire]
admin_socket_path = "{spire_agent.admin_socket}"
workload_socket_path = "{spire_agent.socket}"
agent_id = "{delegate}"
[ca]
address = "127.0.0.1:{endpoint}"
[health]
listen_address = "127.0.0.1:{health}"
[limits]
max_connections_per_uid = 4096
max_streams_per_uid = 8192
"""


async def _run(streams: int, fetches: int, ttl: int) -> VersusReport:
    import subprocess
    import sys

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # a connection per stream
    workdir = short_tempdir()
    pqc_dir = workdir / "pqc-ca"
    cli = [sys.executable, "-m", "spire_pqc.cli", "ca"]
    subprocess.run([*cli, "init", "--trust-domain", TD, "--out-dir", str(pqc_dir), "--no-encryption"],
                   check=True, capture_output=True)  # fmt: skip
    subprocess.run([*cli, "intermediate", "--trust-domain", TD, "--root-dir", str(pqc_dir),
                    "--out-dir", str(pqc_dir), "--no-encryption"], check=True, capture_output=True)  # fmt: skip
    node, delegate = f"spiffe://{TD}/node1", f"spiffe://{TD}/spire-pqc/agent"
    workload = f"spiffe://{TD}/bench/workload"
    endpoint = free_port()
    server = SpireServer(
        workdir,
        composer_data={
            "intermediate_key_path": str(pqc_dir / "intermediate.key.pem"),
            "intermediate_cert_path": str(pqc_dir / "intermediate.crt.pem"),
            "pqc_bundle_path": str(pqc_dir / "root.crt.pem"),
            "endpoint_listen_address": f"127.0.0.1:{endpoint}",
            "authorized_agents": [delegate],
        },
    )
    spire_agent = SpireAgent(workdir / "node1", server, authorized_delegates=[delegate])
    health = free_port()
    ours = PqcAgent(
        workdir / "pqc", _pqc_agent_config(workdir / "pqc", spire_agent, delegate, endpoint, health), health
    )
    try:
        with running(server, spire_agent, ours):
            await asyncio.to_thread(server.start)
            token = await asyncio.to_thread(server.join_token, node)
            for spiffe_id, selectors, entry_ttl in (
                (delegate, ["unix:uid:0", "unix:gid:0"], 3600),
                (workload, ["unix:uid:0"], ttl),
            ):
                args = [
                    "entry",
                    "create",
                    "-parentID",
                    node,
                    "-spiffeID",
                    spiffe_id,
                    "-x509SVIDTTL",
                    str(entry_ttl),
                ]
                for selector in selectors:
                    args += ["-selector", selector]
                await asyncio.to_thread(server.cli, *args)
            await asyncio.to_thread(spire_agent.start, token)
            await asyncio.to_thread(ours.start)
            await asyncio.to_thread(ours.wait_ready)
            assert spire_agent.proc is not None and ours.proc is not None
            spire = await _measure(
                "spire-agent", spire_agent.socket, spire_agent.proc.pid, streams, fetches, ttl
            )
            mine = await _measure(
                "spire-pqc agent", workdir / "pqc" / "pqc.sock", ours.proc.pid, streams, fetches, ttl
            )
    finally:
        cleanup(workdir)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return VersusReport(streams, fetches, spire, mine)


def run(*, streams: int = 500, fetches: int = 100, ttl: int = 20) -> VersusReport:
    return asyncio.run(_run(streams, fetches, ttl))


def format_report(r: VersusReport) -> str:
    s, o = r.spire, r.ours

    def row(what: str, a: float, b: float, unit: str, fmt: str = "8.2f") -> str:
        return f"  {what:<34} {a:{fmt}} {unit:<3} {b:{fmt}} {unit:<3} x{b / a:.2f}" if a else f"  {what}: n/a"

    return "\n".join(
        [
            f"node agent vs spire-agent v1.15.3, same workload and client, spire source, {r.streams} streams:",
            f"  {'':<34} {'spire-agent':>12} {'spire-pqc':>12} {'ratio':>6}",
            row(f"one-shot FetchX509SVID p50 ({r.fetches})", s.fetch_p50_ms, o.fetch_p50_ms, "ms"),
            row("first streamed response p50", s.first_p50_ms, o.first_p50_ms, "ms"),
            row(f"opening {r.streams} streams", s.open_streams_s, o.open_streams_s, "s"),
            row(f"rotation fan-out, first → last of {r.streams}", s.fanout_ms, o.fanout_ms, "ms", "8.1f"),
            row(f"agent RSS with {r.streams} streams", s.rss_kib / 1024, o.rss_kib / 1024, "MiB", "8.1f"),
        ]
    )
