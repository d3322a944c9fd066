"""`spire-pqc bench rotation --source spire`: the agent's RSS while real SPIRE rotates its SVIDs.

A real spire-server v1.15.3 (with the plugin and its PQC CA endpoint), a spire-agent, and a
``spire-pqc agent run`` process on the spire source (Delegated Identity API); ``identities``
registration entries of this uid with an X509-SVID TTL of ``ttl_s`` seconds, which SPIRE's agent
renews at half their life. One workload watches them all on the HybridWorkload stream; a rotation
counts when it received the new classical SVID with its new PQC credentials (new keys, a PQC issuance
by the plugin's endpoint over mTLS, a push). Rotations are SPIRE's pace, so the run stops at
``rotations`` or after ``seconds``, whichever comes first. RSS is the agent process's, read every
tenth of ``seconds``, when ``warmup_seconds`` have passed, and at the end. tracemalloc cannot watch
another process: this soak reports RSS only (the dev-source soak has the heap's top growth).
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from pathlib import Path

from grpclib.exceptions import StreamTerminatedError

from spire_pqc.bench.rotation import RotationSoak, _Watcher
from spire_pqc.bench.spirelab import (
    PqcAgent,
    SpireAgent,
    SpireServer,
    cleanup,
    free_port,
    running,
    short_tempdir,
)

TD = "bench.example"


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status")


def _agent_config(workdir: Path, spire_agent: SpireAgent, delegate: str, endpoint: int, health: int) -> str:
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
"""


async def _soak(
    rotations: int, identities: int, ttl_s: int, seconds: float, warmup_seconds: float
) -> RotationSoak:
    workdir = short_tempdir()
    pqc_dir = workdir / "pqc-ca"
    cli = [sys.executable, "-m", "spire_pqc.cli", "ca"]
    subprocess.run([*cli, "init", "--trust-domain", TD, "--out-dir", str(pqc_dir), "--no-encryption"],
                   check=True, capture_output=True)  # fmt: skip
    subprocess.run([*cli, "intermediate", "--trust-domain", TD, "--root-dir", str(pqc_dir),
                    "--out-dir", str(pqc_dir), "--no-encryption"], check=True, capture_output=True)  # fmt: skip
    node, delegate = f"spiffe://{TD}/node1", f"spiffe://{TD}/spire-pqc/agent"
    endpoint = free_port()
    server = SpireServer(
        workdir,
        trust_domain=TD,
        composer_data={
            "intermediate_key_path": str(pqc_dir / "intermediate.key.pem"),
            "intermediate_cert_path": str(pqc_dir / "intermediate.crt.pem"),
            "pqc_bundle_path": str(pqc_dir / "root.crt.pem"),
            "endpoint_listen_address": f"127.0.0.1:{endpoint}",
            "authorized_agents": [delegate],
            "ledger_dsn": f"sqlite://{workdir / 'ledger.db'}",
            "ledger_prune_interval": "5s",
        },
    )
    spire_agent = SpireAgent(workdir / "node1", server, authorized_delegates=[delegate])
    health = free_port()
    ours = PqcAgent(
        workdir / "pqc", _agent_config(workdir / "pqc", spire_agent, delegate, endpoint, health), health
    )
    try:
        with running(server, spire_agent, ours):
            await asyncio.to_thread(server.start)
            token = await asyncio.to_thread(server.join_token, node)
            entries = [(delegate, ["unix:uid:0", "unix:gid:0"], 3600)]
            entries += [(f"spiffe://{TD}/rotating/{i}", ["unix:uid:0"], ttl_s) for i in range(identities)]
            for spiffe_id, selectors, entry_ttl in entries:
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
            await asyncio.to_thread(ours.wait_ready, 180)  # PQC credentials served: the stream has SVIDs
            assert ours.proc is not None
            pid = ours.proc.pid
            watcher = _Watcher(workdir / "pqc" / "pqc.sock", identities)
            task = asyncio.create_task(watcher.run())
            try:
                await watcher.until(identities, timeout=180)
                started = time.monotonic()
                trend: list[tuple[int, int]] = []
                warm: tuple[int, int] | None = None
                while watcher.delivered - identities < rotations and time.monotonic() - started < seconds:
                    now = time.monotonic() - started
                    done = watcher.delivered - identities
                    if now >= len(trend) * seconds / 10:
                        trend.append((done, _rss_kib(pid)))
                    if warm is None and now >= warmup_seconds:
                        warm = (done, _rss_kib(pid))
                    await asyncio.sleep(0.5)
                elapsed = time.monotonic() - started
                done = watcher.delivered - identities
                end_rss = _rss_kib(pid)
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, StreamTerminatedError):
                    await task
                watcher.close()
    finally:
        cleanup(workdir)
    if warm is None:
        warm = trend[min(1, len(trend) - 1)]
    return RotationSoak(
        backend="spire source (agent process)",
        arenas=1,
        identities=identities,
        ttl_s=float(ttl_s),
        rotations=done,
        elapsed_s=elapsed,
        warmup_rotations=warm[0],
        rss_warm_kib=warm[1],
        rss_end_kib=end_rss,
        heap_growth_kib=0.0,
        top_growth=(),
        rss_trend=(*trend, (done, end_rss)),
    )


def run(
    *, rotations: int = 10_000, identities: int = 10, ttl_s: int = 10, seconds: float = 1800.0,
    warmup_seconds: float = 120.0,
) -> RotationSoak:  # fmt: skip
    if rotations < 1 or identities < 1 or ttl_s < 1 or seconds <= 0:
        raise ValueError("rotations, identities and ttl must be >= 1, seconds > 0")
    return asyncio.run(_soak(rotations, identities, ttl_s, seconds, warmup_seconds))
