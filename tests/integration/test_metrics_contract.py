"""docs/metrics.md is what the processes export: a real node agent (`spire-pqc agent run`, two dev
agents carrying a tunnel connection) and the plugin loaded by a real spire-server v1.15.3 (its metrics
listener, with the PQC CA endpoint serving an issuance) are scraped, and every `spire_pqc_…` family,
label and label value must be in the contract, and every family of the contract must be exported.

This is the one place that keeps the code and docs/metrics.md in step: a metric added anywhere
fails here until it is documented (and the alert rules and the dashboard are held to the same
contract by tests/packaging/test_alerting.py)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.spire import PqcAgent, SpireServer, cleanup, free_port, short_tempdir
from tests.integration.test_agent_processes import CLIENT_ID, INBOUND, OUTBOUND, SERVER_ID, _dev_agent
from tests.packaging._support import CHECKOUT
from tests.packaging.metrics_contract import Family, export_problems, parse_contract
from tests.unit.agent._tunnels import hash_handler, local_server, send_and_hash

pytestmark = [pytest.mark.spire, pytest.mark.timeout(600)]

CONTRACT = CHECKOUT / "docs" / "metrics.md"
TD = "example.org"


@pytest.fixture(scope="module")
def contract() -> dict[str, Family]:
    return parse_contract(CONTRACT)


def _cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "spire_pqc.cli", *args], capture_output=True, text=True, timeout=120,
                   check=True)  # fmt: skip


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        return str(reply.read().decode())


def test_the_contract_check_finds_strays_and_gaps(contract: dict[str, Family]) -> None:
    """The negative control: an undocumented family, a wrong label value and a missing family."""
    stray = "# TYPE spire_pqc_agent_colour_total counter\nspire_pqc_agent_colour_total 1\n"
    assert any("spire_pqc_agent_colour_total" in p for p in export_problems(stray, contract, "agent"))
    wrong = (
        '# TYPE spire_pqc_agent_rotations_total counter\nspire_pqc_agent_rotations_total{result="maybe"} 1\n'
    )
    assert any("'maybe'" in p for p in export_problems(wrong, contract, "agent"))
    assert any(
        "docs/metrics.md lists spire_pqc_ca_ledger_up" in p for p in export_problems("", contract, "plugin")
    )


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = short_tempdir()
    yield path
    cleanup(path)


@pytest.mark.asyncio
async def test_the_node_agent_exports_exactly_the_contract(
    contract: dict[str, Family], workdir: Path
) -> None:
    ca_dir = workdir / "dev-ca"
    out_port, in_port = free_port(), free_port()
    async with local_server(hash_handler) as target:
        a = _dev_agent(
            workdir / "a",
            ca_dir,
            CLIENT_ID,
            OUTBOUND.format(listen=out_port, remote=in_port, peer=SERVER_ID, spiffe_id=CLIENT_ID),
        )
        b = _dev_agent(workdir / "b", ca_dir, SERVER_ID,
                       INBOUND.format(listen=in_port, target=target, peer=CLIENT_ID, spiffe_id=SERVER_ID))  # fmt: skip
        agents: list[PqcAgent] = [a, b]
        try:
            for agent in agents:
                agent.start(wait_live=False)
            for agent in agents:
                await asyncio.to_thread(agent.wait_ready)
            sent, received, _ = await asyncio.wait_for(send_and_hash(out_port, 1 << 16), 60)
            assert sent == received
            success = {"mode": "hybrid", "result": "success", "reason": "none"}
            await asyncio.to_thread(
                b.wait_for, lambda: b.metric("spire_pqc_agent_channel_establishments_total", **success) == 1,
                "the inbound channel counted",
            )  # fmt: skip
            for agent in agents:
                text = await asyncio.to_thread(agent.get, "/metrics")
                assert not export_problems(text[1], contract, "agent")
            # The guide's numbers are there, from the one connection (not just exported as zero).
            assert a.metric("spire_pqc_agent_channel_establishments_total", **success) == 1
            assert a.metric("spire_pqc_agent_channel_setup_duration_seconds_count", mode="hybrid") == 1
            assert (
                a.metric("spire_pqc_agent_signature_verifications_total", result="success", check="pq-proof")
                == 1
            )
            assert a.metric("spire_pqc_agent_rotations_total", result="success") == 1
            assert a.metric("spire_pqc_agent_pqc_operation_duration_seconds_count", operation="sign",
                            algorithm="ML-DSA-65", backend="openssl") >= 2  # fmt: skip
        finally:
            for agent in agents:
                await asyncio.to_thread(agent.stop)
            shutil.rmtree(workdir, ignore_errors=True)


def test_the_plugin_in_spire_server_exports_exactly_the_contract(
    contract: dict[str, Family], workdir: Path
) -> None:
    pqc = workdir / "pqc"
    _cli("ca", "init", "--trust-domain", TD, "--out-dir", str(pqc), "--no-encryption")
    _cli("ca", "intermediate", "--trust-domain", TD, "--root-dir", str(pqc), "--out-dir", str(pqc),
         "--no-encryption")  # fmt: skip
    metrics_port = free_port()
    spire_metrics_port = free_port()
    server = SpireServer(
        workdir / "server",
        telemetry_port=spire_metrics_port,
        composer_data={
            "intermediate_key_path": str(pqc / "intermediate.key.pem"),
            "intermediate_cert_path": str(pqc / "intermediate.crt.pem"),
            "pqc_bundle_path": str(pqc / "root.crt.pem"),
            "endpoint_listen_address": f"127.0.0.1:{free_port()}",
            "metrics_listen_address": f"127.0.0.1:{metrics_port}",
            "authorized_agents": [f"spiffe://{TD}/node-agent"],
            "ledger_dsn": f"sqlite://{workdir / 'ledger.db'}",
            "spire_telemetry_interval": "1s",
        },
    )
    server.start()
    try:
        # A workload SVID signed by SPIRE through the composer: one binding added.
        minted = server.mint(f"spiffe://{TD}/minted", workdir / "minted")
        assert minted.returncode == 0, minted.stderr
        deadline = time.monotonic() + 60
        while True:
            text = _scrape(metrics_port)
            if (
                'spire_pqc_plugin_bindings_total{result="added"} 1.0' in text
                and "spire_pqc_ca_ledger_up 1.0" in text
            ):
                break
            assert time.monotonic() < deadline, text
            time.sleep(0.2)
        assert not export_problems(text, contract, "plugin")
        assert "spire_pqc_plugin_binding_duration_seconds_count 1.0" in text
        assert 'spire_pqc_ca_intermediate_expiry_timestamp_seconds{key_id="' in text
        # The same counters and gauges reach spire-server's own telemetry (its Prometheus endpoint)
        # through SPIRE's Metrics host service, under SPIRE's prefix.
        deadline = time.monotonic() + 30
        while True:
            spire_text = _scrape(spire_metrics_port)
            added = [
                line
                for line in spire_text.splitlines()
                if line.startswith("spire_server_spire_pqc_plugin_bindings_total{")
                and 'result="added"' in line
            ]
            if added and "spire_server_spire_pqc_ca_ledger_up" in spire_text:
                break
            assert time.monotonic() < deadline, spire_text[-3000:]
            time.sleep(0.5)
        assert float(added[0].rsplit(" ", 1)[1]) == 1.0, added
        assert "spire_pqc_plugin_binding_duration_seconds" not in spire_text  # histograms stay ours
    finally:
        server.stop()
