"""`spire-pqc bench soak`: a legitimate workload's latency while hostile local users attack the agent.

One real agent process (``spire-pqc agent run``, dev source, SVIDs rotating every few seconds, an
inbound tunnel) serves a legitimate workload in this process: repeated FetchX509SVID calls on new
connections (latency measured from connect to the first response) and one FetchX509SVID stream that
counts rotations. The workload runs twice for the same time: first alone (the baseline), then while
hostile processes under four unprivileged uids open ``connections`` connections in all:

* idle connections held and replaced as the agent closes them (two uids), up to half of the total;
* requests whose gRPC length prefix says ~4 GiB, followed by pushed body bytes;
* malformed gRPC bodies (compressed flag, truncated, 3 bytes, not protobuf);
* TLS handshakes to the inbound tunnel aborted mid-ClientHello or after it (half with a reset).

Reported: the workload's p50/p99 latency under attack against its own baseline from the same run,
rotations seen in each phase, the agent's RSS and open descriptors before and after the attack (and
its peak RSS), the bytes it logged during the attack and its refusal counters. Needs root (to run
the attackers as other uids).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import Popen
from typing import Any

from grpclib.client import Channel
from grpclib.const import Cardinality
from grpclib.exceptions import GRPCError, StreamTerminatedError
from spiffe._proto import workload_pb2 as wl

from spire_pqc.bench.agentproc import AgentProcess
from spire_pqc.bench.hostile import FETCH_X509, HEADER, result_of, spawn
from spire_pqc.bench.spirelab import free_port

TRUST_DOMAIN = "soak.example"
WORKLOAD = f"spiffe://{TRUST_DOMAIN}/legit"
TUNNEL_ID = f"spiffe://{TRUST_DOMAIN}/tunnel"
HOSTILE_UIDS = (40101, 40102, 40103, 40104)
SVID_TTL = "10s"  # the dev source rotates at half the TTL: every 5 s


class SoakError(RuntimeError):
    """The soak cannot run here (not root) or the agent failed during it."""


@dataclass
class Phase:
    """The legitimate workload's view of one phase."""

    latencies_ms: list[float] = field(default_factory=list)
    failures: int = 0
    rotations: int = 0

    def quantile(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass(frozen=True)
class AgentSample:
    rss_kib: int
    fds: int
    log_bytes: int


@dataclass
class SoakReport:
    seconds: float
    baseline: Phase
    attack: Phase
    before: AgentSample
    after: AgentSample
    peak_rss_kib: int
    attacker_connections: int
    counters: dict[str, float]
    attackers: list[dict[str, Any]]


def _free_dir() -> Path:
    directory = Path(tempfile.mkdtemp(prefix="soak", dir="/tmp"))
    os.chmod(directory, 0o755)  # noqa: S103 - not writable by others; the attackers must reach the socket
    return directory


def _config(directory: Path, tunnel_port: int) -> dict[str, Any]:
    return {
        "agent": {"socket_path": str(directory / "agent.sock"), "shutdown_grace": "1s"},
        "source": {
            "kind": "dev",
            "dev": {
                "trust_domain": TRUST_DOMAIN,
                "svid_ttl": SVID_TTL,
                "entries": [
                    {"spiffe_id": WORKLOAD, "selectors": ["unix:uid:0"]},
                    {"spiffe_id": TUNNEL_ID, "selectors": ["unix:uid:4294967294"]},
                ],
            },
        },
        "tunnel": {
            "inbound": [
                {
                    "name": "in",
                    "listen": f"127.0.0.1:{tunnel_port}",
                    "target": f"127.0.0.1:{free_port()}",
                    "spiffe_id": TUNNEL_ID,
                    "allowed_trust_domain": TRUST_DOMAIN,
                }
            ]
        },
    }


async def _fetch_once(path: str) -> float:
    """Milliseconds from a new connection to the first FetchX509SVID response."""
    started = time.perf_counter()
    channel = Channel(path=path)
    try:
        async with channel.request(
            FETCH_X509, Cardinality.UNARY_STREAM, wl.X509SVIDRequest, wl.X509SVIDResponse,
            metadata=HEADER, timeout=30,
        ) as stream:  # fmt: skip
            await stream.send_message(wl.X509SVIDRequest(), end=True)
            reply = await stream.recv_message()
            if reply is None or [s.spiffe_id for s in reply.svids] != [WORKLOAD]:
                raise SoakError(f"unexpected reply to the legitimate workload: {reply}")
            await stream.cancel()
    finally:
        channel.close()
    return (time.perf_counter() - started) * 1000


async def _watch(path: str, phase: Phase, stop: asyncio.Event) -> None:
    """One long FetchX509SVID stream: every new certificate is a rotation seen by the workload."""
    channel = Channel(path=path)
    try:
        async with channel.request(
            FETCH_X509, Cardinality.UNARY_STREAM, wl.X509SVIDRequest, wl.X509SVIDResponse, metadata=HEADER
        ) as stream:
            await stream.send_message(wl.X509SVIDRequest(), end=True)
            first = await stream.recv_message()
            last = first.svids[0].x509_svid if first else b""
            while not stop.is_set():
                receive = asyncio.ensure_future(stream.recv_message())
                halt = asyncio.ensure_future(stop.wait())
                done, _ = await asyncio.wait({receive, halt}, return_when=asyncio.FIRST_COMPLETED)
                if receive not in done:
                    receive.cancel()
                    break
                halt.cancel()
                reply = receive.result()
                if reply is None:
                    break
                if reply.svids and reply.svids[0].x509_svid != last:
                    phase.rotations += 1
                    last = reply.svids[0].x509_svid
            await stream.cancel()
    finally:
        channel.close()


async def _workload(path: str, seconds: float) -> Phase:
    phase = Phase()
    stop = asyncio.Event()
    watcher = asyncio.create_task(_watch(path, phase, stop))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            phase.latencies_ms.append(await _fetch_once(path))
        except (OSError, TimeoutError, SoakError, GRPCError, StreamTerminatedError):
            phase.failures += 1  # counted and reported: the workload was not served
        await asyncio.sleep(0.05)
    stop.set()
    await watcher
    return phase


def _sample(agent: AgentProcess) -> AgentSample:
    return AgentSample(agent.rss_kib(), agent.open_fds(), agent.log_bytes())


def _attackers(agent: AgentProcess, tunnel_port: int, connections: int, seconds: float) -> list[Popen[str]]:
    """Hostile processes that open about ``connections`` connections in all within ``seconds``."""
    idle_total = connections // 2
    handshakes = connections // 4
    malformed = connections // 8
    oversize = connections - idle_total - handshakes - malformed
    socket = str(agent.socket_path)
    hold = ["--hold", str(seconds), "--reconnect", "--count", "600"]
    per_idle = str(idle_total // 2)
    uid_a, uid_b, uid_c, uid_d = HOSTILE_UIDS
    return [
        spawn("idle", ["--socket", socket, *hold, "--max-attempts", per_idle], uid=uid_a),
        spawn("idle", ["--socket", socket, *hold, "--max-attempts", per_idle], uid=uid_b),
        spawn("oversize", ["--socket", socket, "--repeat", str(oversize), "--push", "2"], uid=uid_c),
        spawn("malformed", ["--socket", socket, "--repeat", str(malformed)], uid=uid_c),
        spawn("handshake", ["--tcp", f"127.0.0.1:{tunnel_port}", "--count", str(handshakes // 2)], uid=uid_d),
        spawn("handshake", ["--tcp", f"127.0.0.1:{tunnel_port}", "--count", str(handshakes - handshakes // 2),
                            "--rst"], uid=uid_d),
    ]  # fmt: skip


def _connections_made(result: dict[str, Any]) -> int:
    return int(result.get("attempts", result.get("made", result.get("requests", 0))))


COUNTERS: tuple[tuple[str, dict[str, str]], ...] = (
    ("spire_pqc_agent_connections_closed_total", {"reason": "per_uid_cap"}),
    ("spire_pqc_agent_connections_closed_total", {"reason": "idle_timeout"}),
    ("spire_pqc_agent_requests_refused_total", {"reason": "message_too_large"}),
    ("spire_pqc_agent_requests_refused_total", {"reason": "malformed_request"}),
    ("spire_pqc_agent_requests_refused_total", {"reason": "caller_unknown"}),
    ("spire_pqc_agent_accept_errors_total", {}),
    ("spire_pqc_agent_tunnel_connections_total", {"tunnel": "in", "kind": "inbound", "result": "refused"}),
)


@contextmanager
def _workdir() -> Iterator[Path]:
    directory = _free_dir()
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def run(*, connections: int = 10_000, seconds: float = 30.0) -> SoakReport:
    if os.geteuid() != 0:
        raise SoakError("bench soak runs the attackers as other uids: run it as root")
    tunnel_port = free_port()
    with _workdir() as directory, AgentProcess(directory, _config(directory, tunnel_port)) as agent:
        path = str(agent.socket_path)
        baseline = asyncio.run(_workload(path, seconds))
        before = _sample(agent)
        attackers = _attackers(agent, tunnel_port, connections, seconds)
        try:
            attack = asyncio.run(_workload(path, seconds))
        finally:
            results = [result_of(a, timeout=seconds + 600) for a in attackers]
        agent.check_running()
        time.sleep(1.0)  # let the agent finish what the attackers left in its queues
        after = _sample(agent)
        counters = {
            f"{name}{{{','.join(f'{k}={v}' for k, v in labels.items())}}}": agent.metric(name, **labels)
            for name, labels in COUNTERS
        }
        return SoakReport(
            seconds=seconds,
            baseline=baseline,
            attack=attack,
            before=before,
            after=after,
            peak_rss_kib=agent.peak_rss_kib(),
            attacker_connections=sum(_connections_made(r) for r in results),
            counters=counters,
            attackers=results,
        )


def format_report(report: SoakReport) -> str:
    b, a = report.baseline, report.attack
    ratio = a.quantile(0.99) / b.quantile(0.99) if b.latencies_ms else float("nan")
    lines = [
        f"soak: legitimate workload for {report.seconds:g}s alone, then {report.seconds:g}s under "
        f"{report.attacker_connections:,} hostile connections (4 uids: idle, oversize, malformed, aborted TLS)",
        "",
        "| phase | fetches | failures | p50 ms | p99 ms | max ms | rotations seen |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, phase in (("alone (baseline)", b), ("under attack", a)):
        worst = max(phase.latencies_ms, default=float("nan"))
        lines.append(
            f"| {name} | {len(phase.latencies_ms)} | {phase.failures} | {phase.quantile(0.5):.1f} | "
            f"{phase.quantile(0.99):.1f} | {worst:.1f} | {phase.rotations} |"
        )
    lines += [
        "",
        f"p99 under attack / p99 alone: {ratio:.2f}x   (median ratio "
        f"{statistics.median(a.latencies_ms) / statistics.median(b.latencies_ms):.2f}x)"
        if a.latencies_ms and b.latencies_ms
        else "no latency samples",
        f"agent RSS: {report.before.rss_kib / 1024:.1f} MiB before the attack, {report.after.rss_kib / 1024:.1f} MiB "
        f"after (peak {report.peak_rss_kib / 1024:.1f} MiB)",
        f"agent open descriptors: {report.before.fds} before, {report.after.fds} after",
        f"agent log bytes written during the attack: {report.after.log_bytes - report.before.log_bytes:,}",
        "agent counters:",
    ]
    lines += [f"  {name} {value:,.0f}" for name, value in report.counters.items()]
    return "\n".join(lines)
