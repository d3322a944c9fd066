"""Real SPIRE v1.15.3 (no spire-pqc plugin): the agent relays SVIDs from SPIRE's Delegated Identity API.

spire-server + spire-agent are started with the project's harness; the SPIRE agent's admin socket
lists the spire-pqc agent's SPIFFE ID in ``authorized_delegates``. The test process is both the
spire-pqc agent (in-process) and the workload: SPIRE attests it by PID for the subscription. The
server runs without the CredentialComposer, so SVIDs carry no binding and PQC issuance cannot succeed:
only the classical relay is checked here, and the hybrid extension must answer UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

import pytest
from cryptography import x509
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from spiffe import JwtSvid, SpiffeId, WorkloadApiClient

from spire_pqc._internal import wire
from spire_pqc._proto.spire_pqc.workload.v1 import workload_pb2 as hy
from spire_pqc.agent.config import parse
from spire_pqc.agent.server import Agent
from spire_pqc.agent.sources.delegated import DelegatedIdentitySource
from spire_pqc.errors import UnavailableError
from tests.integration.spire import SpireAgent, SpireServer, cleanup, running, short_tempdir
from tests.unit.agent._support import HEADER, first_reply

pytestmark = pytest.mark.spire

TD = "example.org"
NODE = f"spiffe://{TD}/node1"
DELEGATE = f"spiffe://{TD}/spire-pqc/agent"
WORKLOAD = f"spiffe://{TD}/app"


def _fetch(address: str) -> tuple[list[str], bytes]:
    client = WorkloadApiClient(socket_path=address)
    try:
        context = client.fetch_x509_context()
        ids = sorted(str(s.spiffe_id) for s in context.x509_svids)
        bundle = context.x509_bundle_set.get_bundle_for_trust_domain(
            context.default_svid.spiffe_id.trust_domain
        )
        assert bundle is not None
        from cryptography.hazmat.primitives import serialization

        return ids, b"".join(c.public_bytes(serialization.Encoding.PEM) for c in bundle.x509_authorities)
    finally:
        client.close()


def _jwt_round_trip(ours: str, spire: str) -> tuple[str, str, set[str]]:
    """A JWT-SVID fetched and validated through our agent, then checked against SPIRE's own JWT bundle."""
    client = WorkloadApiClient(socket_path=ours)
    spire_client = WorkloadApiClient(socket_path=spire)
    try:
        svid = client.fetch_jwt_svid(audience={"a"}, subject=SpiffeId(WORKLOAD))
        validated = client.validate_jwt_svid(svid.token, "a")
        ours_bundle = client.fetch_jwt_bundles().get_bundle_for_trust_domain(svid.spiffe_id.trust_domain)
        spire_bundle = spire_client.fetch_jwt_bundles().get_bundle_for_trust_domain(
            svid.spiffe_id.trust_domain
        )
        assert ours_bundle is not None and spire_bundle is not None
        assert set(ours_bundle.jwt_authorities) == set(spire_bundle.jwt_authorities)
        checked = JwtSvid.parse_and_validate(svid.token, spire_bundle, {"a"})
        return str(validated.spiffe_id), str(checked.spiffe_id), set(checked.audience)
    finally:
        client.close()
        spire_client.close()


