"""`spire-pqc agent run` processes without SPIRE: dev agents sharing a dev CA, one agent per state
directory, and a start with an unreachable PQC CA.

Two dev agents are two nodes of one dev trust domain when they share ``source.dev.ca_dir``: an outbound
tunnel on one and an inbound tunnel on the other carry data between them, also after a graceful
restart of one and a ``kill -9`` of the other (each keeps the shared dev CA).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import time
from pathlib import Path

import pytest

from tests.integration.spire import PqcAgent, free_port, short_tempdir
from tests.unit.agent._tunnels import hash_handler, local_server, send_and_hash

CLIENT_ID = "spiffe://example.org/svc/client"
SERVER_ID = "spiffe://example.org/svc/server"
NOBODY = "unix:uid:4294967294"  # a selector no process has: these identities serve the tunnels only
MB = 1 << 20

DEV_AGENT = """
[agent]
socket_path = "{dir}/agent.sock"
shutdown_grace = "10s"
[source]
kind = "dev"
[source.dev]
trust_domain = "example.org"
ca_dir = "{ca_dir}"
[[source.dev.entries]]
spiffe_id = "{spiffe_id}"
selectors = ["{nobody}"]
[health]
listen_address = "127.0.0.1:{health}"
"""
OUTBOUND = """
[[tunnel.outbound]]
name = "to-b"
listen = "127.0.0.1:{listen}"
remote = "127.0.0.1:{remote}"
peer_ids = ["{peer}"]
spiffe_id = "{spiffe_id}"
allowed_uids = [UID]
""".replace("UID", str(os.getuid()))  # the tests connect to the tunnel as themselves
INBOUND = """
[[tunnel.inbound]]
name = "from-a"
listen = "127.0.0.1:{listen}"
target = "127.0.0.1:{target}"
allowed_ids = ["{peer}"]
spiffe_id = "{spiffe_id}"
"""


def _dev_agent(directory: Path, ca_dir: Path, spiffe_id: str, tunnel: str) -> PqcAgent:
    health = free_port()
    config = DEV_AGENT.format(dir=directory, ca_dir=ca_dir, spiffe_id=spiffe_id, nobody=NOBODY, health=health)
    return PqcAgent(directory, config + tunnel, health)


async def _ready(*agents: PqcAgent) -> None:
    for agent in agents:
        await asyncio.to_thread(agent.wait_ready)


async def _transfer(port: int, total: int) -> None:
    sent, received, size = await asyncio.wait_for(send_and_hash(port, total), 120)
    assert size == total and received == sent, "the tunnel pair did not carry the data intact"


@pytest.mark.asyncio
async def test_two_dev_agents_sharing_a_dev_ca_carry_a_tunnel_across_restarts() -> None:
    workdir = short_tempdir()
    ca_dir = workdir / "shared-dev-ca"  # absent: both agents start at once on it
    out_port, in_port = free_port(), free_port()
    async with local_server(hash_handler) as target:
        outbound = OUTBOUND.format(listen=out_port, remote=in_port, peer=SERVER_ID, spiffe_id=CLIENT_ID)
        inbound = INBOUND.format(listen=in_port, target=target, peer=CLIENT_ID, spiffe_id=SERVER_ID)
        a = _dev_agent(workdir / "a", ca_dir, CLIENT_ID, outbound)
        b = _dev_agent(workdir / "b", ca_dir, SERVER_ID, inbound)
        try:
            a.start(wait_live=False)
            b.start(wait_live=False)
            await _ready(a, b)
            await _transfer(out_port, 16 * MB)

            # A graceful restart of one and a crash of the other: both keep the shared dev CA.
            assert await asyncio.to_thread(a.stop) == 0
            await asyncio.to_thread(b.kill)
            a.start(wait_live=False)
            b.start(wait_live=False)
            await _ready(a, b)
            await _transfer(out_port, 4 * MB)
            assert a.metric("spire_pqc_agent_tunnel_connections_total", tunnel="to-b", result="accepted") == 1
            assert (
                b.metric("spire_pqc_agent_tunnel_connections_total", tunnel="from-a", result="refused") == 0
            )
            logs = a.log_text().splitlines() + b.log_text().splitlines()
            assert sum(f"dev CAs kept in {ca_dir}" in line for line in logs) == 4  # two starts each, one CA
        finally:
            for agent in (a, b):
                await asyncio.to_thread(agent.stop)
            shutil.rmtree(workdir, ignore_errors=True)


@pytest.mark.asyncio
async def test_a_second_agent_on_the_same_state_directory_is_refused() -> None:
    workdir = short_tempdir()
    first = _dev_agent(workdir, workdir / "dev-ca", CLIENT_ID, "")
    second = PqcAgent(workdir / "second", first.config, free_port())  # same socket and state directory
    try:
        await asyncio.to_thread(first.start)
        await asyncio.to_thread(second.start, wait_live=False)
        assert second.proc is not None
        assert await asyncio.to_thread(second.proc.wait, 60) == 1
        assert "is in use by another running spire-pqc agent (pid" in second.log_text()
        # The first agent keeps its socket (the second stopped before touching it) and serves.
        assert (workdir / "agent.sock").exists() and first.probe("/live") == 200
    finally:
        await asyncio.to_thread(first.stop)
        await asyncio.to_thread(second.stop)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.mark.asyncio
async def test_an_unreachable_pqc_ca_at_start_never_stops_the_agent() -> None:
    """It used to exit after 10.5 s ('no PQC credentials yet for …') when a tunnel had no credentials."""
    workdir = short_tempdir()
    health, tunnel_port = free_port(), free_port()
    config = f"""
[agent]
socket_path = "{workdir}/agent.sock"
[source]
kind = "spire"
[source.spire]
admin_socket_path = "{workdir}/no-spire-agent/admin.sock"
workload_socket_path = "{workdir}/no-spire-agent/api.sock"
[ca]
address = "127.0.0.1:1"
[health]
listen_address = "127.0.0.1:{health}"
[[tunnel.outbound]]
name = "legacy"
listen = "127.0.0.1:{tunnel_port}"
remote = "127.0.0.1:1"
peer_ids = ["{SERVER_ID}"]
spiffe_id = "{CLIENT_ID}"
selectors = ["unix:uid:1001"]
allowed_uids = [{os.getuid()}]
"""
    agent = PqcAgent(workdir, config, health)
    try:
        await asyncio.to_thread(agent.start)
        assert agent.probe("/ready") == 503
        for _ in range(5):
            reader, writer = await asyncio.open_connection("127.0.0.1", tunnel_port)
            with contextlib.suppress(ConnectionResetError):  # a reset, or at least no answer
                assert await asyncio.wait_for(reader.read(), 10) == b""
            writer.close()
        assert (
            agent.metric("spire_pqc_agent_tunnel_connections_total", tunnel="legacy", result="unavailable")
            == 5
        )
        while time.monotonic() - agent.started_at < 12:  # past the old 10.5 s exit
            assert agent.proc is not None and agent.proc.poll() is None, agent.log_tail()
            await asyncio.sleep(0.2)
        assert agent.probe("/live") == 200 and agent.probe("/ready") == 503
        messages = [json.loads(line)["msg"] for line in agent.log_text().splitlines() if line.startswith("{")]
        assert sum("refusing connections, no credentials yet" in m for m in messages) == 1
        assert sum("tunnel identity" in m and "unavailable" in m for m in messages) == 1  # not once a second
    finally:
        assert await asyncio.to_thread(agent.stop) == 0
        shutil.rmtree(workdir, ignore_errors=True)
