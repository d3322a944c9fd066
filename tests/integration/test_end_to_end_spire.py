"""End to end with real SPIRE v1.15.3 and every spire-pqc part in its real place.

spire-server runs the spire-pqc CredentialComposer with its PQC CA endpoint; spire-agent serves the
Delegated Identity API to the spire-pqc node agent; the spire-pqc agent obtains each workload's PQC
SVID and KEM certificate from the endpoint with its own SPIRE-issued SVID; the workload (this test
process, registered by unix:uid and attested by PID) receives a hybrid SVID over our socket that
passes full hybrid verification, and — with a short SVID TTL — sees classical and PQC credentials
rotate together.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509

from spire_pqc.agent.config import parse
from spire_pqc.agent.server import Agent
from spire_pqc.bundle import BundleSet
from spire_pqc.workload.source import HybridX509Source
from spire_pqc.x509 import certs
from tests.integration.spire import SpireAgent, SpireServer, cleanup, free_port, running, short_tempdir

pytestmark = [pytest.mark.spire, pytest.mark.timeout(600)]

TD = "example.org"
NODE = f"spiffe://{TD}/node1"
DELEGATE = f"spiffe://{TD}/spire-pqc/agent"
WORKLOAD = f"spiffe://{TD}/app"


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


@pytest.mark.asyncio
async def test_workload_gets_verified_hybrid_svid_and_rotation_through_real_spire() -> None:
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
        },
    )
    spire_agent = SpireAgent(workdir / "a", server, authorized_delegates=[DELEGATE])
    try:
        with running(server, spire_agent):
            await asyncio.to_thread(server.start)
            token = await asyncio.to_thread(server.join_token, NODE)
            await asyncio.to_thread(
                server.cli, "entry", "create", "-parentID", NODE, "-spiffeID", DELEGATE,
                "-selector", f"unix:uid:{os.getuid()}",
            )  # fmt: skip
            # The workload: short TTL so SPIRE rotates its SVID during the test.
            await asyncio.to_thread(
                server.cli, "entry", "create", "-parentID", NODE, "-spiffeID", WORKLOAD,
                "-selector", f"unix:uid:{os.getuid()}", "-x509SVIDTTL", "30",
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
                    "pqc": {"retry_initial": "0.5s", "retry_max": "2s"},
                }
            )
            async with Agent(config, first_pqc_wait=30.0) as agent:
                deadline = time.monotonic() + 60
                while not agent.ready:
                    assert time.monotonic() < deadline, "the spire-pqc agent never became ready"
                    await asyncio.sleep(0.2)
                source = HybridX509Source(address=f"unix://{config.socket_path}")
                try:
                    await source.start(timeout=90)
                    hybrid = next(s for s in source.svids if str(s.spiffe_id) == WORKLOAD)
                    # Full hybrid verification, against the bundles SPIRE and our CA publish.
                    classical = BundleSet.from_certificates(
                        x509.load_pem_x509_certificates(server.bundle_pem())
                    )
                    pqc = BundleSet.from_certificates(
                        x509.load_pem_x509_certificates((pqc_dir / "root.crt.pem").read_bytes())
                    )
                    verified = hybrid.verify(classical_bundles=classical, pqc_bundles=pqc)
                    assert str(verified.spiffe_id) == WORKLOAD
                    assert certs.mldsa_public_key(hybrid.pqc_chain[0]) == hybrid.pqc_key.public_key()
                    first_serial = hybrid.classical_chain[0].serial_number
                    first_pqc = hybrid.pqc_chain[0].serial_number

                    # Rotation: SPIRE renews the 30 s SVID; the stream must deliver new classical AND PQC
                    # credentials together (never a new classical SVID with the old PQC SVID).
                    deadline = time.monotonic() + 120
                    while True:
                        await source.wait_until_updated(timeout=max(1.0, deadline - time.monotonic()))
                        rotated = next((s for s in source.svids if str(s.spiffe_id) == WORKLOAD), None)
                        if rotated is not None and rotated.classical_chain[0].serial_number != first_serial:
                            break
                        assert time.monotonic() < deadline, "no rotation delivered"
                    assert rotated.pqc_chain[0].serial_number != first_pqc
                    rotated.verify(classical_bundles=classical, pqc_bundles=pqc)
                finally:
                    await source.close()
    finally:
        cleanup(workdir)
