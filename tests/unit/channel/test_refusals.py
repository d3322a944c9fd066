"""Every refusal of the channel, each with its specific error, and no application byte delivered."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from dataclasses import replace

import pytest
from cryptography import x509

from spire_pqc.channel import proof as pq
from spire_pqc.channel.api import SecureServer, SecureStreamWriter, open_connection, start_server
from spire_pqc.channel.authorize import authorize_id, authorize_member_of
from spire_pqc.channel.context import context_for
from spire_pqc.channel.sources import Mode
from spire_pqc.channel.tlsproto import TlsProtocol
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey
from spire_pqc.errors import (
    AuthorizationError,
    ChainError,
    IdentityMismatchError,
    MalformedCredentialError,
    NoHybridGroupError,
    ProofMissingError,
    ProofSignatureError,
    RelatedCertificateError,
)
from spire_pqc.svid import HybridSvid, der
from spire_pqc.x509 import certs
from tests.unit.channel._creds import World
from tests.unit.channel._peers import RawServer, classical_only_context, raw_connect

PROOF_TIMEOUT = 0.5


async def _connect(
    world: World, svid: HybridSvid, port: int, expect: HybridSvid, mode: Mode = Mode.HYBRID
) -> SecureStreamWriter:
    _, writer = await open_connection(
        "127.0.0.1", port, source=world.source(svid),
        authorizer=authorize_id(expect.spiffe_id), mode=mode, proof_timeout=PROOF_TIMEOUT,
    )  # fmt: skip
    return writer


class Handler:
    """Records every connection the application sees (there must be none on a refusal)."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, reader: asyncio.StreamReader, writer: SecureStreamWriter) -> None:
        self.calls += 1
        writer.close()


async def _server(
    world: World, svid: HybridSvid, peer: HybridSvid, handler: Handler, mode: Mode = Mode.HYBRID
) -> SecureServer:
    return await start_server(
        handler, "127.0.0.1", 0, source=world.source(svid),
        authorizer=authorize_id(peer.spiffe_id), mode=mode, proof_timeout=PROOF_TIMEOUT,
    )  # fmt: skip


async def _wait_failure(server: SecureServer) -> Exception:
    for _ in range(200):
        if server.failures:
            return server.failures[0]
        await asyncio.sleep(0.01)
    raise AssertionError("the server recorded no refusal")


# --- key exchange ------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_classical_only_server_is_refused(
    world: World, server_svid: HybridSvid, client_svid: HybridSvid
) -> None:
    async def handshake(proto: TlsProtocol) -> None:
        await proto.handshake()

    async with RawServer(classical_only_context(server_svid, Mode.HYBRID), handshake) as rogue:
        with pytest.raises(NoHybridGroupError, match=re.escape("offers only X25519MLKEM768")):
            await _connect(world, client_svid, rogue.port, server_svid)


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", list(Mode), ids=[m.value for m in Mode])
async def test_classical_only_client_is_refused(
    mode: Mode, world: World, server_svid: HybridSvid, client_svid: HybridSvid
) -> None:
    handler = Handler()
    async with await _server(world, server_svid, client_svid, handler, mode) as server:
        proto = await raw_connect(classical_only_context(client_svid), server.port)
        with pytest.raises(NoHybridGroupError):
            await proto.handshake()
        error = await _wait_failure(server)
    assert isinstance(error, NoHybridGroupError)
    assert "offered no X25519MLKEM768" in str(error)
    assert handler.calls == 0


# --- identity ----------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", list(Mode), ids=[m.value for m in Mode])
async def test_wrong_spiffe_id_is_refused(
    mode: Mode, world: World, server_svid: HybridSvid, client_svid: HybridSvid
) -> None:
    handler = Handler()
    async with await _server(world, server_svid, client_svid, handler, mode) as server:
        with pytest.raises(AuthorizationError, match=re.escape("expected spiffe://example.org/client")):
            await _connect(
                world, client_svid, server.port, client_svid, mode
            )  # we expect "client", it is "server"
    if mode is Mode.HYBRID:
        # The refused server never received the client's proof, so it delivered nothing. (In the
        # other modes the server legitimately accepts the client before the client hangs up.)
        assert handler.calls == 0


@pytest.mark.asyncio
async def test_server_authorizer_refuses_client(
    world: World, server_svid: HybridSvid, client_svid: HybridSvid
) -> None:
    handler = Handler()
    foreign = world.other.mint("/client")
    async with await start_server(
        handler, "127.0.0.1", 0, source=world.source(server_svid),
        authorizer=authorize_member_of("example.org"),
    ) as server:  # fmt: skip
        # Hybrid mode: the server authorizes the client before sending its own proof, so the
        # refused client sees the channel close where the server's proof should have been.
        with pytest.raises(ProofMissingError, match=re.escape("closed the channel before its PQ proof")):
            await _connect(world, foreign, server.port, server_svid)
        error = await _wait_failure(server)
    assert isinstance(error, AuthorizationError)
    assert "not a member of trust domain example.org" in str(error)
    assert handler.calls == 0


