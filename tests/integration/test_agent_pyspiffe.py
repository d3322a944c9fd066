"""Unmodified py-spiffe clients (the ``spiffe`` package) against the agent's dev source, on a real socket.

py-spiffe is synchronous and threaded, so its calls run in worker threads while the agent runs on
the test's event loop.
"""

from __future__ import annotations

import asyncio
import shutil

import pytest
from cryptography.hazmat.primitives import serialization
from spiffe import WorkloadApiClient, X509Source

from spire_pqc.agent.server import Agent
from tests.unit.agent._support import ME, dev_config, running_agent, short_dir


def _fetch(address: str) -> tuple[str, int, list[str]]:
    client = WorkloadApiClient(socket_path=address)
    try:
        context = client.fetch_x509_context()
        bundles = client.fetch_x509_bundles()
        svid = context.default_svid
        return (
            str(svid.spiffe_id),
            svid.leaf.serial_number,
            sorted(str(b.trust_domain) for b in bundles.bundles),
        )
    finally:
        client.close()


@pytest.mark.asyncio
async def test_workload_api_client_fetches_svid_and_bundles() -> None:
    async with running_agent() as agent:
        spiffe_id, serial, trust_domains = await asyncio.to_thread(_fetch, f"unix://{agent.socket_path}")
        assert spiffe_id == ME
        assert trust_domains == ["example.org"]
        assert serial > 0


@pytest.mark.asyncio
async def test_x509_source_sees_rotation_with_short_ttl() -> None:
    directory = short_dir()
    async with running_agent(dev_config(directory, ttl="2s")) as agent:
        source = await asyncio.to_thread(
            X509Source, socket_path=f"unix://{agent.socket_path}", timeout_in_seconds=10
        )
        try:
            first = source.get_x509_context().default_svid
            assert str(first.spiffe_id) == ME
            ca = agent.source.classical_ca.certificate  # type: ignore[attr-defined]
            bundle = source.get_bundle_for_trust_domain(first.spiffe_id.trust_domain)
            assert bundle is not None
            assert [c.public_bytes(serialization.Encoding.DER) for c in bundle.x509_authorities] == [
                ca.public_bytes(serialization.Encoding.DER)
            ]
            async with asyncio.timeout(15):  # TTL 2 s: the dev source rotates every second
                while source.get_x509_context().default_svid.leaf.serial_number == first.leaf.serial_number:
                    await asyncio.sleep(0.05)
            assert agent.source.rotations >= 2  # type: ignore[attr-defined]
        finally:
            await asyncio.to_thread(source.close)


@pytest.mark.asyncio
async def test_x509_source_reconnects_after_agent_restart() -> None:
    directory = short_dir()
    config = dev_config(directory)
    try:
        first_agent = Agent(config)
        await first_agent.start()
        source = await asyncio.to_thread(
            X509Source, socket_path=f"unix://{config.socket_path}", timeout_in_seconds=10
        )
        try:
            before = source.get_x509_context().default_svid.leaf.serial_number
            await first_agent.close()
            await asyncio.sleep(0.3)  # clients see the stream end and start retrying
            async with Agent(config) as second_agent:  # a new SVID from the kept dev CA
                async with asyncio.timeout(20):
                    while source.get_x509_context().default_svid.leaf.serial_number == before:
                        await asyncio.sleep(0.05)
                after = source.get_x509_context()
                assert str(after.default_svid.spiffe_id) == ME
                new_ca = second_agent.source.classical_ca.certificate  # type: ignore[attr-defined]
                assert after.default_svid.leaf.issuer == new_ca.subject
                assert not source.is_closed()
        finally:
            await asyncio.to_thread(source.close)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
