"""Tunnels with the SPIRE source: the identity comes from Delegated Identity SubscribeToX509SVIDs by selectors."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import pytest

from spire_pqc._proto.spire.api.agent.delegatedidentity.v1 import delegatedidentity_pb2_grpc as di_grpc
from spire_pqc.agent.caclient import LocalCAClient
from spire_pqc.agent.config import parse
from spire_pqc.agent.server import Agent
from spire_pqc.agent.tunnel import InboundTunnel, OutboundTunnel
from spire_pqc.bundle import BundleSet, X509Bundle
from spire_pqc.ca.devca import DevClassicalCA, PQCHierarchy
from spire_pqc.ca.issuer import PQCIssuer
from tests.unit.agent._support import short_dir
from tests.unit.agent._tunnels import free_port, http_handler, local_server, wait_ready
from tests.unit.agent.test_delegated import TD, WORKLOAD, FakeSpireAgent

SELECTORS = ["unix:uid:4242", "unix:gid:4242"]


class SelectorSpireAgent(FakeSpireAgent):
    """Issues WORKLOAD only to a subscription by exactly SELECTORS (SPIRE attests selector sets too)."""

    def __init__(self, ca: DevClassicalCA) -> None:
        super().__init__(ca, allowed_pid=-1)
        self.selector_requests: list[set[str]] = []

    async def SubscribeToX509SVIDs(self, request: Any, context: Any) -> AsyncIterator[Any]:
        asked = {f"{s.type}:{s.value}" for s in request.selectors}
        self.selector_requests.append(asked)
        if request.pid or asked != set(SELECTORS):
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "no identity issued")
        yield self._response()
        await asyncio.Event().wait()


@pytest.mark.asyncio
async def test_tunnel_pair_with_spire_selectors() -> None:
    directory = short_dir()
    hierarchy = PQCHierarchy.generate(TD)
    ca = DevClassicalCA(TD, hierarchy.intermediate.key)
    fake = SelectorSpireAgent(ca)
    server = grpc.aio.server()
    di_grpc.add_DelegatedIdentityServicer_to_server(fake, server)
    server.add_insecure_port(f"unix://{directory}/admin.sock")
    await server.start()
    inbound_port = free_port()
    identity = {"spiffe_id": str(WORKLOAD), "selectors": SELECTORS}
    try:
        async with local_server(http_handler) as http_port:
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
                    "tunnel": {
                        "outbound": [{"name": "o", "listen": "127.0.0.1:0", "remote": f"127.0.0.1:{inbound_port}",
                                      "peer_ids": [str(WORKLOAD)], "allowed_uids": [os.getuid()], **identity}],
                        "inbound": [{"name": "i", "listen": f"127.0.0.1:{inbound_port}",
                                     "target": f"127.0.0.1:{http_port}", "allowed_trust_domain": TD.name,
                                     **identity}],
                    },
                }
            )  # fmt: skip
            issuer = PQCIssuer(hierarchy.intermediate, TD, BundleSet([X509Bundle(TD, [ca.certificate])]))
            async with Agent(config, ca_client=LocalCAClient(issuer)) as agent:
                out, inb = agent.tunnels
                assert isinstance(out, OutboundTunnel) and isinstance(inb, InboundTunnel)
                await wait_ready(out, inb)
                reader, writer = await asyncio.open_connection("127.0.0.1", out.port)
                writer.write(b"GET /spire HTTP/1.0\r\n\r\n")
                response = await asyncio.wait_for(reader.read(), 10)
                writer.close()
                assert response.endswith(b"hello through the tunnel: GET /spire HTTP/1.0")
                assert inb.stats.accepted == 1 and out.stats.accepted == 1
        # One shared identity for both tunnels, subscribed by the configured selectors (not a PID).
        assert fake.selector_requests == [set(SELECTORS)]
    finally:
        await server.stop(None)
