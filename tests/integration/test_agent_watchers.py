"""200 concurrent watchers (raw grpclib, one connection each) all receive a rotation."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from grpclib.client import Channel
from grpclib.const import Cardinality
from spiffe._proto import workload_pb2 as wl

from spire_pqc._internal import wire
from tests.conftest import Summary
from tests.unit.agent._support import HEADER, ME, running_agent

WATCHERS = 200


@pytest.mark.asyncio
async def test_200_watchers_all_receive_a_rotation(summary: Summary) -> None:
    async with running_agent() as agent:
        first_seen: list[asyncio.Event] = [asyncio.Event() for _ in range(WATCHERS)]
        rotated_at: list[float] = [0.0] * WATCHERS
        channels = [Channel(path=str(agent.socket_path)) for _ in range(WATCHERS)]

        async def watch(index: int) -> bytes:
            async with channels[index].request(
                wire.FETCH_X509_SVID, Cardinality.UNARY_STREAM,
                wl.X509SVIDRequest, wl.X509SVIDResponse, metadata=HEADER,
            ) as stream:  # fmt: skip
                await stream.send_message(wl.X509SVIDRequest(), end=True)
                first = await stream.recv_message()
                assert first is not None and first.svids[0].spiffe_id == ME
                first_seen[index].set()
                second = await stream.recv_message()
                rotated_at[index] = time.perf_counter()
                assert second is not None
                assert second.svids[0].x509_svid != first.svids[0].x509_svid
                await stream.cancel()
                return bytes(second.svids[0].x509_svid)

        try:
            tasks = [asyncio.create_task(watch(i)) for i in range(WATCHERS)]
            async with asyncio.timeout(60):
                ready = asyncio.gather(*(e.wait() for e in first_seen))
                waiting: list[asyncio.Future[Any]] = [ready, *tasks]
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                assert ready in done, [t.exception() for t in tasks if t.done()][:3]
                assert agent.metrics.value("spire_pqc_agent_open_streams", rpc="FetchX509SVID") == WATCHERS
                start = time.perf_counter()
                await agent.source.rotate_now()  # type: ignore[attr-defined]
                results = await asyncio.gather(*tasks)
        finally:
            for channel in channels:
                channel.close()
        assert len(set(results)) == 1  # everyone got the same, new SVID
        lag = max(rotated_at) - start
        summary("agent", f"rotation pushed to {WATCHERS} streams: last one updated after {lag * 1000:.0f} ms")
