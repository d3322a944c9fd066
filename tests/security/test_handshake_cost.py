"""Issue 9, item 7: a hybrid server signs its ML-DSA proof only for a peer it has authenticated.

The attackers are OpenSSL 3.5 ``s_client`` processes that complete the X25519MLKEM768 handshake with a
classical certificate the server must refuse: one from a CA outside the trust domain's bundle, one from
the right CA but for a SPIFFE ID the authorizer does not allow. The server's ML-DSA signing
(``proof.make_proof``, spied on, still running the real function) must not run for either; an
authorized client then completes the hybrid channel and both sides sign once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import Encoding

from spire_pqc.bench.openssl_cli import OpenSSLCli, find_openssl35
from spire_pqc.ca.devca import DevClassicalCA
from spire_pqc.channel import proof
from spire_pqc.channel.api import SecureStreamWriter, open_connection, start_server
from spire_pqc.channel.authorize import authorize_id
from spire_pqc.svid import HybridSvid
from tests.unit.channel._creds import World, make_world


@pytest.fixture(scope="module")
def world() -> World:
    return make_world()


@pytest.fixture
def signatures(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every proof signed in this process, by role (a spy: the real function still runs)."""
    calls: list[str] = []
    real = proof.make_proof

    def spy(svid: HybridSvid, exporter_value: bytes, *, role: str) -> Any:
        calls.append(role)
        return real(svid, exporter_value, role=role)

    monkeypatch.setattr(proof, "make_proof", spy)
    yield calls


def _pem_files(directory: Path, chain: tuple[Any, ...], key: Any) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cert.pem").write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in chain))
    (directory / "key.pem").write_bytes(
        key.private_bytes(Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return ["-cert", str(directory / "cert.pem"), "-key", str(directory / "key.pem")]


async def _s_client(openssl: OpenSSLCli, port: int, cert_args: list[str]) -> str:
    process = await asyncio.create_subprocess_exec(
        str(openssl.path), "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_3",
        "-groups", "X25519MLKEM768", "-alpn", "spire-pqc-hybrid/1", *cert_args,  # a hybrid-mode peer
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(b""), 60)
    return output.decode(errors="replace")


@pytest.mark.openssl35
@pytest.mark.asyncio
async def test_no_ml_dsa_signature_for_an_unauthenticated_or_unauthorized_peer(
    world: World, signatures: list[str], tmp_path: Path
) -> None:
    openssl = find_openssl35()
    server_svid = world.main.mint("/server")
    client_svid = world.main.mint("/client")
    intruder = world.main.mint("/intruder")  # right CA, wrong SPIFFE ID
    rogue_ca = DevClassicalCA(world.main.trust_domain, world.main.hierarchy.intermediate.key)
    rogue_leaf, rogue_key = rogue_ca.issue_svid(client_svid.spiffe_id)  # right ID, CA outside the bundle
    served: list[str] = []

    async def handler(reader: asyncio.StreamReader, writer: SecureStreamWriter) -> None:
        served.append(str(writer.peer_id()))
        writer.close()

    async with await start_server(
        handler, "127.0.0.1", 0, source=world.source(server_svid),
        authorizer=authorize_id(client_svid.spiffe_id),
    ) as server:  # fmt: skip
        for name, chain, key in (
            ("rogue-ca", (rogue_leaf,), rogue_key),
            ("intruder", intruder.classical_chain, intruder.classical_key),
        ):
            output = await _s_client(openssl, server.port, _pem_files(tmp_path / name, chain, key))
            assert "X25519MLKEM768" in output, output  # the TLS handshake itself completed
        async with asyncio.timeout(30):
            while len(server.failures) < 2:
                await asyncio.sleep(0.01)
        assert signatures == [], "the server signed a PQ proof for a peer it had not authenticated"
        checks = sorted(type(f).__name__ for f in server.failures)
        assert checks == ["AuthorizationError", "ChainError"], checks
        # The spy sees real signing: an authorized client gets a hybrid channel, one proof per side.
        _, writer = await open_connection(
            "127.0.0.1", server.port, source=world.source(client_svid),
            authorizer=authorize_id(server_svid.spiffe_id),
        )  # fmt: skip
        writer.close()
        async with asyncio.timeout(30):
            while not served:
                await asyncio.sleep(0.01)
    assert sorted(signatures) == ["client", "server"]
    assert served == [str(client_svid.spiffe_id)]
