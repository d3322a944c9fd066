"""Tunnels end to end on loopback: HTTP through the pair, 100 MB intact, rotation, refusals, counters."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest

from spire_pqc.agent.config import LocalUsers
from spire_pqc.agent.server import Agent
from spire_pqc.agent.sources.dev import DevIdentitySource
from spire_pqc.agent.tunnel import OutboundTunnel
from spire_pqc.bundle import X509Bundle
from spire_pqc.channel import authorize_id, open_connection
from spire_pqc.channel.tlsproto import TlsProtocol
from spire_pqc.errors import ConfigError, NoHybridGroupError
from spire_pqc.spiffeid import SpiffeId, TrustDomain
from spire_pqc.svid import HybridSvid, der
from tests.unit.agent._tunnels import (
    CLIENT_ID,
    SERVER_ID,
    hash_handler,
    http_handler,
    local_server,
    send_and_hash,
    tunnel_agent,
    tunnel_config,
)
from tests.unit.channel._peers import classical_only_context, raw_connect

MB = 1 << 20


async def _wait(predicate: object, what: str, timeout: float = 5.0) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@pytest.mark.asyncio
async def test_http_request_through_the_tunnel_pair() -> None:
    async with (
        local_server(http_handler) as http_port,
        tunnel_agent(tunnel_config(http_port)) as (agent, out, inb),
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", out.port)
        writer.write(b"GET /hello HTTP/1.0\r\nHost: example\r\n\r\n")
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        await writer.wait_closed()
        head, _, body = response.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.0 200 OK")
        assert body == b"hello through the tunnel: GET /hello HTTP/1.0"
        await _wait(lambda: out.stats.open == 0 and inb.stats.open == 0, "connections to close")
        assert (out.stats.accepted, out.stats.refused, inb.stats.accepted, inb.stats.refused) == (1, 0, 1, 0)
        assert (
            out.stats.bytes_out == inb.stats.bytes_in == len(b"GET /hello HTTP/1.0\r\nHost: example\r\n\r\n")
        )
        assert out.stats.bytes_in == inb.stats.bytes_out == len(response)
        metrics = agent.render_metrics()
    assert (
        'spire_pqc_agent_tunnel_connections_total{kind="outbound",result="accepted",tunnel="out"} 1.0'
        in metrics
    )
    assert (
        f'spire_pqc_agent_tunnel_bytes_total{{direction="out",kind="inbound",tunnel="in"}} {float(len(response))}'
        in (metrics)
    )


@pytest.mark.asyncio
async def test_100_mb_transfer_is_intact() -> None:
    total = 100 * MB
    async with local_server(hash_handler) as port, tunnel_agent(tunnel_config(port)) as (_, out, inb):
        start = time.perf_counter()
        sent, received, size = await asyncio.wait_for(send_and_hash(out.port, total), 120)
        tunnel_s = time.perf_counter() - start
        assert size == total
        assert received == sent
        assert out.stats.bytes_out == inb.stats.bytes_in == total
        start = time.perf_counter()
        direct = await send_and_hash(port, total)
        direct_s = time.perf_counter() - start
        assert direct[1] == sent
    print(
        f"\n100 MB through the tunnel pair: {100 / tunnel_s:.0f} MB/s; direct TCP: {100 / direct_s:.0f} MB/s"
    )


@pytest.mark.asyncio
async def test_rotation_during_a_long_transfer() -> None:
    # SVIDs live 2 s and rotate every 1 s; the transfer lasts about 5 s, well past the first SVID's expiry.
    async with (
        local_server(hash_handler) as port,
        tunnel_agent(tunnel_config(port, ttl="2s")) as (agent, out, _),
    ):
        identity = agent.tunnel_identity(SpiffeId.parse(SERVER_ID))
        first = identity.get_hybrid_svid()
        source = agent.source
        assert isinstance(source, DevIdentitySource)
        rotations = source.rotations
        sent, received, size = await asyncio.wait_for(
            send_and_hash(out.port, 4 * MB, chunk=64 * 1024, pause=0.08), 60
        )
        assert size == 4 * MB and received == sent
        assert source.rotations >= rotations + 3
        await _wait(lambda: identity.get_hybrid_svid() is not first, "new PQC credentials")
        # A new connection after the first SVID expired: the inbound side presents the new credentials.
        client = agent.tunnel_identity(SpiffeId.parse(CLIENT_ID))
        _, writer = await open_connection(
            "127.0.0.1", agent.tunnels[1].port, source=client, authorizer=authorize_id(SERVER_ID),
        )  # fmt: skip
        presented = writer.info.peer_chain[0]
        writer.close()
        assert der(presented) != der(first.classical_chain[0])
        assert presented.not_valid_after_utc > first.not_after
        sent, received, _ = await asyncio.wait_for(send_and_hash(out.port, MB), 20)
        assert received == sent


@pytest.mark.asyncio
async def test_outbound_refuses_an_unexpected_remote(caplog: pytest.LogCaptureFixture) -> None:
    config = tunnel_config(1, peer_ids=["spiffe://example.org/svc/someone-else"])
    async with tunnel_agent(config) as (_, out, inb):
        reader, writer = await asyncio.open_connection("127.0.0.1", out.port)
        writer.write(b"secret")
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
        await _wait(lambda: out.stats.refused == 1, "the outbound refusal")
        refusal = [r.getMessage() for r in caplog.records if "tunnel out: refused remote" in r.getMessage()]
        assert len(refusal) == 1 and "someone-else" in refusal[0] and SERVER_ID in refusal[0]
        assert out.stats.accepted == 0 and out.stats.bytes_out == 0 and inb.stats.bytes_in == 0


@pytest.mark.asyncio
async def test_inbound_refuses_a_caller_not_allowed() -> None:
    config = tunnel_config(1, allowed={"allowed_ids": ["spiffe://example.org/svc/only-this-one"]})
    async with tunnel_agent(config) as (_, out, inb):
        reader, writer = await asyncio.open_connection("127.0.0.1", out.port)
        writer.write(b"secret")
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
        await _wait(lambda: inb.stats.refused == 1, "the inbound refusal")
        assert inb.stats.accepted == 0 and inb.stats.bytes_in == 0
        assert out.stats.accepted + out.stats.refused + out.stats.failed == 1
        assert out.stats.bytes_out == 0


@pytest.mark.asyncio
async def test_inbound_refuses_a_classical_only_tls_client() -> None:
    async with tunnel_agent(tunnel_config(1)) as (agent, _, inb):
        svid = agent.tunnel_identity(SpiffeId.parse(CLIENT_ID)).get_hybrid_svid()
        proto: TlsProtocol = await raw_connect(classical_only_context(svid), inb.port)
        with pytest.raises(NoHybridGroupError):
            await proto.handshake()
        proto.abort()
        await _wait(lambda: inb.stats.refused == 1, "the inbound refusal")
        assert inb.stats.accepted == 0


@pytest.mark.asyncio
async def test_inbound_with_an_allowed_trust_domain() -> None:
    async with local_server(http_handler) as port:
        config = tunnel_config(port, allowed={"allowed_trust_domain": "example.org"})
        async with tunnel_agent(config) as (_, out, inb):
            reader, writer = await asyncio.open_connection("127.0.0.1", out.port)
            writer.write(b"GET / HTTP/1.0\r\n\r\n")
            assert (await asyncio.wait_for(reader.read(), 10)).endswith(b"GET / HTTP/1.0")
            writer.close()
            assert inb.stats.accepted == 1


class _NoSvid:
    def get_hybrid_svid(self) -> HybridSvid:
        raise AssertionError("not needed to validate the listen address")

    def get_classical_bundle(self, trust_domain: TrustDomain, /) -> X509Bundle:
        raise AssertionError("not needed to validate the listen address")

    get_pqc_bundle = get_classical_bundle


@pytest.mark.parametrize("allow", [False, True])
def test_outbound_listen_must_be_loopback_unless_allowed(allow: bool) -> None:
    def build() -> OutboundTunnel:
        return OutboundTunnel(
            "x", listen=("192.0.2.1", 1), remote=("127.0.0.1", 2), peer_ids=[SERVER_ID], source=_NoSvid(),
            allow_non_loopback=allow,
            local_users=LocalUsers(anyone=True),
        )  # fmt: skip

    if allow:
        assert build().listen == ("192.0.2.1", 1)
    else:
        with pytest.raises(ConfigError, match="not loopback"):
            build()


@pytest.mark.asyncio
async def test_a_taken_tunnel_port_fails_start_and_cleans_up() -> None:
    blocker = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    try:
        taken = int(blocker.sockets[0].getsockname()[1])
        config = tunnel_config(1)
        raw = config.tunnels[1]
        config = replace(config, tunnels=(config.tunnels[0], replace(raw, listen=("127.0.0.1", taken))))
        agent = Agent(config)
        with pytest.raises(
            ConfigError, match=rf'tunnel.inbound "in".listen: cannot listen on 127.0.0.1:{taken}'
        ):
            await agent.start()
        assert not agent.live and not config.socket_path.exists()
        (started,) = agent.tunnels  # the outbound tunnel started before the inbound one failed ...
        assert isinstance(started, OutboundTunnel)
        with pytest.raises(ConnectionRefusedError):  # ... and was closed again
            await asyncio.open_connection("127.0.0.1", started.port)
    finally:
        blocker.close()
        await blocker.wait_closed()