@pytest.mark.asyncio
async def test_peer_from_another_trust_domain_is_checked_against_its_own_bundle(
    world: World, server_svid: HybridSvid, client_svid: HybridSvid
) -> None:
    """A leaf claiming example.org but issued by other.org's CA fails: bundles are never merged."""
    impostor_leaf, impostor_key = world.other.classical.issue_svid(server_svid.spiffe_id)
    impostor = replace(server_svid, classical_chain=(impostor_leaf,), classical_key=impostor_key)
    handler = Handler()
    async with await _server(world, impostor, client_svid, handler, Mode.SPIFFE) as server:
        with pytest.raises(ChainError, match=re.escape("classical chain does not verify")):
            await _connect(world, client_svid, server.port, server_svid, Mode.SPIFFE)


@pytest.mark.asyncio
async def test_pq_tls_chain_from_another_trust_domain_is_refused(
    world: World, server_svid: HybridSvid, client_svid: HybridSvid
) -> None:
    """An ML-DSA-65 SVID for example.org issued by other.org's PQC CA fails in pq-tls mode."""
    foreign_ca = world.other.hierarchy.intermediate
    key = MLDSA65PrivateKey.generate()
    now = dt.datetime.now(dt.UTC)
    leaf = certs.build_pqc_svid(
        foreign_ca.certificate, foreign_ca.key, key.public_key(), str(server_svid.spiffe_id),
        trust_domain="other.org", classical_leaf_der=der(server_svid.classical_chain[0]),
        not_before=now - dt.timedelta(minutes=1), not_after=now + dt.timedelta(minutes=30),
    )  # fmt: skip
    impostor = replace(server_svid, pqc_chain=(leaf, foreign_ca.certificate), pqc_key=key)
    handler = Handler()
    async with await _server(world, impostor, client_svid, handler, Mode.PQ_TLS) as server:
        with pytest.raises(ChainError, match=re.escape("PQC bundle")):
            await _connect(world, client_svid, server.port, server_svid, Mode.PQ_TLS)


# --- hybrid PQ proof ---------------------------------------------------------------------------


def _rogue(svid: HybridSvid, send: bytes | None, then_data: bytes = b"") -> RawServer:
    """A hybrid-mode server that completes TLS with ``svid``, then sends ``send`` as its proof."""

    async def behave(proto: TlsProtocol) -> None:
        await proto.handshake()
        if send is not None:
            proto.write(send)
        if then_data:
            proto.write(then_data)
        await asyncio.sleep(5)

    return RawServer(context_for(Mode.HYBRID, svid), behave)


@pytest.mark.asyncio
async def test_proof_replayed_from_another_session(
    world: World, server_svid: HybridSvid, client_svid: HybridSvid
) -> None:
    # Session 1: an honest server; the eavesdropper keeps that session's binding (and so its proof).
    handler = Handler()
    async with await _server(world, server_svid, client_svid, handler) as server:
        writer = await _connect(world, client_svid, server.port, server_svid)
        old_binding = pq.exporter(writer.get_extra_info("ssl_object"))
        writer.close()
        await writer.wait_closed()
    replayed = pq.make_proof(server_svid, old_binding, role="server").encode()

    async def behave(proto: TlsProtocol) -> None:
        await proto.handshake()
        assert pq.exporter(proto.tls) != old_binding
        proto.write(replayed)
        await asyncio.sleep(5)

    async with RawServer(context_for(Mode.HYBRID, server_svid), behave) as rogue:
        with pytest.raises(ProofSignatureError, match=re.escape("channel binding")):
            await _connect(world, client_svid, rogue.port, server_svid)


@pytest.mark.asyncio
async def test_proof_signed_by_a_different_key(
    world: World, server_svid: HybridSvid, client_svid: HybridSvid
) -> None:
    other_key = MLDSA65PrivateKey.generate()

    async def behave(proto: TlsProtocol) -> None:
        await proto.handshake()
        message = pq.signed_message(pq.exporter(proto.tls), signer_role="server")
        proof = pq.Proof(server_svid.pqc_chain, other_key.sign(message, context=pq.CONTEXT))
        proto.write(proof.encode())
        await asyncio.sleep(5)

    async with RawServer(context_for(Mode.HYBRID, server_svid), behave) as rogue:
        with pytest.raises(ProofSignatureError) as info:
            await _connect(world, client_svid, rogue.port, server_svid)
    assert info.value.check == "pq-proof-signature"


