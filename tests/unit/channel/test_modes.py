"""Every channel mode end to end on loopback, with credentials minted through devca + PQCIssuer."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re

import pytest

from spire_pqc.bundle import BundleSet, X509Bundle
from spire_pqc.channel.api import SecureStreamWriter, open_connection, start_server
from spire_pqc.channel.authorize import authorize_id
from spire_pqc.channel.sources import Mode
from spire_pqc.channel.tlsproto import TlsAppTransport
from spire_pqc.errors import ChainError, ConfigError, SpirePqcError, UnknownTrustDomainError
from spire_pqc.spiffeid import TrustDomain
from spire_pqc.svid import HybridSvid, der
from tests.unit.channel._creds import World

MODES = [Mode.HYBRID, Mode.SPIFFE, Mode.PQ_TLS]


class RotatingSource:
    """A source whose SVID and bundles change between connections (what a live Workload API source does)."""

    def __init__(self, svid: HybridSvid, classical: BundleSet, pqc: BundleSet) -> None:
        self.svid, self.classical, self.pqc = svid, classical, pqc

    def get_hybrid_svid(self) -> HybridSvid:
        return self.svid

    def get_classical_bundle(self, trust_domain: TrustDomain, /) -> X509Bundle:
        return self.classical.get(trust_domain)

    def get_pqc_bundle(self, trust_domain: TrustDomain, /) -> X509Bundle:
        return self.pqc.get(trust_domain)


async def _echo_upper(reader: asyncio.StreamReader, writer: SecureStreamWriter) -> None:
    data = await reader.read()  # until the client's close_notify
    writer.write(data.upper() + b"|" + str(writer.peer_id()).encode() + b"|" + writer.mode.value.encode())
    await writer.drain()
    writer.close()
    await writer.wait_closed()


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", MODES, ids=[m.value for m in MODES])
async def test_mode_end_to_end(
    mode: Mode, world: World, server_svid: HybridSvid, client_svid: HybridSvid
) -> None:
    seen: list[tuple[str, str, Mode]] = []

    async def handler(reader: asyncio.StreamReader, writer: SecureStreamWriter) -> None:
        seen.append((str(writer.peer_id()), writer.group, writer.mode))
        await _echo_upper(reader, writer)

    async with await start_server(
        handler, "127.0.0.1", 0,
        source=world.source(server_svid),
        authorizer=authorize_id(client_svid.spiffe_id), mode=mode,
    ) as server:  # fmt: skip
        reader, writer = await open_connection(
            "127.0.0.1", server.port,
            source=world.source(client_svid),
            authorizer=authorize_id(server_svid.spiffe_id), mode=mode.value,
        )  # fmt: skip
        assert writer.group == "X25519MLKEM768"
        assert writer.mode is mode
        assert writer.peer_id() == server_svid.spiffe_id
        tls_leaf = writer.info.peer_chain[0]
        if mode is Mode.PQ_TLS:
            assert der(tls_leaf) == der(server_svid.pqc_chain[0])
        else:
            assert der(tls_leaf) == der(server_svid.classical_chain[0])
        if mode is Mode.HYBRID:
            assert der(writer.info.peer_pqc_chain[0]) == der(server_svid.pqc_chain[0])
        assert writer.get_extra_info("ssl_object").get_group_name() == "X25519MLKEM768"
        # The server's PQC chain crossed the wire in hybrid (proof) and pq-tls (TLS certificates) only.
        transport = writer.transport
        assert isinstance(transport, TlsAppTransport)
        _, received = transport.wire_bytes()
        pqc_chain_bytes = sum(len(der(c)) for c in server_svid.pqc_chain)
        assert (received > pqc_chain_bytes) is (mode is not Mode.SPIFFE)
        writer.write(b"hello ")
        writer.write(b"world")
        writer.write_eof()  # TLS 1.3 half-close: the server still answers
        reply = await reader.read()
        assert reply == f"HELLO WORLD|{client_svid.spiffe_id}|{mode.value}".encode()
        assert reader.at_eof()
        writer.close()
        await writer.wait_closed()
    assert seen == [(str(client_svid.spiffe_id), "X25519MLKEM768", mode)]
    assert server.accepted == 1 and not server.failures


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", [Mode.HYBRID, Mode.PQ_TLS], ids=["hybrid", "pq-tls"])
async def test_large_transfer_is_back_pressured(
    mode: Mode, world: World, server_svid: HybridSvid, client_svid: HybridSvid
) -> None:
    """The writer's drain() blocks while the server does not read, and every byte arrives intact."""
    payload = os.urandom(24 * 1024 * 1024)
    release = asyncio.Event()
    digest: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def handler(reader: asyncio.StreamReader, writer: SecureStreamWriter) -> None:
        await release.wait()
        hasher, total = hashlib.sha256(), 0
        while chunk := await reader.read(256 * 1024):
            hasher.update(chunk)
            total += len(chunk)
        digest.set_result(hasher.digest() + total.to_bytes(8, "big"))
        writer.close()

    async with await start_server(
        handler, "127.0.0.1", 0, source=world.source(server_svid),
        authorizer=authorize_id(client_svid.spiffe_id), mode=mode,
    ) as server:  # fmt: skip
        _, writer = await open_connection(
            "127.0.0.1", server.port, source=world.source(client_svid),
            authorizer=authorize_id(server_svid.spiffe_id), mode=mode,
        )  # fmt: skip
        writer.write(payload)
        drain = asyncio.ensure_future(writer.drain())
        await asyncio.sleep(0.3)
        assert not drain.done(), "drain() must wait while the peer does not read"
        release.set()
        await asyncio.wait_for(drain, 30)
        writer.write_eof()
        assert await asyncio.wait_for(digest, 30) == hashlib.sha256(payload).digest() + len(payload).to_bytes(
            8, "big"
        )
        writer.close()
        await writer.wait_closed()


