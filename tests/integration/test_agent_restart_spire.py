"""Node-agent restarts with real SPIRE v1.15.3 and the spire-pqc plugin: nothing interrupts PQC credentials.

1. ``kill -9`` of the spire-pqc agent while workloads stream (three processes on our SDK, one on
   py-spiffe, each its own registration entry, attested by SPIRE through the Delegated Identity API):
   restarted, it serves every workload its hybrid SVID again within seconds — the very credentials it
   had, from its state directory — with no request to the PQC CA and zero duplicate refusals (the
   server's log and the agent's metrics). Then the negative control: with the state directory wiped,
   the same restart meets one duplicate refusal per identity, each counted once (never retried),
   logged once by the CA, and reported to the workloads.
2. Two SPIRE nodes (two spire-agents with their own data directories, sockets and join tokens, one
   spire-server) and two spire-pqc agents on the SPIRE source: an outbound tunnel on node 1 to an
   inbound tunnel on node 2. Data stays sha256-intact through rotations (short TTL), a graceful restart
   of one spire-pqc agent (its open transfer drains), a ``kill -9`` of the other, a restart of each
   spire-agent and of spire-server under open transfers.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Summary
from tests.integration.spire import (
    PqcAgent,
    SpireAgent,
    SpireServer,
    cleanup,
    free_port,
    running,
    short_tempdir,
)
from tests.integration.test_end_to_end_spire import _pqc_ca
from tests.unit.agent._tunnels import hash_handler, local_server, send_and_hash

pytestmark = [pytest.mark.spire, pytest.mark.timeout(900)]

TD = "example.org"
MB = 1 << 20
SECURITY_EVENT = "security event"

SDK_WORKLOAD = textwrap.dedent(
    """
    import asyncio, json, logging, sys, time
    from spire_pqc.workload.source import HybridX509Source

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")

    async def main():
        source = HybridX509Source(address=sys.argv[1], retry_initial=0.05, retry_max=0.25)
        await source.start()
        while True:
            svid = source.svid  # verified by the source before it is applied
            print(json.dumps({"t": time.monotonic(), "version": source.version, "id": str(svid.spiffe_id),
                              "classical": svid.classical_chain[0].serial_number,
                              "pqc": svid.pqc_chain[0].serial_number}), flush=True)
            await source.wait_until_updated()

    asyncio.run(main())
    """
)
PYSPIFFE_WORKLOAD = textwrap.dedent(
    """
    import json, sys, threading, time
    from spiffe import X509Source

    source = X509Source(socket_path=sys.argv[1], timeout_in_seconds=60)
    count = [0]

    def updated():
        count[0] += 1
        svid = source.svid
        print(json.dumps({"t": time.monotonic(), "version": count[0], "id": str(svid.spiffe_id),
                          "classical": svid.leaf.serial_number}), flush=True)

    updated()
    source.subscribe_for_updates(updated)
    threading.Event().wait()
    """
)


@dataclass
class Workload:
    """A workload process (uid 0, its own primary gid, so SPIRE's unix attestor tells them apart)."""

    name: str
    gid: int
    script: str
    lines: list[dict[str, Any]] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    proc: subprocess.Popen[str] | None = None
    readers: list[threading.Thread] = field(default_factory=list)

    @property
    def spiffe_id(self) -> str:
        return f"spiffe://{TD}/workload/{self.name}"

    def start(self, socket: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", self.script, f"unix://{socket}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, group=self.gid, extra_groups=[],
        )  # fmt: skip
        self.readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, True), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, False), daemon=True),
        ]
        for reader in self.readers:
            reader.start()

    def _read(self, stream: Any, json_lines: bool) -> None:
        for line in stream:
            if json_lines:
                self.lines.append(json.loads(line))
            else:
                self.stderr.append(line.rstrip())

    async def update_after(self, since: float, timeout: float = 60) -> dict[str, Any]:
        """The first update this workload received after monotonic time ``since``."""
        deadline = time.monotonic() + timeout
        while True:
            fresh = [line for line in self.lines if line["t"] > since]
            if fresh:
                return fresh[0]
            assert self.proc is not None and self.proc.poll() is None, (
                f"{self.name} exited: {self.stderr[-5:]}"
            )
            assert time.monotonic() < deadline, (
                f"{self.name}: no update within {timeout}s: {self.stderr[-5:]}"
            )
            await asyncio.sleep(0.02)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for reader in self.readers:
            reader.join(10)  # they end at the pipes' end of file
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def _server(workdir: Path, endpoint_port: int, delegates: list[str]) -> SpireServer:
    pqc_dir = workdir / "pqc"
    _pqc_ca(pqc_dir)
    return SpireServer(
        workdir,
        composer_data={
            "intermediate_key_path": str(pqc_dir / "intermediate.key.pem"),
            "intermediate_cert_path": str(pqc_dir / "intermediate.crt.pem"),
            "pqc_bundle_path": str(pqc_dir / "root.crt.pem"),
            "endpoint_listen_address": f"127.0.0.1:{endpoint_port}",
            "authorized_agents": delegates,  # the default in-memory ledger: its rules are all we need
        },
    )