@pytest.mark.asyncio
async def test_proof_with_pqc_svid_of_another_classical_svid(
    world: World, server_svid: HybridSvid, client_svid: HybridSvid
) -> None:
    """A valid PQC SVID for the same ID, but bound to another classical SVID than the TLS one."""
    sibling = world.main.mint("/server")

    async def behave(proto: TlsProtocol) -> None:
        await proto.handshake()
        proto.write(pq.make_proof(sibling, pq.exporter(proto.tls), role="server").encode())
        await asyncio.sleep(5)

    async with RawServer(context_for(Mode.HYBRID, server_svid), behave) as rogue:
        with pytest.raises(RelatedCertificateError, match=re.escape("bound to another classical SVID")):
            await _connect(world, client_svid, rogue.port, server_svid)


@pytest.mark.asyncio
async def test_tampered_proof_chain(world: World, server_svid: HybridSvid, client_svid: HybridSvid) -> None:
    leaf = bytearray(der(server_svid.pqc_chain[0]))
    leaf[-5] ^= 0x01  # inside the CA's signature over the leaf
    tampered = (x509.load_der_x509_certificate(bytes(leaf)), *server_svid.pqc_chain[1:])

    async def behave(proto: TlsProtocol) -> None:
        await proto.handshake()
        good = pq.make_proof(server_svid, pq.exporter(proto.tls), role="server")
        proto.write(pq.Proof(tampered, good.signature).encode())
        await asyncio.sleep(5)

    async with RawServer(context_for(Mode.HYBRID, server_svid), behave) as rogue:
        with pytest.raises(ChainError, match=re.escape("signature does not verify")):
            await _connect(world, client_svid, rogue.port, server_svid)


@pytest.mark.asyncio
async def test_proof_naming_another_spiffe_id(
    world: World, server_svid: HybridSvid, client_svid: HybridSvid
) -> None:
    other = world.main.mint("/other")

    async def behave(proto: TlsProtocol) -> None:
        await proto.handshake()
        proto.write(pq.make_proof(other, pq.exporter(proto.tls), role="server").encode())
        await asyncio.sleep(5)

    async with RawServer(context_for(Mode.HYBRID, server_svid), behave) as rogue:
        with pytest.raises(IdentityMismatchError, match=re.escape("spiffe://example.org/other")):
            await _connect(world, client_svid, rogue.port, server_svid)


@pytest.mark.asyncio
async def test_reflected_proof_is_refused(
    world: World, server_svid: HybridSvid, client_svid: HybridSvid
) -> None:
    """A proof signed for the other role (reflection) does not verify."""

    async def behave(proto: TlsProtocol) -> None:
        await proto.handshake()
        proto.write(pq.make_proof(server_svid, pq.exporter(proto.tls), role="client").encode())
        await asyncio.sleep(5)

    async with RawServer(context_for(Mode.HYBRID, server_svid), behave) as rogue:
        with pytest.raises(ProofSignatureError):
            await _connect(world, client_svid, rogue.port, server_svid)


@pytest.mark.asyncio
async def test_server_that_never_sends_its_proof_times_out(
    world: World, server_svid: HybridSvid, client_svid: HybridSvid
) -> None:
    async with _rogue(server_svid, None) as rogue:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(ProofMissingError, match=re.escape("no PQ proof from the peer within 0.5s")):
            await _connect(world, client_svid, rogue.port, server_svid)
        assert loop.time() - started >= PROOF_TIMEOUT


@pytest.mark.asyncio
async def test_data_instead_of_proof_is_refused(
    world: World, server_svid: HybridSvid, client_svid: HybridSvid
) -> None:
    async with _rogue(server_svid, b"GET / HTTP/1.1\r\n\r\n") as rogue:
        with pytest.raises(MalformedCredentialError, match=re.escape("is the peer in hybrid mode")):
            await _connect(world, client_svid, rogue.port, server_svid)


@pytest.mark.asyncio
async def test_client_that_never_sends_its_proof_gets_no_data_delivered(
    world: World, server_svid: HybridSvid, client_svid: HybridSvid
) -> None:
    """A client that completes TLS then stays silent, and one that sends data instead of a proof:
    the server's handler never runs, and each refusal is recorded with its type."""
    handler = Handler()
    async with await _server(world, server_svid, client_svid, handler) as server:
        silent = await raw_connect(context_for(Mode.HYBRID, client_svid), server.port)
        await silent.handshake()
        chatty = await raw_connect(context_for(Mode.HYBRID, client_svid), server.port)
        await chatty.handshake()
        chatty.write(b"application data before any proof")
        for _ in range(300):
            if len(server.failures) == 2:
                break
            await asyncio.sleep(0.01)
        silent.close()
        chatty.close()
    kinds = sorted(type(e).__name__ for e in server.failures)
    assert kinds == ["MalformedCredentialError", "ProofMissingError"]
    assert handler.calls == 0
