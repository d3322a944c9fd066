"""`spire-pqc bench rotation`: the agent's memory under rotation (dev source), with the heap's growth.

A node agent serves ``identities`` dev entries with a short SVID TTL; one workload watches every
identity on the HybridWorkload stream (so every rotation means new PQC keys, a PQC issuance by the
dev source's in-process CA and a push). The bench rotates (``rotate_now``) until ``rotations`` SVIDs
were renewed *and* the workload received each of them with its new PQC credentials, paced over
``seconds``. The agent's own rotation timer (half the TTL) keeps running too.

Each glibc arena setting of ``arenas`` (``agent.malloc_arena_max``; 0 is glibc's default, 8 per
core) runs in a child process of its own, one after the other, in the same run. Memory is the
child's RSS, read every tenth of the run, when ``warmup_seconds`` have passed (by then SVIDs, the
agent's per-SVID slots and the in-process CA's ledger entries expire as fast as new ones arrive) and
at the end; the growth between the last two must stay under 5 MB. tracemalloc is *not* running
then (its own bookkeeping - one interned traceback per distinct allocation stack - grows for as long
as it runs and would be counted as the agent's): after the measured rotations, ``traced`` more run
under tracemalloc, snapshots are taken halfway through and at the end, and the top allocation sites
by growth between the two are reported with tracemalloc's own memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from grpclib.client import Channel
from grpclib.const import Cardinality
from grpclib.exceptions import StreamTerminatedError

from spire_pqc._internal.malloc import ENV_VAR
from spire_pqc._proto.spire_pqc.workload.v1 import workload_pb2 as hy
from spire_pqc.agent.config import AgentConfig, parse
from spire_pqc.agent.server import Agent
from spire_pqc.agent.sources.dev import DevIdentitySource
from spire_pqc.bench.worker import JsonObject, Worker, serve
from spire_pqc.crypto import backend_name
from spire_pqc.errors import UnavailableError

HEADER = {"workload.spiffe.io": "true"}
_HYBRID = "/spire_pqc.workload.v1.HybridWorkload/FetchHybridSVIDs"


@dataclass(frozen=True)
class RotationSoak:
    backend: str
    arenas: int  # agent.malloc_arena_max of the run; 0: glibc's default (8 per core)
    identities: int
    ttl_s: float
    rotations: int  # SVIDs renewed and delivered with new PQC credentials
    elapsed_s: float
    warmup_rotations: int
    rss_warm_kib: int
    rss_end_kib: int
    heap_growth_kib: float  # tracemalloc, between its two snapshots (the traced rotations after the run)
    top_growth: tuple[str, ...]  # tracemalloc's top allocation sites by growth
    rss_trend: tuple[tuple[int, int], ...] = ()  # (rotations, RSS KiB), every tenth of the run
    traced_rotations: int = 0  # the rotations tracemalloc watched, after the measured ones
    tracemalloc_kib: int = 0  # tracemalloc's own memory at its end snapshot

    @property
    def rss_growth_mib(self) -> float:
        return (self.rss_end_kib - self.rss_warm_kib) / 1024


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def _config(directory: Path, identities: int, ttl_s: float, arenas: int = 0) -> AgentConfig:
    entries = [
        {"spiffe_id": f"spiffe://bench.example/rotating/{i}", "selectors": [f"unix:uid:{os.getuid()}"]}
        for i in range(identities)
    ]
    return parse(
        {
            "agent": {
                "socket_path": str(directory / "agent.sock"),
                "shutdown_grace": "1s",
                # 0: glibc's default, which the worker's environment (MALLOC_ARENA_MAX) spells out.
                "malloc_arena_max": arenas or 1,
            },
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


async def _rotate(
    source: DevIdentitySource,
    watcher: _Watcher,
    identities: int,
    until: int,
    pace: float,
    on_round: Callable[[int], None],
) -> None:
    """Rotate until the workload received ``until`` rotations (beyond its first SVIDs), a round of
    ``identities`` every ``pace`` seconds at most; ``on_round(done)`` before each round."""
    while watcher.delivered - identities < until:
        on_round(watcher.delivered - identities)
        round_started = time.monotonic()
        target = watcher.delivered + identities
        await source.rotate_now()
        await watcher.until(target, timeout=120)
        await asyncio.sleep(max(0.0, pace - (time.monotonic() - round_started)))


async def _soak(
    rotations: int, identities: int, ttl_s: float, seconds: float, warmup_seconds: float, traced: int,
    arenas: int,
) -> RotationSoak:  # fmt: skip
    directory = Path(tempfile.mkdtemp(prefix="spa-rot-", dir="/tmp"))
    try:
        async with Agent(_config(directory, identities, ttl_s, arenas)) as agent:
            source = agent.source
            assert isinstance(source, DevIdentitySource)
            watcher = _Watcher(agent.socket_path, identities)
            task = asyncio.create_task(watcher.run())
            try:
                await watcher.until(identities, timeout=120)
                started = time.monotonic()
                pace = seconds / max(1, rotations // identities)
                warm: list[tuple[int, int]] = []
                trend: list[tuple[int, int]] = []

                def measured(done: int) -> None:
                    if done >= len(trend) * rotations / 10:
                        trend.append((done, _rss_kib()))
                    if not warm and time.monotonic() - started >= warmup_seconds:
                        warm.append((done, _rss_kib()))

                await _rotate(source, watcher, identities, rotations, pace, measured)
                elapsed = time.monotonic() - started
                done = watcher.delivered - identities
                end_rss = _rss_kib()
                if not warm:  # a run shorter than its warm-up: measure from the first tenth
                    warm.append(trend[min(1, len(trend) - 1)])
                # The traced stretch: new rotations only, so the first snapshot already holds a
                # steady-state working set and only what accumulates after it shows as growth.
                tracemalloc.start(10)
                half = done + max(identities, traced // 2)
                await _rotate(source, watcher, identities, half, pace, lambda _: None)
                before = tracemalloc.take_snapshot()
                await _rotate(
                    source, watcher, identities, done + max(2 * identities, traced), pace, lambda _: None
                )
                after = tracemalloc.take_snapshot()
                traced_done = watcher.delivered - identities - done
                own = tracemalloc.get_tracemalloc_memory()
                heap_growth = sum(st.size_diff for st in after.compare_to(before, "filename")) / 1024
                top = tuple(str(st) for st in after.compare_to(before, "lineno")[:10])
            finally:
                tracemalloc.stop()
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, StreamTerminatedError):
                    await task
                watcher.close()
        return RotationSoak(
            backend=backend_name(),
            arenas=arenas,
            identities=identities,
            ttl_s=ttl_s,
            rotations=done,
            elapsed_s=elapsed,
            warmup_rotations=warm[0][0],
            rss_warm_kib=warm[0][1],
            rss_end_kib=end_rss,
            heap_growth_kib=heap_growth,
            top_growth=top,
            rss_trend=(*trend, (done, end_rss)),
            traced_rotations=traced_done,
            tracemalloc_kib=own // 1024,
        )
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _prepare_worker() -> tuple[JsonObject, Callable[[JsonObject], JsonObject]]:
    def handle(request: JsonObject) -> JsonObject:
        soak = asyncio.run(
            _soak(
                int(request["rotations"]),
                int(request["identities"]),
                float(request["ttl_s"]),
                float(request["seconds"]),
                float(request["warmup_seconds"]),
                int(request["traced"]),
                int(request["arenas"]),
            )
        )
        return dataclasses.asdict(soak)

    return {"backend": backend_name()}, handle


def _from_json(data: JsonObject) -> RotationSoak:
    data = dict(data)
    data["top_growth"] = tuple(data["top_growth"])
    data["rss_trend"] = tuple((int(a), int(b)) for a, b in data["rss_trend"])
    return RotationSoak(**data)


def run(
    *,
    rotations: int = 10_000,
    identities: int = 10,
    ttl_s: float = 4.0,
    seconds: float = 240.0,
    warmup_seconds: float = 90.0,
    traced: int | None = None,
    arenas: Sequence[int] = (0, 1),
) -> tuple[RotationSoak, ...]:
    """One soak per arena setting, each in a child process of its own, one after the other."""
    if rotations < 1 or identities < 1 or ttl_s <= 0:
        raise ValueError("rotations and identities must be >= 1, ttl > 0")
    if not arenas or any(a < 0 for a in arenas):
        raise ValueError("arenas: one or more counts >= 1, or 0 for glibc's default")
    request = {
        "rotations": rotations, "identities": identities, "ttl_s": ttl_s, "seconds": seconds,
        "warmup_seconds": warmup_seconds, "traced": traced if traced is not None else max(rotations // 10, 1),
    }  # fmt: skip
    results = []
    for count in arenas:
        env = dict(os.environ)
        env.pop(ENV_VAR, None)
        if count == 0:  # glibc's default, spelled out (the agent's own setting defers to it)
            env[ENV_VAR] = str(8 * (os.cpu_count() or 1))
        print(f"bench rotation: arenas {count or 'glibc default'}", file=sys.stderr, flush=True)
        with Worker("spire_pqc.bench.rotation", ["--worker"], env=env) as worker:
            if worker.unavailable is not None:
                raise UnavailableError(f"bench rotation: {worker.unavailable}")
            results.append(_from_json(worker.ask({**request, "arenas": count})))
    return tuple(results)


def format_report(soaks: Sequence[RotationSoak]) -> str:
    lines = []
    for soak in soaks:
        arenas = f"malloc arenas {soak.arenas}" if soak.arenas else "malloc arenas: glibc default"
        source = "spire source" if soak.backend.startswith("spire") else f"dev source, backend {soak.backend}"
        lines += [
            f"spire-pqc bench rotation ({source}, {arenas}): {soak.rotations} "
            f"rotations of {soak.identities} identities (SVID TTL {soak.ttl_s:g} s) in {soak.elapsed_s:.0f} s, "
            "each delivered with new PQC credentials on a hybrid stream",
            f"  RSS after warm-up ({soak.warmup_rotations} rotations): {soak.rss_warm_kib / 1024:.1f} MiB; at "
            f"the end {soak.rss_end_kib / 1024:.1f} MiB; growth {soak.rss_growth_mib:+.2f} MiB "
            f"over {soak.rotations - soak.warmup_rotations} rotations (tracemalloc off)",
            "  RSS every tenth of the run: "
            + ", ".join(f"{done}: {rss / 1024:.1f}" for done, rss in soak.rss_trend)
            + " (rotations: MiB)",
        ]
        if not soak.traced_rotations:
            lines.append("  (tracemalloc: not run - the agent is another process)")
            continue
        lines += [
            f"  then {soak.traced_rotations} rotations under tracemalloc: Python heap growth between its "
            f"snapshots (halfway, end) {soak.heap_growth_kib:+.0f} KiB; tracemalloc's own memory "
            f"{soak.tracemalloc_kib / 1024:.1f} MiB",
            "  tracemalloc top allocation sites by growth:",
        ]
        lines += [f"    {line}" for line in soak.top_growth]
    return "\n".join(lines)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="bench rotation worker (internal)")
    parser.add_argument("--worker", action="store_true", required=True)
    parser.parse_args()
    sys.exit(serve(_prepare_worker))