@pytest.mark.asyncio
async def test_new_connections_use_current_credentials(world: World, client_svid: HybridSvid) -> None:
    first, second = world.main.mint("/rotating"), world.main.mint("/rotating")
    source = RotatingSource(first, world.classical_bundles, world.pqc_bundles)

    async def handler(reader: asyncio.StreamReader, writer: SecureStreamWriter) -> None:
        writer.close()

    async with await start_server(
        handler, "127.0.0.1", 0, source=source, authorizer=authorize_id(client_svid.spiffe_id),
    ) as server:  # fmt: skip
        leaves = []
        for svid in (first, second):
            source.svid = svid
            _, writer = await open_connection(
                "127.0.0.1", server.port, source=world.source(client_svid),
                authorizer=authorize_id(first.spiffe_id),
            )  # fmt: skip
            leaves.append((der(writer.info.peer_chain[0]), der(writer.info.peer_pqc_chain[0])))
            writer.close()
            await writer.wait_closed()
    assert leaves[0] == (der(first.classical_chain[0]), der(first.pqc_chain[0]))
    assert leaves[1] == (der(second.classical_chain[0]), der(second.pqc_chain[0]))


def _assert_unknown_trust_domain(refusal: SpirePqcError) -> None:
    assert isinstance(refusal, ChainError), repr(refusal)
    assert re.search(r"no (classical|PQC) bundle for trust domain other\.org", str(refusal)), refusal
    assert isinstance(refusal.__cause__, UnknownTrustDomainError), repr(refusal.__cause__)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.asyncio
async def test_bundles_are_read_from_the_source_at_every_handshake(world: World, mode: Mode) -> None:
    """A long-running server follows its source's bundles: a trust domain it did not know when it
    started (a new SPIRE CA, a new PQC root, a new federation) is trusted from the next handshake on,
    and one removed from the source is refused from the next handshake on, with a typed error."""
    server_svid, peer = world.main.mint("/server"), world.other.mint("/peer")
    main_only = RotatingSource(
        server_svid, BundleSet([world.main.classical_bundle]), BundleSet([world.main.pqc_bundle])
    )

    async def handler(reader: asyncio.StreamReader, writer: SecureStreamWriter) -> None:
        writer.write(await reader.readexactly(2))
        await writer.drain()
        writer.close()

    async def call() -> bytes:
        reader, writer = await open_connection(
            "127.0.0.1", server.port, source=world.source(peer),
            authorizer=authorize_id(server_svid.spiffe_id),
            mode=mode,
        )  # fmt: skip
        writer.write(b"ok")
        try:
            return await reader.readexactly(2)
        finally:
            writer.close()

    async with await start_server(
        handler, "127.0.0.1", 0, source=main_only, authorizer=authorize_id(peer.spiffe_id), mode=mode
    ) as server:
        with pytest.raises((asyncio.IncompleteReadError, ConnectionError, SpirePqcError)):
            await call()
        async with asyncio.timeout(30):
            while not server.failures:
                await asyncio.sleep(0.01)
        _assert_unknown_trust_domain(server.failures[-1])
        main_only.classical, main_only.pqc = world.classical_bundles, world.pqc_bundles  # no restart
        assert await call() == b"ok"
        main_only.classical = BundleSet([world.main.classical_bundle])
        main_only.pqc = BundleSet([world.main.pqc_bundle])
        refused = len(server.failures)
        with pytest.raises((asyncio.IncompleteReadError, ConnectionError, SpirePqcError)):
            await call()
        async with asyncio.timeout(30):
            while len(server.failures) == refused:
                await asyncio.sleep(0.01)
        _assert_unknown_trust_domain(server.failures[-1])


@pytest.mark.asyncio
async def test_unknown_mode_is_refused(world: World, client_svid: HybridSvid) -> None:
    with pytest.raises(ConfigError, match="not one of hybrid, spiffe, pq-tls"):
        await open_connection(
            "127.0.0.1", 1, source=world.source(client_svid),
            authorizer=authorize_id(client_svid.spiffe_id), mode="tls12",
        )  # fmt: skip