@pytest.mark.asyncio
async def test_relays_spire_svids_through_delegated_identity() -> None:
    workdir = short_tempdir()
    server = SpireServer(workdir)
    spire_agent = SpireAgent(workdir, server, authorized_delegates=[DELEGATE])
    try:
        with running(server, spire_agent):
            await asyncio.to_thread(server.start)
            token = await asyncio.to_thread(server.join_token, NODE)
            for spiffe_id in (DELEGATE, WORKLOAD):
                await asyncio.to_thread(
                    server.cli, "entry", "create", "-parentID", NODE, "-spiffeID", spiffe_id,
                    "-selector", f"unix:uid:{os.getuid()}",
                )  # fmt: skip
            await asyncio.to_thread(spire_agent.start, token)
            # Wait until the SPIRE agent has synced the entries (its own Workload API serves them).
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
                        },
                    },
                    "ca": {"address": "127.0.0.1:1", "timeout": "1s"},  # no PQC CA in this test
                    "pqc": {"retry_initial": "0.2s", "retry_max": "1s"},
                }
            )
            async with Agent(config, first_pqc_wait=2.0) as agent:
                deadline = time.monotonic() + 30
                while not agent.source.ready:
                    assert time.monotonic() < deadline, "no bundle from the SPIRE agent"
                    await asyncio.sleep(0.1)
                # No PQC CA answers at ca.address: not ready, and /status says where and why, in terms
                # of the configured address (never the internal bridge socket).
                while agent.status()["ca"]["last_error"] is None:
                    assert time.monotonic() < deadline, "no failed PQC CA contact recorded"
                    await asyncio.sleep(0.1)
                ca = agent.status()["ca"]
                assert not agent.ready and ca["address"] == "127.0.0.1:1" and ca["answering"] is False
                assert ca["last_error"].startswith(
                    "PQC CA 127.0.0.1:1: UNAVAILABLE: cannot reach 127.0.0.1:1: "
                )
                assert "spq-bridge" not in ca["last_error"], ca
                ids, bundle_pem = await asyncio.to_thread(_fetch, f"unix://{config.socket_path}")
                assert ids == sorted([DELEGATE, WORKLOAD])
                spire_bundle = x509.load_pem_x509_certificates(server.bundle_pem())
                assert x509.load_pem_x509_certificates(bundle_pem) == spire_bundle
                with pytest.raises(GRPCError) as info:
                    await first_reply(
                        config.socket_path, wire.FETCH_HYBRID_SVIDS,
                        hy.HybridSVIDRequest(), hy.HybridSVIDResponse, metadata=HEADER,
                    )  # fmt: skip
                assert info.value.status is Status.UNAVAILABLE
                # JWT profile through FetchJWTSVIDs{pid} and SubscribeToJWTBundles.
                source = agent.source
                assert isinstance(source, DelegatedIdentitySource)
                while True:
                    try:
                        source.jwt_bundles()
                        break
                    except UnavailableError:
                        assert time.monotonic() < deadline + 30, "no JWT bundle from the SPIRE agent"
                        await asyncio.sleep(0.1)
                validated, checked, audience = await asyncio.to_thread(
                    _jwt_round_trip, f"unix://{config.socket_path}", f"unix://{spire_agent.socket}"
                )
                assert (validated, checked, audience) == (WORKLOAD, WORKLOAD, {"a"})
    finally:
        cleanup(workdir)


@pytest.mark.asyncio
async def test_a_refused_delegate_logs_its_own_spiffe_id(caplog: pytest.LogCaptureFixture) -> None:
    """The SPIRE agent lists another ID in authorized_delegates: our log names our own SPIFFE ID (as
    SPIRE's Workload API gives it) and the key to add it to, and the agent is not ready."""
    caplog.set_level(logging.ERROR, logger="spire_pqc")
    workdir = short_tempdir()
    server = SpireServer(workdir)
    spire_agent = SpireAgent(workdir, server, authorized_delegates=[f"spiffe://{TD}/someone-else"])
    try:
        with running(server, spire_agent):
            await asyncio.to_thread(server.start)
            token = await asyncio.to_thread(server.join_token, NODE)
            await asyncio.to_thread(
                server.cli, "entry", "create", "-parentID", NODE, "-spiffeID", DELEGATE,
                "-selector", f"unix:uid:{os.getuid()}",
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
                        },
                    },
                    "ca": {"address": "127.0.0.1:1", "timeout": "1s"},
                }
            )
            async with Agent(config) as agent:
                deadline = time.monotonic() + 60

                def logged() -> list[str]:
                    return [
                        r.getMessage()
                        for r in caplog.records
                        if "refuses this agent as a delegate" in r.getMessage()
                    ]

                while not any(DELEGATE in line for line in logged()):
                    assert time.monotonic() < deadline, logged()
                    await asyncio.sleep(0.2)
                line = next(line for line in logged() if DELEGATE in line)
                assert f"add this agent's SPIFFE ID {DELEGATE} to authorized_delegates" in line
                assert "PERMISSION_DENIED" in line and str(spire_agent.admin_socket) in line
                assert not agent.ready
    finally:
        cleanup(workdir)