async def _entry(server: SpireServer, parent: str, spiffe_id: str, selectors: list[str], ttl: int) -> None:
    args = ["entry", "create", "-parentID", parent, "-spiffeID", spiffe_id, "-x509SVIDTTL", str(ttl)]
    for selector in selectors:
        args += ["-selector", selector]
    await asyncio.to_thread(server.cli, *args)


def _pqc_agent(
    workdir: Path, spire_agent: SpireAgent, delegate: str, endpoint_port: int, tunnels: str = ""
) -> PqcAgent:
    health = free_port()
    config = f"""
[agent]
socket_path = "{workdir}/pqc.sock"
state_dir = "{workdir}/pqc-state"
shutdown_grace = "15s"
[source]
kind = "spire"
[source.spire]
admin_socket_path = "{spire_agent.admin_socket}"
workload_socket_path = "{spire_agent.socket}"
agent_id = "{delegate}"
[ca]
address = "127.0.0.1:{endpoint_port}"
timeout = "5s"
[pqc]
retry_initial = "0.2s"
retry_max = "1s"
[health]
listen_address = "127.0.0.1:{health}"
{tunnels}"""
    return PqcAgent(workdir, config, health)


def _security_events(server: SpireServer) -> int:
    return server.log_text().count(SECURITY_EVENT)


@pytest.mark.asyncio
async def test_kill_9_under_streaming_workloads_keeps_their_pqc_credentials(summary: Summary) -> None:
    workdir = short_tempdir()
    node = f"spiffe://{TD}/node1"
    delegate = f"spiffe://{TD}/spire-pqc/agent"
    endpoint_port = free_port()
    server = _server(workdir, endpoint_port, [delegate])
    spire_agent = SpireAgent(workdir / "node1", server, authorized_delegates=[delegate])
    workloads = [Workload(f"sdk{i}", 50001 + i, SDK_WORKLOAD) for i in range(3)]
    workloads.append(Workload("pyspiffe", 50009, PYSPIFFE_WORKLOAD))
    sdk = workloads[:3]
    agent = _pqc_agent(workdir / "pqc", spire_agent, delegate, endpoint_port)
    try:
        with running(server, spire_agent, agent):
            await asyncio.to_thread(server.start)
            token = await asyncio.to_thread(server.join_token, node)
            await _entry(server, node, delegate, ["unix:uid:0", "unix:gid:0"], 3600)
            for w in workloads:  # long-lived SVIDs: no rotation may blur "the same credentials"
                await _entry(server, node, w.spiffe_id, ["unix:uid:0", f"unix:gid:{w.gid}"], 900)
            await asyncio.to_thread(spire_agent.start, token)
            assert (await asyncio.to_thread(spire_agent.fetch_x509, workdir / "fetched")).returncode == 0
            await asyncio.to_thread(agent.start)
            socket = workdir / "pqc" / "pqc.sock"
            for w in workloads:
                w.start(socket)
            before = {w.name: await w.update_after(0, timeout=120) for w in workloads}
            for w in workloads:
                assert before[w.name]["id"] == w.spiffe_id
            # Every identity (the py-spiffe one too) has its PQC credentials, kept on disk.
            await asyncio.to_thread(
                agent.wait_for,
                lambda: (
                    agent.metric("spire_pqc_agent_pqc_issuance_total", result="success") == len(workloads)
                ),
                "issuance for every workload",
            )

            # 1. kill -9 while the workloads stream; they notice and retry; restart.
            await asyncio.to_thread(agent.kill)
            await asyncio.sleep(1.0)
            await asyncio.to_thread(agent.start, wait_live=False)
            restarted = agent.started_at
            ready = asyncio.create_task(asyncio.to_thread(agent.wait_ready))
            again = {w.name: await w.update_after(restarted, timeout=60) for w in workloads}
            ready_s = await ready
            delays = {name: line["t"] - restarted for name, line in again.items()}
            for w in sdk:  # the very same classical SVID and PQC SVID: restored, not re-issued
                assert again[w.name]["classical"] == before[w.name]["classical"]
                assert again[w.name]["pqc"] == before[w.name]["pqc"]
            assert again["pyspiffe"]["classical"] == before["pyspiffe"]["classical"]
            assert agent.metric("spire_pqc_agent_pqc_issuance_total", result="success") == 0  # no CA request
            assert agent.metric("spire_pqc_agent_pqc_issuance_total", result="duplicate") == 0
            assert agent.metric("spire_pqc_agent_state_total", event="restored") == len(workloads)
            assert _security_events(server) == 0
            worst = max(delays.values())
            assert worst < 30, delays
            summary(
                "agent restart (real SPIRE)",
                f"kill -9 under {len(workloads)} streaming workloads: hybrid SVIDs back "
                + ", ".join(f"{n} {d:.2f}s" for n, d in sorted(delays.items()))
                + f" after the restart (process start); /ready after {ready_s:.2f}s; "
                "0 CA requests, 0 duplicate refusals",
            )

            # 2. Negative control: the state directory is lost. One duplicate refusal per identity,
            #    counted once, one security event each at the CA, reported to the workloads.
            await asyncio.to_thread(agent.kill)
            for record in (workdir / "pqc" / "pqc-state").glob("*.cred"):
                record.unlink()
            await asyncio.to_thread(agent.start)
            await asyncio.to_thread(
                agent.wait_for,
                lambda: (
                    agent.metric("spire_pqc_agent_pqc_issuance_total", result="duplicate") == len(workloads)
                ),
                "a duplicate refusal for every workload",
            )
            await asyncio.sleep(5)  # 5+ retry periods (retry_max 1 s): a blind retry would show now
            assert agent.metric("spire_pqc_agent_pqc_issuance_total", result="duplicate") == len(workloads)
            assert agent.metric("spire_pqc_agent_pqc_issuance_total", result="failure") == 0
            assert agent.metric("spire_pqc_agent_pqc_refused_identities") == len(workloads)
            assert _security_events(server) == len(workloads)
            assert agent.probe("/ready") == 503
            for w in sdk:
                assert any("duplicate" in line and "not retried" in line for line in w.stderr), w.stderr[-3:]
                assert w.proc is not None and w.proc.poll() is None
    finally:
        for w in workloads:
            w.stop()
        cleanup(workdir)


