"""End to end with real SPIRE v1.15.3 and every spire-pqc part in its real place.

spire-server runs the spire-pqc CredentialComposer with its PQC CA endpoint; spire-agent serves the
Delegated Identity API to the spire-pqc node agent; the spire-pqc agent obtains each workload's PQC
SVID and KEM certificate from the endpoint with its own SPIRE-issued SVID; the workload (this test
process, registered by unix:uid and attested by PID) receives a hybrid SVID over our socket that
passes full hybrid verification, and — with a short SVID TTL — sees classical and PQC credentials
rotate together. The fault test stops and restarts spire-agent and spire-server (which hosts the
PQC CA endpoint) under a running spire-pqc agent.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from spiffe import WorkloadApiClient
from spiffe.workloadapi.errors import FetchX509SvidError

from spire_pqc.agent.config import AgentConfig, parse
from spire_pqc.agent.server import Agent
from spire_pqc.bundle import BundleSet
from spire_pqc.svid import HybridSvid
from spire_pqc.workload.source import HybridX509Source
from spire_pqc.x509 import certs
from tests.integration.spire import SpireAgent, SpireServer, cleanup, free_port, running, short_tempdir

pytestmark = [pytest.mark.spire, pytest.mark.timeout(600)]

TD = "example.org"
NODE = f"spiffe://{TD}/node1"
DELEGATE = f"spiffe://{TD}/spire-pqc/agent"
WORKLOAD = f"spiffe://{TD}/app"
CA_READY_WINDOW = 5  # seconds (pqc.ca_ready_window)


def _pqc_ca(directory: Path) -> None:
    cli = [sys.executable, "-m", "spire_pqc.cli", "ca"]
    subprocess.run(
        [*cli, "init", "--trust-domain", TD, "--out-dir", str(directory), "--no-encryption"], check=True
    )
    subprocess.run(
        [*cli, "intermediate", "--trust-domain", TD, "--root-dir", str(directory), "--out-dir", str(directory),
         "--no-encryption"],
        check=True,
    )  # fmt: skip


@dataclass
class Stack:
    server: SpireServer
    spire_agent: SpireAgent
    config: AgentConfig
    agent: Agent
    classical: BundleSet
    pqc: BundleSet

    def workload(self, source: HybridX509Source) -> HybridSvid:
        return next(s for s in source.svids if str(s.spiffe_id) == WORKLOAD)

    async def next_rotation(
        self, source: HybridX509Source, after_serial: int, timeout: float = 120
    ) -> HybridSvid:
        """Wait for a hybrid SVID whose classical leaf differs from ``after_serial``."""
        deadline = time.monotonic() + timeout
        while True:
            current = next((s for s in source.svids if str(s.spiffe_id) == WORKLOAD), None)
            if current is not None and current.classical_chain[0].serial_number != after_serial:
                return current
            remaining = deadline - time.monotonic()
            assert remaining > 0, "no rotation delivered"
            try:
                await source.wait_until_updated(timeout=min(remaining, 10.0))
            except TimeoutError:
                continue


@asynccontextmanager
async def spire_stack(ttl_seconds: int = 30, *, ca_ttl: str = "") -> AsyncIterator[Stack]:
    workdir = short_tempdir()
    pqc_dir = workdir / "pqc"
    _pqc_ca(pqc_dir)
    endpoint_port = free_port()
    server = SpireServer(
        workdir,
        composer_data={
            "intermediate_key_path": str(pqc_dir / "intermediate.key.pem"),
            "intermediate_cert_path": str(pqc_dir / "intermediate.crt.pem"),
            "pqc_bundle_path": str(pqc_dir / "root.crt.pem"),
            "endpoint_listen_address": f"127.0.0.1:{endpoint_port}",
            "authorized_agents": [DELEGATE],
            "ledger_dsn": f"sqlite://{workdir / 'ledger.db'}",
        },
        ca_ttl=ca_ttl,
    )
    spire_agent = SpireAgent(workdir / "a", server, authorized_delegates=[DELEGATE])
    try:
        with running(server, spire_agent):
            await asyncio.to_thread(server.start)
            token = await asyncio.to_thread(server.join_token, NODE)
            for spiffe_id, ttl in ((DELEGATE, 3600), (WORKLOAD, ttl_seconds)):
                await asyncio.to_thread(
                    server.cli, "entry", "create", "-parentID", NODE, "-spiffeID", spiffe_id,
                    "-selector", f"unix:uid:{os.getuid()}", "-x509SVIDTTL", str(ttl),
                )  # fmt: skip
            await asyncio.to_thread(spire_agent.start, token)
            result = await asyncio.to_thread(spire_agent.fetch_x509, workdir / "fetched")
            assert result.returncode == 0, result.stdout + result.stderr
            config = parse(
                {
                    "agent": {"socket_path": str(workdir / "pqc.sock"), "shutdown_grace": "1s"},
                    "source": {
                        "kind": "spire",
                        "spire": {
                            "admin_socket_path": str(spire_agent.admin_socket),
                            "workload_socket_path": str(spire_agent.socket),
                            "agent_id": DELEGATE,
                        },
                    },
                    "ca": {"address": f"127.0.0.1:{endpoint_port}", "timeout": "10s"},
                    # A short readiness window, so the fault test sees /ready follow the CA quickly.
                    "pqc": {"retry_initial": "0.5s", "retry_max": "2s", "bundle_refresh_interval": "1s",
                            "ca_ready_window": f"{CA_READY_WINDOW}s"},
                }
            )  # fmt: skip
            async with Agent(config, first_pqc_wait=30.0) as agent:
                deadline = time.monotonic() + 60
                while not agent.ready:
                    assert time.monotonic() < deadline, "the spire-pqc agent never became ready"
                    await asyncio.sleep(0.2)
                classical = BundleSet.from_certificates(x509.load_pem_x509_certificates(server.bundle_pem()))
                pqc_roots = x509.load_pem_x509_certificates((pqc_dir / "root.crt.pem").read_bytes())
                yield Stack(
                    server, spire_agent, config, agent, classical, BundleSet.from_certificates(pqc_roots)
                )
    finally:
        cleanup(workdir)


@asynccontextmanager
async def hybrid_source(stack: Stack) -> AsyncIterator[HybridX509Source]:
    source = HybridX509Source(address=f"unix://{stack.config.socket_path}")
    try:
        await source.start(timeout=90)
        yield source
    finally:
        await source.close()


async def _eventually_fetch(address: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await asyncio.to_thread(_standard_fetch, address)
        except FetchX509SvidError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1)


def _ready(agent: Agent) -> bool:
    """``agent.ready`` now (a call, so that the type checker does not hold it constant across awaits)."""
    return agent.ready


def _standard_fetch(address: str) -> str:
    client = WorkloadApiClient(socket_path=address)
    try:
        return str(client.fetch_x509_svid().spiffe_id)
    finally:
        client.close()


@pytest.mark.asyncio
async def test_workload_gets_verified_hybrid_svid_and_rotation_through_real_spire() -> None:
    async with spire_stack() as stack, hybrid_source(stack) as source:
        hybrid = stack.workload(source)
        verified = hybrid.verify(classical_bundles=stack.classical, pqc_bundles=stack.pqc)
        assert str(verified.spiffe_id) == WORKLOAD
        assert certs.mldsa_public_key(hybrid.pqc_chain[0]) == hybrid.pqc_key.public_key()
        # SPIRE renews the 30 s SVID; classical and PQC credentials must arrive together
        # (never a new classical SVID beside the old PQC SVID).
        rotated = await stack.next_rotation(source, hybrid.classical_chain[0].serial_number)
        assert rotated.pqc_chain[0].serial_number != hybrid.pqc_chain[0].serial_number
        assert rotated.pqc_key.public_key() != hybrid.pqc_key.public_key()
        rotated.verify(classical_bundles=stack.classical, pqc_bundles=stack.pqc)


@pytest.mark.asyncio
async def test_spire_agent_and_pqc_ca_restarts_under_a_running_agent() -> None:
    async with spire_stack() as stack, hybrid_source(stack) as source:
        socket_uri = f"unix://{stack.config.socket_path}"
        first = stack.workload(source)

        # 1. spire-agent restarts. Meanwhile a *new* caller cannot be attested (SPIRE is the source
        #    of identities): it gets UNAVAILABLE, which clients retry; the open stream keeps its
        #    current credentials. Afterwards new callers are served and rotations arrive again.
        stack.spire_agent.stop()
        with pytest.raises(FetchX509SvidError, match="UNAVAILABLE"):
            await asyncio.to_thread(_standard_fetch, socket_uri)
        stack.workload(source).verify(classical_bundles=stack.classical, pqc_bundles=stack.pqc)
        await asyncio.to_thread(stack.spire_agent.start, None)
        assert await _eventually_fetch(socket_uri) in (WORKLOAD, DELEGATE)
        after_agent = await stack.next_rotation(source, first.classical_chain[0].serial_number)
        after_agent.verify(classical_bundles=stack.classical, pqc_bundles=stack.pqc)

        # 2. spire-server (and with it the PQC CA endpoint) stops: the standard API is unaffected
        #    and the hybrid stream keeps the still-valid credentials; after the restart, the next
        #    rotation brings freshly issued PQC credentials again.
        assert stack.agent.status()["ready"] is True
        stack.server.stop()
        stopped = time.monotonic()
        assert await asyncio.to_thread(_standard_fetch, socket_uri) in (WORKLOAD, DELEGATE)
        still = stack.workload(source)
        still.verify(classical_bundles=stack.classical, pqc_bundles=stack.pqc)
        #    /ready follows the CA: 503 once its last answer is older than pqc.ca_ready_window (while the
        #    kept credentials are still served), and /status names the CA's address and the cause.
        while _ready(stack.agent):
            assert time.monotonic() - stopped < CA_READY_WINDOW + 15, "still ready with the PQC CA down"
            await asyncio.sleep(0.2)
        assert stack.agent.provisioner.serving()
        assert stack.config.ca is not None
        address = stack.config.ca.addresses[0]
        ca = stack.agent.status()["ca"]
        assert ca["address"] == address and ca["answering"] is False, ca
        assert ca["last_error"].startswith(f"PQC CA {address}: "), ca
        assert "spq-bridge" not in ca["last_error"] and "unix:" not in ca["last_error"], ca
        await asyncio.to_thread(stack.server.start)
        restarted = time.monotonic()
        while not _ready(stack.agent):
            assert time.monotonic() - restarted < 90, f"not ready again: {stack.agent.status()['ca']}"
            await asyncio.sleep(0.2)
        ca = stack.agent.status()["ca"]
        assert ca["answering"] is True and ca["last_error"] is None, ca
        assert ca["clock_skew_seconds"] is not None and abs(ca["clock_skew_seconds"]) < 2, ca
        recovered = await stack.next_rotation(source, still.classical_chain[0].serial_number, timeout=180)
        assert recovered.pqc_chain[0].serial_number != still.pqc_chain[0].serial_number
        recovered.verify(classical_bundles=stack.classical, pqc_bundles=stack.pqc)
