"""Agent benchmarks (not tests): rotation fan-out to N open streams, and RSS with N identities.

Both run a dev-source agent in this process on a real Unix socket, with grpclib clients on the same
event loop (one connection per stream, as separate workloads would have). Numbers therefore include
the clients' own work; they are for comparing runs and configurations, not absolute truths.

* :func:`rotation_fanout` — after a rotation, the time until the *last* of N ``FetchX509SVID``
  streams has received the new SVID (and the median).
* :func:`rss_with_identities` — process RSS before the agent starts, once it serves, and after N
  identities all obtained their PQC credentials (keys in memory, certificates cached).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import tempfile
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

from grpclib.client import Channel
from grpclib.const import Cardinality
from spiffe._proto import workload_pb2 as wl

from spire_pqc._proto.spire_pqc.workload.v1 import workload_pb2 as hy
from spire_pqc.agent.config import AgentConfig, parse
from spire_pqc.agent.server import Agent
from spire_pqc.agent.sources.dev import DevIdentitySource

HEADER = {"workload.spiffe.io": "true"}


@dataclass(frozen=True)
class FanoutResult:
    streams: int
    last_ms: float
    median_ms: float


@dataclass(frozen=True)
class RssResult:
    identities: int
    baseline_kib: int
    serving_kib: int
    provisioned_kib: int
    # Python heap growth while provisioning (tracemalloc): precise, unlike RSS deltas, which the
    # allocator's reuse of freed arenas can hide or even invert.
    heap_growth_kib: float

    @property
    def per_identity_kib(self) -> float:
        return self.heap_growth_kib / self.identities


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def _config(directory: Path, identities: int) -> AgentConfig:
    entries = [
        {"spiffe_id": f"spiffe://bench.example/workload/{i}", "selectors": [f"unix:uid:{os.getuid()}"]}
        for i in range(identities)
    ]
    return parse(
        {
            "agent": {"socket_path": str(directory / "agent.sock"), "shutdown_grace": "1s"},
            "source": {
                "kind": "dev",
                "dev": {"trust_domain": "bench.example", "svid_ttl": "1h", "entries": entries},
            },
        }
    )


async def rotation_fanout(streams: int) -> FanoutResult:
    directory = Path(tempfile.mkdtemp(prefix="spa-bench-", dir="/tmp"))
    try:
        async with Agent(_config(directory, 1)) as agent:
            source = agent.source
            assert isinstance(source, DevIdentitySource)
            channels = [Channel(path=str(agent.socket_path)) for _ in range(streams)]
            first = [asyncio.Event() for _ in range(streams)]
            received = [0.0] * streams

            async def watch(index: int) -> None:
                async with channels[index].request(
                    "/SpiffeWorkloadAPI/FetchX509SVID", Cardinality.UNARY_STREAM,
                    wl.X509SVIDRequest, wl.X509SVIDResponse, metadata=HEADER,
                ) as stream:  # fmt: skip
                    await stream.send_message(wl.X509SVIDRequest(), end=True)
                    await stream.recv_message()
                    first[index].set()
                    await stream.recv_message()
                    received[index] = time.perf_counter()
                    await stream.cancel()

            try:
                tasks = [asyncio.create_task(watch(i)) for i in range(streams)]
                await asyncio.gather(*(e.wait() for e in first))
                start = time.perf_counter()
                await source.rotate_now()
                await asyncio.gather(*tasks)
            finally:
                for channel in channels:
                    channel.close()
        lags = [(t - start) * 1000 for t in received]
        return FanoutResult(streams, max(lags), statistics.median(lags))
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def rss_with_identities(identities: int) -> RssResult:
    directory = Path(tempfile.mkdtemp(prefix="spa-bench-", dir="/tmp"))
    try:
        baseline = _rss_kib()
        async with Agent(_config(directory, identities)) as agent:
            serving = _rss_kib()
            tracemalloc.start()
            heap_before = tracemalloc.get_traced_memory()[0]
            channel = Channel(path=str(agent.socket_path))
            try:
                async with channel.request(
                    "/spire_pqc.workload.v1.HybridWorkload/FetchHybridSVIDs", Cardinality.UNARY_STREAM,
                    hy.HybridSVIDRequest, hy.HybridSVIDResponse, metadata=HEADER,
                ) as stream:  # fmt: skip
                    await stream.send_message(hy.HybridSVIDRequest(), end=True)
                    while True:  # full states arrive as credentials become ready
                        reply = await stream.recv_message()
                        if reply is None or len(reply.svids) == identities:
                            break
                    await stream.cancel()
            finally:
                channel.close()
            provisioned = _rss_kib()
            heap_growth = (tracemalloc.get_traced_memory()[0] - heap_before) / 1024
            tracemalloc.stop()
        return RssResult(identities, baseline, serving, provisioned, heap_growth)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def run(stream_counts: tuple[int, ...] = (10, 100, 1000), identities: int = 100) -> str:
    """Run both benchmarks and return a printable report."""

    async def both() -> tuple[list[FanoutResult], RssResult]:
        # Memory first, before the 1,000-stream run inflates the heap.
        rss = await rss_with_identities(identities)
        return [await rotation_fanout(n) for n in stream_counts], rss

    fanouts, rss = asyncio.run(both())
    lines = ["agent: rotation -> last of N FetchX509SVID streams updated (in-process clients)"]
    lines += [f"  N={f.streams:5d}  last {f.last_ms:8.1f} ms  median {f.median_ms:8.1f} ms" for f in fanouts]
    lines.append(
        f"agent: RSS {rss.baseline_kib} KiB before start, {rss.serving_kib} KiB serving, "
        f"{rss.provisioned_kib} KiB with {rss.identities} identities provisioned; "
        f"Python heap +{rss.heap_growth_kib:.0f} KiB ({rss.per_identity_kib:.1f} KiB per identity)"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    print(run())