# --- two nodes, tunnels ------------------------------------------------------------------------


@dataclass
class TwoNodes:
    server: SpireServer
    spire_agents: tuple[SpireAgent, SpireAgent]
    pqc_agents: tuple[PqcAgent, PqcAgent]
    tunnel_port: int  # the outbound tunnel's plaintext listener on node 1

    async def transfer(self, total: int, *, pause: float = 0.0, timeout: float = 120) -> None:
        sent, received, size = await asyncio.wait_for(
            send_and_hash(self.tunnel_port, total, chunk=64 * 1024, pause=pause), timeout
        )
        assert size == total and received == sent, "the tunnel pair did not carry the data intact"

    def refused(self) -> tuple[float, float]:
        """Connections either tunnel refused for the peer's credentials or authorization."""
        a, b = self.pqc_agents
        name = "spire_pqc_agent_tunnel_connections_total"
        return a.metric(name, result="refused"), b.metric(name, result="refused")

    def issued(self) -> tuple[float, float]:
        a, b = self.pqc_agents
        name = "spire_pqc_agent_pqc_issuance_total"
        return a.metric(name, result="success"), b.metric(name, result="success")


@asynccontextmanager
async def two_nodes(target_port: int) -> AsyncIterator[TwoNodes]:
    workdir = short_tempdir()
    nodes = [f"spiffe://{TD}/node{i}" for i in (1, 2)]
    delegates = [f"spiffe://{TD}/spire-pqc/agent{i}" for i in (1, 2)]
    client, service = f"spiffe://{TD}/app/client", f"spiffe://{TD}/app/server"
    endpoint_port, tunnel_port, inbound_port = free_port(), free_port(), free_port()
    server = _server(workdir, endpoint_port, delegates)
    spire_agents = (
        SpireAgent(workdir / "node1", server, authorized_delegates=[delegates[0]]),
        SpireAgent(workdir / "node2", server, authorized_delegates=[delegates[1]]),
    )
    outbound = f"""
[[tunnel.outbound]]
name = "to-server"
listen = "127.0.0.1:{tunnel_port}"
remote = "127.0.0.1:{inbound_port}"
peer_ids = ["{service}"]
spiffe_id = "{client}"
selectors = ["unix:uid:1001"]
allowed_uids = [{os.getuid()}]
"""
    inbound = f"""
[[tunnel.inbound]]
name = "from-client"
listen = "127.0.0.1:{inbound_port}"
target = "127.0.0.1:{target_port}"
allowed_ids = ["{client}"]
spiffe_id = "{service}"
selectors = ["unix:uid:1002"]
"""
    pqc_agents = (
        _pqc_agent(workdir / "pqc1", spire_agents[0], delegates[0], endpoint_port, outbound),
        _pqc_agent(workdir / "pqc2", spire_agents[1], delegates[1], endpoint_port, inbound),
    )
    try:
        with running(server, *spire_agents, *pqc_agents):
            await asyncio.to_thread(server.start)
            for node, delegate, spire_agent, uid, app in zip(
                nodes, delegates, spire_agents, (1001, 1002), (client, service), strict=True
            ):
                token = await asyncio.to_thread(server.join_token, node)
                await _entry(server, node, delegate, ["unix:uid:0"], 3600)
                # 40 s SVIDs: SPIRE renews them every ~20 s, so the test sees rotations.
                await _entry(server, node, app, [f"unix:uid:{uid}"], 40)
                await asyncio.to_thread(spire_agent.start, token)
                assert (
                    await asyncio.to_thread(spire_agent.fetch_x509, spire_agent.workdir / "f")
                ).returncode == 0
            for pqc_agent in pqc_agents:
                await asyncio.to_thread(pqc_agent.start)
            for pqc_agent in pqc_agents:
                await asyncio.to_thread(pqc_agent.wait_ready, 120)
            yield TwoNodes(server, spire_agents, pqc_agents, tunnel_port)
    finally:
        cleanup(workdir)


