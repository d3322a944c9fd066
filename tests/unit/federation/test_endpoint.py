"""The PQC bundle endpoint and its client over real loopback TLS, and the watcher that follows it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from OpenSSL import SSL

from spire_pqc.bundle import BundleSet, X509Bundle
from spire_pqc.ca.devca import DevClassicalCA
from spire_pqc.channel.context import restrict_groups
from spire_pqc.errors import (
    AuthorizationError,
    BundleSignatureError,
    ChainError,
    FederationError,
)
from spire_pqc.federation.client import BundleEndpoint, fetch_signed_bundle
from spire_pqc.federation.document import SignedBundle, verify_signed_bundle
from spire_pqc.federation.endpoint import MAX_CONNECTIONS_PER_ADDRESS, BundleEndpointServer
from spire_pqc.federation.watcher import FederatedBundleWatcher, FederatedTrust, RemoteTrust
from spire_pqc.spiffeid import SpiffeId
from tests.unit.federation.pki import RemoteDomain

pytestmark = pytest.mark.asyncio


def _serve(remote: RemoteDomain) -> BundleEndpointServer:
    svid = remote.server_svid()

    def document() -> SignedBundle:
        assert remote.served is not None
        return remote.served

    return BundleEndpointServer(document=document, svid=lambda: svid)


def _endpoint(remote: RemoteDomain, port: int, endpoint_id: SpiffeId | None = None) -> BundleEndpoint:
    return BundleEndpoint(remote.td, "127.0.0.1", port, endpoint_id or remote.endpoint_id)


async def test_a_client_fetches_and_verifies_the_signed_bundle() -> None:
    remote = RemoteDomain.generate()
    remote.publish()
    async with _serve(remote) as server:
        await server.start("127.0.0.1", 0)
        signed = await fetch_signed_bundle(
            _endpoint(remote, server.port), classical_bundles=remote.classical_bundles()
        )
    assert signed == remote.served
    assert verify_signed_bundle(remote.td, signed, trusted_roots=remote.roots).sequence == 1


async def test_the_endpoint_speaks_only_the_hybrid_key_exchange() -> None:
    remote = RemoteDomain.generate()
    remote.publish()
    async with _serve(remote) as server:
        await server.start("127.0.0.1", 0)
        # A classical-only TLS 1.3 client (X25519) gets no handshake.
        ctx = SSL.Context(SSL.TLS_METHOD)
        ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
        restrict_groups(ctx, b"X25519")

        def handshake() -> None:
            import socket

            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
                conn = SSL.Connection(ctx, sock)
                conn.set_connect_state()
                conn.do_handshake()

        with pytest.raises(SSL.Error):
            await asyncio.to_thread(handshake)


async def test_the_client_refuses_a_server_with_another_spiffe_id() -> None:
    remote = RemoteDomain.generate()
    remote.publish()
    async with _serve(remote) as server:
        await server.start("127.0.0.1", 0)
        other = SpiffeId.parse("spiffe://b.org/somebody-else")
        with pytest.raises(AuthorizationError, match="not the configured"):
            await fetch_signed_bundle(
                _endpoint(remote, server.port, other), classical_bundles=remote.classical_bundles()
            )


async def test_the_client_refuses_a_server_svid_from_another_ca() -> None:
    remote = RemoteDomain.generate()
    remote.publish()
    stranger = BundleSet([X509Bundle(remote.td, [DevClassicalCA(remote.td, None).certificate])])
    async with _serve(remote) as server:
        await server.start("127.0.0.1", 0)
        with pytest.raises(ChainError):
            await fetch_signed_bundle(_endpoint(remote, server.port), classical_bundles=stranger)


async def test_an_unsigned_response_is_refused() -> None:
    remote = RemoteDomain.generate()
    signed = remote.publish()
    remote.served = SignedBundle(signed.document, "")
    async with _serve(remote) as server:
        await server.start("127.0.0.1", 0)
        with pytest.raises(BundleSignatureError, match="unsigned"):
            await fetch_signed_bundle(
                _endpoint(remote, server.port), classical_bundles=remote.classical_bundles()
            )


async def test_an_unreachable_endpoint_is_a_federation_error() -> None:
    remote = RemoteDomain.generate()
    async with _serve(remote) as server:
        await server.start("127.0.0.1", 0)
        port = server.port
    with pytest.raises(FederationError, match="cannot connect"):
        await fetch_signed_bundle(
            _endpoint(remote, port), classical_bundles=remote.classical_bundles(), timeout=5
        )


async def test_a_client_that_stalls_is_dropped_and_the_server_keeps_serving() -> None:
    remote = RemoteDomain.generate()
    remote.publish()
    server = _serve(remote)
    server._timeout = 0.5
    async with server:
        await server.start("127.0.0.1", 0)
        stalled = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(5)]
        signed = await fetch_signed_bundle(
            _endpoint(remote, server.port), classical_bundles=remote.classical_bundles()
        )
        assert signed == remote.served
        for reader, writer in stalled:
            assert await asyncio.wait_for(reader.read(), timeout=30) == b""  # closed by the server's timeout
            writer.close()


async def test_one_client_address_cannot_take_every_connection_slot() -> None:
    """A client at 127.0.0.2 holding the per-address cap of idle connections has its next one closed at
    once (no TLS); a client at another address still gets the bundle."""
    remote = RemoteDomain.generate()
    remote.publish()
    server = _serve(remote)
    async with server:
        await server.start("127.0.0.1", 0)
        held = [
            await asyncio.open_connection("127.0.0.1", server.port, local_addr=("127.0.0.2", 0))
            for _ in range(MAX_CONNECTIONS_PER_ADDRESS)
        ]
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port, local_addr=("127.0.0.2", 0))
        try:
            closed = await asyncio.wait_for(reader.read(), timeout=3)  # well before the 10 s timeout
        except ConnectionResetError:
            closed = b""
        assert closed == b""
        writer.close()
        assert server.refused == 1
        signed = await fetch_signed_bundle(
            _endpoint(remote, server.port), classical_bundles=remote.classical_bundles()
        )
        assert signed == remote.served
        for _, w in held:
            w.close()


def _watcher(remote: RemoteDomain, port: int, **kwargs: object) -> FederatedBundleWatcher:
    return FederatedBundleWatcher(
        [RemoteTrust(_endpoint(remote, port), remote.roots)],
        classical_bundles=remote.classical_bundles(),
        **kwargs,  # type: ignore[arg-type]
    )


async def test_tampered_and_unsigned_bundles_are_refused_and_the_last_good_one_kept(tmp_path: Path) -> None:
    remote = RemoteDomain.generate()
    good = remote.publish()
    async with _serve(remote) as server:
        await server.start("127.0.0.1", 0)
        watcher = _watcher(remote, server.port)
        assert await watcher.refresh(remote.td)
        kept = watcher.trust(remote.td)
        assert kept.signed == good

        doc = json.loads(remote.publish().document)
        doc["keys"] = list(reversed(doc["keys"]))  # the same keys in another order
        remote.served = SignedBundle(json.dumps(doc).encode(), remote.served.signature)  # type: ignore[union-attr]
        with pytest.raises(BundleSignatureError, match="does not verify"):
            await watcher.refresh(remote.td)
        assert watcher.trust(remote.td) == kept

        remote.served = SignedBundle(remote.publish().document, "")
        with pytest.raises(BundleSignatureError, match="unsigned"):
            await watcher.refresh(remote.td)
        assert watcher.trust(remote.td) == kept
        assert watcher.pqc_bundles().get(remote.td).authorities == remote.roots


async def test_a_root_rotation_reaches_the_watcher_without_a_restart(tmp_path: Path) -> None:
    remote = RemoteDomain.generate()
    old_root = remote.roots[0]
    remote.publish(refresh_hint=1)
    updates: list[FederatedTrust] = []
    async with _serve(remote) as server:
        await server.start("127.0.0.1", 0)
        watcher = _watcher(
            remote, server.port, on_update=updates.append, state_dir=tmp_path / "state", min_refresh=0.05
        )
        task = asyncio.create_task(watcher.run())
        try:

            async def until(condition: object) -> None:
                async with asyncio.timeout(60):
                    while not condition():  # type: ignore[operator]
                        await asyncio.sleep(0.05)

            await until(lambda: len(updates) == 1)
            new = remote.rotate()
            remote.publish(
                refresh_hint=1, sign_with=remote.hierarchies[0]
            )  # overlap, signed under the old root
            await until(lambda: len(updates) == 2)
            assert set(updates[-1].roots) == {old_root, new.root}
            remote.retire_first()
            remote.publish(refresh_hint=1)  # signed under the new root only
            await until(lambda: len(updates) == 3)
            assert updates[-1].roots == (new.root,)
            assert watcher.pqc_bundles().get(remote.td).authorities == (new.root,)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        # A restarted watcher configured with the old initial root keeps the rotated trust.
        restarted = _watcher(remote, server.port, state_dir=tmp_path / "state")
        restarted_roots = restarted.trust(remote.td).roots
        assert restarted_roots == (new.root,)
        assert (tmp_path / "state" / "b.org.json").stat().st_mode & 0o077 == 0


async def test_a_corrupt_kept_state_falls_back_to_the_initial_roots(tmp_path: Path) -> None:
    remote = RemoteDomain.generate()
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "b.org.json").write_bytes(b'{"document": "AAAA", "signature": ""}')
    (state / "b.org.json").chmod(0o600)
    watcher = _watcher(remote, 1, state_dir=state)
    assert watcher.trust(remote.td).roots == remote.roots
    assert watcher.trust(remote.td).bundle is None
