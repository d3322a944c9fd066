"""The status document on /status and from `spire-pqc agent status`, against a running agent whose
tunnel pair carried a connection (so the rates and the average come from real channels)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys

import pytest

from spire_pqc import __version__
from spire_pqc.crypto.status import backend_info
from tests.unit.agent._tunnels import http_handler, local_server, tunnel_agent, tunnel_config
from tests.unit.agent.test_health import _get

GUIDE_FIELDS = {
    "pqc_enabled", "hybrid_mode", "algorithms", "keys_initialized", "channel_establishment_success_rate",
    "signature_verification_success_rate", "avg_channel_setup_latency_ms", "backend", "versions",
}  # fmt: skip


async def _cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "spire_pqc.cli", "agent", "status", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.asyncio
async def test_status_document_before_and_after_a_channel() -> None:
    async with local_server(http_handler) as target:
        config = dataclasses.replace(tunnel_config(target), health_address=("127.0.0.1", 0))
        async with tunnel_agent(config) as (agent, out, _):
            assert agent.health is not None
            port = agent.health.port
            code, body = await _get(port, "/status")
            assert code == 200
            before = json.loads(body)
            assert set(before) >= GUIDE_FIELDS
            assert before["pqc_enabled"] is True and before["hybrid_mode"] is True
            assert before["keys_initialized"] is True  # the tunnels' identities have PQC credentials
            assert before["algorithms"] == {"signature": "ML-DSA-65", "kem": "ML-KEM-768",
                                            "key_exchange": "X25519MLKEM768"}  # fmt: skip
            assert before["channel_establishment_success_rate"] is None  # nothing to compute it from yet
            assert before["avg_channel_setup_latency_ms"] is None
            assert before["backend"]["name"] == backend_info().backend
            assert before["versions"]["spire_pqc"] == __version__
            # The PQC CA as last seen (the dev source's in-process one): answering, its clock is ours.
            ca = before["ca"]
            assert ca["address"] == "in-process (dev source)" and ca["answering"] is True
            assert ca["last_success"] is not None and ca["last_error"] is None
            assert ca["ready_window_seconds"] == 90.0
            assert ca["clock_skew_seconds"] is not None and abs(ca["clock_skew_seconds"]) < 1

            reader, writer = await asyncio.open_connection("127.0.0.1", out.port)
            writer.write(b"GET / HTTP/1.0\r\n\r\n")
            await writer.drain()
            assert (await asyncio.wait_for(reader.read(), 10)).startswith(b"HTTP/1.0 200")
            writer.close()
            for _ in range(500):
                after = json.loads((await _get(port, "/status"))[1])
                if after["avg_channel_setup_latency_ms"] is not None:
                    break
                await asyncio.sleep(0.02)
            assert after["channel_establishment_success_rate"] == 1.0
            assert after["signature_verification_success_rate"] == 1.0
            assert 0 < after["avg_channel_setup_latency_ms"] < 20_000

            code, printed, err = await _cli("--address", f"127.0.0.1:{port}", "--json")
            assert code == 0, err
            assert json.loads(printed)["channel_establishment_success_rate"] == 1.0
            code, printed, err = await _cli("--address", f"127.0.0.1:{port}")
            assert code == 0, err
            assert "keys_initialized: True" in printed and "hybrid_mode: True" in printed


@pytest.mark.asyncio
async def test_status_cli_names_an_unreachable_agent() -> None:
    code, _, err = await _cli("--address", "127.0.0.1:9")
    assert code == 1
    assert err.startswith("spire-pqc: error: agent status at http://127.0.0.1:9/status: ")
    assert "Traceback" not in err
