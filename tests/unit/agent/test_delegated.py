"""The SPIRE Delegated Identity source against an in-process Delegated Identity server (grpcio, Unix socket).

The fake server stands in for the SPIRE agent's admin socket: it serves SVIDs from a dev classical CA
(with the SvidBinding, as SPIRE + our plugin would) only for the PID it expects, and pushes a new SVID
on demand. The agent relays them to unmodified py-spiffe clients and adds PQC credentials.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from cryptography.hazmat.primitives import serialization
from spiffe import WorkloadApiClient
from spiffe._proto import workload_pb2 as wl

from spire_pqc._internal import wire
from spire_pqc._proto.spire.api.agent.delegatedidentity.v1 import delegatedidentity_pb2 as di
from spire_pqc._proto.spire.api.agent.delegatedidentity.v1 import delegatedidentity_pb2_grpc as di_grpc
from spire_pqc._proto.spire.api.types import types_pb2
from spire_pqc._proto.spire_pqc.workload.v1 import workload_pb2 as hy
from spire_pqc.agent.caclient import LocalCAClient
from spire_pqc.agent.config import parse
from spire_pqc.agent.server import Agent
from spire_pqc.bundle import BundleSet, X509Bundle
from spire_pqc.ca.devca import DevClassicalCA, PQCHierarchy
from spire_pqc.ca.issuer import PQCIssuer
from spire_pqc.spiffeid import SpiffeId, TrustDomain
from spire_pqc.workload.client import parse_hybrid_response
from tests.unit.agent._support import HEADER, first_reply, short_dir

TD = TrustDomain("example.org")
WORKLOAD = SpiffeId.parse("spiffe://example.org/spire/workload")
DER = serialization.Encoding.DER


class FakeSpireAgent(di_grpc.DelegatedIdentityServicer):
    def __init__(self, ca: DevClassicalCA, allowed_pid: int) -> None:
        self.ca = ca
        self.allowed_pid = allowed_pid
        self.requests: list[int] = []
        self.rotate = asyncio.Event()

    def _response(self) -> di.SubscribeToX509SVIDsResponse:
        cert, key = self.ca.issue_svid(WORKLOAD)
        svid = types_pb2.X509SVID(
            cert_chain=[cert.public_bytes(DER)],
            id=types_pb2.SPIFFEID(trust_domain=TD.name, path=WORKLOAD.path),
            expires_at=int(cert.not_valid_after_utc.timestamp()),
            hint="spire",
        )
        key_der = key.private_bytes(DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        return di.SubscribeToX509SVIDsResponse(
            x509_svids=[di.X509SVIDWithKey(x509_svid=svid, x509_svid_key=key_der)]
        )

    async def SubscribeToX509SVIDs(self, request: Any, context: Any) -> AsyncIterator[Any]:
        self.requests.append(request.pid)
        if request.pid != self.allowed_pid:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "no identity issued")
        yield self._response()
        while True:
            await self.rotate.wait()
            self.rotate.clear()
            yield self._response()

    async def SubscribeToX509Bundles(self, request: Any, context: Any) -> AsyncIterator[Any]:
        yield di.SubscribeToX509BundlesResponse(
            ca_certificates={TD.id_string(): self.ca.certificate.public_bytes(DER)}
        )
        await asyncio.Event().wait()


async def _setup(directory: Path, allowed_pid: int) -> tuple[grpc.aio.Server, FakeSpireAgent, Agent]:
    hierarchy = PQCHierarchy.generate(TD)
    ca = DevClassicalCA(TD, hierarchy.intermediate.key)
    fake = FakeSpireAgent(ca, allowed_pid)
    server = grpc.aio.server()
    di_grpc.add_DelegatedIdentityServicer_to_server(fake, server)
    server.add_insecure_port(f"unix://{directory}/admin.sock")
    await server.start()
    config = parse(
        {
            "agent": {"socket_path": str(directory / "agent.sock"), "shutdown_grace": "1s"},
            "source": {
                "kind": "spire",
                "spire": {
                    "admin_socket_path": str(directory / "admin.sock"),
                    "workload_socket_path": str(directory / "spire-workload.sock"),
                },
            },
            "ca": {"address": "127.0.0.1:1"},
        }
    )
    issuer = PQCIssuer(hierarchy.intermediate, TD, BundleSet([X509Bundle(TD, [ca.certificate])]))
    agent = Agent(config, ca_client=LocalCAClient(issuer))
    await agent.start()
    async with asyncio.timeout(10):
        while not agent.ready:
            await asyncio.sleep(0.01)
    return server, fake, agent


def _fetch(path: Path) -> tuple[str, str]:
    client = WorkloadApiClient(socket_path=f"unix://{path}")
    try:
        svid = client.fetch_x509_context().default_svid
        return str(svid.spiffe_id), svid.leaf.issuer.rfc4514_string()
    finally:
        client.close()


@pytest.mark.asyncio
async def test_relays_spire_svids_by_caller_pid_and_adds_pqc() -> None:
    directory = short_dir()
    server, fake, agent = await _setup(directory, os.getpid())
    try:
        spiffe_id, issuer = await asyncio.to_thread(_fetch, agent.socket_path)
        assert spiffe_id == str(WORKLOAD)
        assert "spire-pqc-dev" in issuer
        assert fake.requests and set(fake.requests) == {os.getpid()}  # subscribed by the caller's PID
        reply = await first_reply(
            agent.socket_path, wire.FETCH_HYBRID_SVIDS,
            hy.HybridSVIDRequest(), hy.HybridSVIDResponse,
            metadata=HEADER,
        )  # fmt: skip
        update = parse_hybrid_response(reply)
        svid = update.svids[0]
        assert svid.spiffe_id == WORKLOAD and svid.hint == "spire"
        svid.verify(classical_bundles=update.classical_bundles, pqc_bundles=update.pqc_bundles)
    finally:
        await agent.close()
        await server.stop(None)


@pytest.mark.asyncio
async def test_spire_refusal_is_permission_denied_and_rotation_is_pushed() -> None:
    from grpclib.client import Channel
    from grpclib.const import Cardinality, Status
    from grpclib.exceptions import GRPCError

    directory = short_dir()
    server, fake, agent = await _setup(directory, os.getpid() + 100000)
    try:
        with pytest.raises(GRPCError) as info:
            await first_reply(agent.socket_path, wire.FETCH_X509_SVID, wl.X509SVIDRequest(),
                              wl.X509SVIDResponse, metadata=HEADER)  # fmt: skip
        assert info.value.status is Status.PERMISSION_DENIED
        fake.allowed_pid = os.getpid()
        channel = Channel(path=str(agent.socket_path))
        try:
            async with channel.request(
                wire.FETCH_X509_SVID, Cardinality.UNARY_STREAM, wl.X509SVIDRequest,
                wl.X509SVIDResponse, metadata=HEADER,
            ) as stream:  # fmt: skip
                await stream.send_message(wl.X509SVIDRequest(), end=True)
                first = await stream.recv_message()
                fake.rotate.set()
                async with asyncio.timeout(10):
                    second = await stream.recv_message()
                assert first is not None and second is not None
                assert first.svids[0].x509_svid != second.svids[0].x509_svid
                assert second.svids[0].bundle == fake.ca.certificate.public_bytes(DER)
                await stream.cancel()
        finally:
            channel.close()
    finally:
        await agent.close()
        await server.stop(None)
