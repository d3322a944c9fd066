"""/live, /ready and /metrics over real loopback TCP."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from spiffe._proto import workload_pb2 as wl

from spire_pqc._internal import wire
from spire_pqc.agent.health import HealthServer
from tests.unit.agent._support import HEADER, dev_config, first_reply, running_agent, short_dir


async def _get(port: int, path: str, method: str = "GET") -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = data.decode().partition("\r\n\r\n")
    return int(head.split(" ")[1]), body


@pytest.mark.asyncio
async def test_probes_and_metrics() -> None:
    config = dataclasses.replace(dev_config(short_dir()), health_address=("127.0.0.1", 0))
    async with running_agent(config) as agent:
        assert agent.health is not None
        port = agent.health.port
        assert await _get(port, "/live") == (200, "live\n")
        assert await _get(port, "/ready") == (200, "ready\n")
        await first_reply(agent.socket_path, wire.FETCH_X509_SVID, wl.X509SVIDRequest(),
                          wl.X509SVIDResponse, metadata=HEADER)  # fmt: skip
        status, body = await _get(port, "/metrics")
        assert status == 200
        assert 'spire_pqc_agent_identities_served_total{service="workload"} 1.0' in body
        assert "# TYPE spire_pqc_agent_pqc_issuance_total counter" in body
        assert "# TYPE spire_pqc_agent_rotation_lag_seconds histogram" in body
        assert "\nspire_pqc_agent_connections 0.0\n" in body  # the probe above closed its connection
        assert (await _get(port, "/nope"))[0] == 404
        assert (await _get(port, "/live", "POST"))[0] == 405
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"\xff\xfe garbage\r\n\r\n")
        await writer.drain()
        assert (await reader.read()).startswith(b"HTTP/1.1 400")
        writer.close()
        await writer.wait_closed()


@pytest.mark.asyncio
async def test_a_failing_handler_answers_500_instead_of_hanging(caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> str:
        raise PermissionError(13, "Permission denied")

    server = HealthServer("127.0.0.1", 0, live=lambda: True, ready=lambda: True, metrics=lambda: "",
                          status=broken)  # fmt: skip
    await server.start()
    try:
        assert await asyncio.wait_for(_get(server.port, "/status"), 10) == (
            500,
            "internal error (see the agent's log)\n",
        )
        assert await _get(server.port, "/live") == (200, "live\n")
    finally:
        await server.close()
    assert any("GET /status failed" in r.getMessage() for r in caplog.records)
