"""Agent benchmarks (not tests): rotation fan-out to N open streams, RSS with N identities, restart.

Both run a dev-source agent in this process on a real Unix socket, with grpclib clients on the same
event loop (one connection per stream, as separate workloads would have). Numbers therefore include
the clients' own work; they are for comparing runs and configurations, not absolute truths.

* :func:`rotation_fanout` — after a rotation, the time until the *last* of N ``FetchX509SVID``
  streams has received the new SVID (and the median).
* :func:`rss_with_identities` — process RSS before the agent starts, once it serves, and after N
  identities all obtained their PQC credentials (keys in memory, certificates cached).
* :func:`restart` — from start until a workload holding N identities has every hybrid SVID: with an
  empty state directory (keys generated, the in-process CA asked: the baseline) and after a restart
  on the kept state directory, with the same classical SVIDs, as SPIRE gives a restarted agent.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from grpclib.client import Channel
from grpclib.const import Cardinality
from spiffe._proto import workload_pb2 as wl

from spire_pqc._internal.wire import FETCH_HYBRID_SVIDS, FETCH_X509_SVID, SECURITY_METADATA
from spire_pqc._proto.spire_pqc.workload.v1 import workload_pb2 as hy
from spire_pqc.agent.caclient import LocalCAClient
from spire_pqc.agent.config import AgentConfig, parse
from spire_pqc.agent.model import Caller, X509State
from spire_pqc.agent.notify import Broadcast
from spire_pqc.agent.server import Agent
from spire_pqc.agent.sources.dev import DevIdentitySource
from spire_pqc.agent.state import SUFFIX, StateDirectory
from spire_pqc.bundle import BundleSet, X509Bundle
from spire_pqc.ca.devca import DevAuthority
from spire_pqc.ca.issuer import PQCIssuer
from spire_pqc.errors import ConfigError
from spire_pqc.spiffeid import SpiffeId, TrustDomain
from spire_pqc.svid import X509Svid

HEADER = dict(SECURITY_METADATA)


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


def _config(directory: Path, identities: int, connections: int = 256) -> AgentConfig:
    # The benchmark process is one uid holding one connection and stream per simulated workload: lift
    # the per-uid caps above that (at the defaults, 1,000 streams waited forever on the 256-connection cap).
    entries = [
        {"spiffe_id": f"spiffe://bench.example/workload/{i}", "selectors": [f"unix:uid:{os.getuid()}"]}
        for i in range(identities)
    ]
    return parse(
        {
            "agent": {"socket_path": str(directory / "agent.sock"), "shutdown_grace": "1s"},
            "limits": {
                "max_connections_per_uid": max(256, connections + 16),
                "max_streams_per_uid": max(1024, connections + 16),
            },
            "source": {
                "kind": "dev",
                "dev": {"trust_domain": "bench.example", "svid_ttl": "1h", "entries": entries},
            },
        }
    )


async def rotation_fanout(streams: int) -> FanoutResult:
    directory = Path(tempfile.mkdtemp(prefix="spa-bench-", dir="/tmp"))
    try:
        async with Agent(_config(directory, 1, streams)) as agent:
            source = agent.source
            assert isinstance(source, DevIdentitySource)
            channels = [Channel(path=str(agent.socket_path)) for _ in range(streams)]
            first = [asyncio.Event() for _ in range(streams)]
            received = [0.0] * streams

            async def watch(index: int) -> None:
                async with channels[index].request(
                    FETCH_X509_SVID, Cardinality.UNARY_STREAM,
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
                    FETCH_HYBRID_SVIDS, Cardinality.UNARY_STREAM,
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


@dataclass(frozen=True)
class RestartResult:
    identities: int
    fresh_ms: float  # start -> every hybrid SVID, nothing kept (baseline)
    restored_ms: float  # the same after a restart on the kept state directory
    open_ms: float  # loading and checking the state directory alone (part of restored_ms)
    bytes_per_identity: float  # on disk

    @property
    def ratio(self) -> float:
        return self.restored_ms / self.fresh_ms


class _SameSvids:
    """Every caller holds the same N classical SVIDs, before and after a restart (as with SPIRE)."""

    name = "bench-same-svids"

    def __init__(self, svids: tuple[X509Svid, ...], bundles: dict[TrustDomain, bytes]) -> None:
        self._state: Broadcast[X509State] = Broadcast()
        self._svids, self._bundles = svids, bundles

    @property
    def ready(self) -> bool:
        return self._state.value is not None

    async def start(self) -> None:
        self._state.publish(X509State(self._svids, self._bundles))

    async def close(self) -> None:
        self._state.close()

    async def watch(self, caller: Caller) -> AsyncIterator[X509State]:
        async for state in self._state.updates():
            yield state

    def watch_service(self, spiffe_id: SpiffeId, selectors: Sequence[str]) -> AsyncIterator[X509State]:
        raise ConfigError("this identity source serves no tunnels")

    def local_ca_client(self) -> None:
        return None  # the agent is given its CA client


async def restart(identities: int) -> RestartResult:
    directory = Path(tempfile.mkdtemp(prefix="spa-bench-", dir="/tmp"))
    try:
        td = TrustDomain("bench.example")
        authority = DevAuthority.generate(td)
        issued = [
            authority.classical.issue_svid(SpiffeId.parse(f"spiffe://bench.example/w/{i}"))
            for i in range(identities)
        ]
        svids = tuple(X509Svid(sid, (cert,), key) for sid, (cert, key) in zip(
            (SpiffeId.parse(f"spiffe://bench.example/w/{i}") for i in range(identities)), issued, strict=True
        ))  # fmt: skip
        bundles = {td: X509Bundle(td, [authority.classical.certificate]).to_der()}
        ca = LocalCAClient(PQCIssuer(authority.hierarchy.intermediate, td, BundleSet.from_certificates(
            [authority.classical.certificate])))  # fmt: skip
        config = _config(directory, 1)

        async def until_all_served() -> float:
            started = time.perf_counter()
            agent = Agent(config, source=_SameSvids(svids, bundles), ca_client=ca, first_pqc_wait=60.0)
            async with agent:
                channel = Channel(path=str(agent.socket_path))
                try:
                    async with channel.request(
                        FETCH_HYBRID_SVIDS, Cardinality.UNARY_STREAM,
                        hy.HybridSVIDRequest, hy.HybridSVIDResponse, metadata=HEADER,
                    ) as stream:  # fmt: skip
                        await stream.send_message(hy.HybridSVIDRequest(), end=True)
                        while (reply := await stream.recv_message()) is not None:
                            if len(reply.svids) == identities:
                                break
                        elapsed = time.perf_counter() - started
                        await stream.cancel()
                finally:
                    channel.close()
            return elapsed * 1000

        fresh = await until_all_served()
        restored = await until_all_served()
        assert config.state_dir is not None
        state = StateDirectory(config.state_dir)
        opened = time.perf_counter()
        await asyncio.to_thread(state.open)
        open_ms = (time.perf_counter() - opened) * 1000
        state.close()
        size = sum(p.stat().st_size for p in config.state_dir.glob(f"*{SUFFIX}"))
        return RestartResult(identities, fresh, restored, open_ms, size / identities)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def run(stream_counts: tuple[int, ...] = (10, 100, 1000), identities: int = 100) -> str:
    """Run the benchmarks and return a printable report."""

    async def all_of_them() -> tuple[list[FanoutResult], RssResult, RestartResult]:
        # Memory first, before the 1,000-stream run inflates the heap.
        rss = await rss_with_identities(identities)
        kept = await restart(identities)
        return [await rotation_fanout(n) for n in stream_counts], rss, kept

    fanouts, rss, kept = asyncio.run(all_of_them())
    lines = ["agent: rotation -> last of N FetchX509SVID streams updated (in-process clients)"]
    lines += [f"  N={f.streams:5d}  last {f.last_ms:8.1f} ms  median {f.median_ms:8.1f} ms" for f in fanouts]
    lines.append(
        f"agent: RSS {rss.baseline_kib} KiB before start, {rss.serving_kib} KiB serving, "
        f"{rss.provisioned_kib} KiB with {rss.identities} identities provisioned; "
        f"Python heap +{rss.heap_growth_kib:.0f} KiB ({rss.per_identity_kib:.1f} KiB per identity)"
    )
    lines.append(
        f"agent: start -> {kept.identities} hybrid SVIDs served: {kept.fresh_ms:.0f} ms with nothing kept "
        f"(keys generated, in-process CA asked; baseline), {kept.restored_ms:.0f} ms restarted on the kept "
        f"state directory (ratio {kept.ratio:.2f}; loading it alone {kept.open_ms:.0f} ms; "
        f"{kept.bytes_per_identity / 1024:.1f} KiB per identity on disk)"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    print(run())