async def _during(event: Any, transfer: Any) -> None:
    """Run a paced transfer and, once it is under way, the restart ``event`` (a blocking callable)."""
    task = asyncio.create_task(transfer)
    await asyncio.sleep(1.0)
    assert not task.done(), "the transfer ended before the event: make it longer"
    await asyncio.to_thread(event)
    await task


@pytest.mark.asyncio
async def test_two_spire_nodes_tunnel_survives_rotations_and_restarts(summary: Summary) -> None:
    async with local_server(hash_handler) as target, two_nodes(target) as nodes:
        a, b = nodes.pqc_agents
        spire1, spire2 = nodes.spire_agents
        await nodes.transfer(4 * MB)

        # Rotations: transfers keep going (and stay intact) until both sides rotated at least once.
        first = nodes.issued()
        deadline = time.monotonic() + 90
        while not all(now > then for now, then in zip(nodes.issued(), first, strict=True)):
            assert time.monotonic() < deadline, f"no rotation on both nodes: {first} -> {nodes.issued()}"
            await nodes.transfer(2 * MB, pause=0.02)

        assert nodes.refused() == (0, 0)

        # A graceful restart of the outbound agent under an open transfer: it drains, then restarts.
        await _during(a.stop, nodes.transfer(4 * MB, pause=0.05))
        await asyncio.to_thread(a.start)
        await asyncio.to_thread(a.wait_ready)
        await nodes.transfer(4 * MB)
        assert a.metric("spire_pqc_agent_state_total", event="restored") >= 1

        # kill -9 of the inbound agent: its open connections die with it; a new one works at once.
        # Until it has its credentials back (restored from its state directory once SPIRE gives it
        # the classical SVID again), it resets connections, which the outbound side counts as refused.
        assert nodes.refused() == (0, 0)
        await asyncio.to_thread(b.kill)
        await asyncio.to_thread(b.start, wait_live=False)
        restarted = b.started_at
        while True:
            try:
                await nodes.transfer(MB, timeout=30)
                break
            except (AssertionError, OSError, TimeoutError, ValueError):  # reset, not connected, no answer
                assert time.monotonic() - restarted < 60, b.log_tail()
                await asyncio.sleep(0.1)
        back_s = time.monotonic() - restarted
        refused_while_restarting = nodes.refused()

        # Each spire-agent and spire-server restart under an open transfer, then a new transfer.
        def restart_spire_agent(agent: SpireAgent) -> Any:
            def restart() -> None:
                agent.stop()
                agent.start(None)

            return restart

        def restart_server() -> None:
            nodes.server.stop()
            nodes.server.start()

        for event in (restart_spire_agent(spire1), restart_spire_agent(spire2), restart_server):
            await _during(event, nodes.transfer(6 * MB, pause=0.05, timeout=300))
            await nodes.transfer(2 * MB)

        # After the server restart, issuance works again: one more rotation on both sides.
        after_server = nodes.issued()
        deadline = time.monotonic() + 90
        while not all(now > then for now, then in zip(nodes.issued(), after_server, strict=True)):
            assert time.monotonic() < deadline, f"no rotation after the server restart: {nodes.issued()}"
            await nodes.transfer(MB, pause=0.02)

        for agent in (a, b):
            assert agent.metric("spire_pqc_agent_pqc_issuance_total", result="duplicate") == 0
        assert nodes.refused() == refused_while_restarting  # none through the SPIRE restarts
        assert b.metric("spire_pqc_agent_state_total", event="restored") >= 1
        assert _security_events(nodes.server) == 0
        summary(
            "agent restart (real SPIRE)",
            f"two nodes, tunnel pair: intact through rotations, a graceful restart (drained), kill -9 (new "
            f"connections {back_s:.2f}s after the restart), spire-agent x2 and spire-server restarts",
        )
