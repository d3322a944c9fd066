"""`spire-pqc bench rotation`: the agent's memory under rotation (dev source), with the heap's growth.

A node agent (in this process) serves ``identities`` dev entries with a short SVID TTL; one workload
watches every identity on the HybridWorkload stream (so every rotation means new PQC keys, a PQC
issuance by the dev source's in-process CA and a push). The bench rotates (``rotate_now``) until
``rotations`` SVIDs were renewed *and* the workload received each of them with its new PQC
credentials, paced over ``seconds``. The agent's own rotation timer (half the TTL) keeps running too.

Memory is the process's RSS, read when ``warmup_seconds`` have passed (by then SVIDs, the agent's
per-SVID slots and the in-process CA's ledger entries, kept for the TTL plus its 60 s freshness
window, expire as fast as new ones arrive) and at the end; the growth between the two must stay
under a few MB. tracemalloc snapshots are taken at the same two points, and its top allocation sites
by growth between them are
printed, so a leak shows where it allocates. (tracemalloc runs for the whole soak, so its bookkeeping is
in both RSS readings.)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

from grpclib.client import Channel
from grpclib.const import Cardinality
from grpclib.exceptions import StreamTerminatedError

from spire_pqc._proto.spire_pqc.workload.v1 import workload_pb2 as hy
from spire_pqc.agent.config import AgentConfig, parse
from spire_pqc.agent.server import Agent
from spire_pqc.agent.sources.dev import DevIdentitySource
from spire_pqc.crypto import backend_name

HEADER = {"workload.spiffe.io": "true"}
_HYBRID = "/spire_pqc.workload.v1.HybridWorkload/FetchHybridSVIDs"


@dataclass(frozen=True)
class RotationSoak:
    backend: str
    identities: int
    ttl_s: float
    rotations: int  # SVIDs renewed and delivered with new PQC credentials
    elapsed_s: float
    warmup_rotations: int
    rss_warm_kib: int
    rss_end_kib: int
    heap_growth_kib: float  # tracemalloc, warm-up to end
    top_growth: tuple[str, ...]  # tracemalloc's top allocation sites by growth
    rss_trend: tuple[tuple[int, int], ...] = ()  # (rotations, RSS KiB), every tenth of the run

    @property
    def rss_growth_mib(self) -> float:
        return (self.rss_end_kib - self.rss_warm_kib) / 1024


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def _config(directory: Path, identities: int, ttl_s: float) -> AgentConfig:
    entries = [
        {"spiffe_id": f"spiffe://bench.example/rotating/{i}", "selectors": [f"unix:uid:{os.getuid()}"]}
        for i in range(identities)
    ]
    return parse(
        {
            "agent": {"socket_path": str(directory / "agent.sock"), "shutdown_grace": "1s"},
            "source": {
                "kind": "dev",
                "dev": {"trust_domain": "bench.example", "svid_ttl": f"{ttl_s:g}s", "entries": entries},
            },
        }
    )


class _Watcher:
    """One workload on the hybrid stream; counts classical SVIDs delivered with PQC credentials."""

    def __init__(self, socket_path: Path, identities: int) -> None:
        self._channel = Channel(path=str(socket_path))
        self._identities = identities
        self._seen: set[bytes] = set()
        self.delivered = 0
        self.changed = asyncio.Event()

    async def run(self) -> None:
        async with self._channel.request(
            _HYBRID, Cardinality.UNARY_STREAM, hy.HybridSVIDRequest, hy.HybridSVIDResponse, metadata=HEADER
        ) as stream:
            await stream.send_message(hy.HybridSVIDRequest(), end=True)
            async for reply in stream:
                for svid in reply.svids:
                    leaf = bytes(svid.classical_chain)
                    if leaf not in self._seen:
                        self._seen.add(leaf)
                        self.delivered += 1
                # Only the current SVIDs can come again: forget the rest (bounded memory here).
                self._seen &= {bytes(s.classical_chain) for s in reply.svids}
                self.changed.set()

    async def until(self, delivered: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.delivered < delivered:
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), max(0.01, deadline - time.monotonic()))

    def close(self) -> None:
        self._channel.close()


async def _soak(
    rotations: int, identities: int, ttl_s: float, seconds: float, warmup_seconds: float
) -> RotationSoak:
    directory = Path(tempfile.mkdtemp(prefix="spa-rot-", dir="/tmp"))
    try:
        async with Agent(_config(directory, identities, ttl_s)) as agent:
            source = agent.source
            assert isinstance(source, DevIdentitySource)
            watcher = _Watcher(agent.socket_path, identities)
            task = asyncio.create_task(watcher.run())
            try:
                await watcher.until(identities, timeout=120)
                # Traced from the start, so the snapshot at the warm-up point holds the steady-state
                # working set and only what accumulates after it shows as growth.
                tracemalloc.start(10)
                started = time.monotonic()
                pace = seconds / max(1, rotations // identities)
                warm: tuple[int, int] | None = None
                trend: list[tuple[int, int]] = []
                while watcher.delivered - identities < rotations:
                    done = watcher.delivered - identities
                    if done >= len(trend) * rotations / 10:
                        trend.append((done, _rss_kib()))
                    round_started = time.monotonic()
                    target = watcher.delivered + identities
                    await source.rotate_now()
                    await watcher.until(target, timeout=120)
                    if warm is None and time.monotonic() - started >= warmup_seconds:
                        warm = (watcher.delivered - identities, _rss_kib())
                        before = tracemalloc.take_snapshot()
                    await asyncio.sleep(max(0.0, pace - (time.monotonic() - round_started)))
                elapsed = time.monotonic() - started
                if warm is None:  # a run shorter than its warm-up: measure from here
                    warm = (watcher.delivered - identities, _rss_kib())
                    before = tracemalloc.take_snapshot()
                end_rss = _rss_kib()
                after = tracemalloc.take_snapshot()
                heap_growth = sum(s.size_diff for s in after.compare_to(before, "filename")) / 1024
                top = tuple(str(s) for s in after.compare_to(before, "lineno")[:10])
            finally:
                tracemalloc.stop()
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, StreamTerminatedError):
                    await task
                watcher.close()
        return RotationSoak(
            backend=backend_name(),
            identities=identities,
            ttl_s=ttl_s,
            rotations=watcher.delivered - identities,
            elapsed_s=elapsed,
            warmup_rotations=warm[0],
            rss_warm_kib=warm[1],
            rss_end_kib=end_rss,
            heap_growth_kib=heap_growth,
            top_growth=top,
            rss_trend=(*trend, (watcher.delivered - identities, end_rss)),
        )
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def run(
    *,
    rotations: int = 10_000,
    identities: int = 10,
    ttl_s: float = 4.0,
    seconds: float = 240.0,
    warmup_seconds: float = 90.0,
) -> RotationSoak:
    if rotations < 1 or identities < 1 or ttl_s <= 0:
        raise ValueError("rotations and identities must be >= 1, ttl > 0")
    return asyncio.run(_soak(rotations, identities, ttl_s, seconds, warmup_seconds))


def format_report(soak: RotationSoak) -> str:
    lines = [
        f"spire-pqc bench rotation (dev source, backend {soak.backend}): {soak.rotations} rotations of "
        f"{soak.identities} identities (SVID TTL {soak.ttl_s:g} s) in {soak.elapsed_s:.0f} s, each delivered "
        "with new PQC credentials on a hybrid stream",
        f"  RSS after warm-up ({soak.warmup_rotations} rotations): {soak.rss_warm_kib / 1024:.1f} MiB; at the end "
        f"{soak.rss_end_kib / 1024:.1f} MiB; growth {soak.rss_growth_mib:+.2f} MiB "
        f"over {soak.rotations - soak.warmup_rotations} rotations",
        "  RSS every tenth of the run: "
        + ", ".join(f"{done}: {rss / 1024:.1f}" for done, rss in soak.rss_trend)
        + " (rotations: MiB)",
        f"  Python heap growth over the same rotations (tracemalloc): {soak.heap_growth_kib:+.0f} KiB",
        "  tracemalloc top allocation sites by growth:",
    ]
    lines += [f"    {line}" for line in soak.top_growth]
    return "\n".join(lines)
