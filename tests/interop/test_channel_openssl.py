"""pq-tls mode against an independent TLS stack: the OpenSSL >= 3.5 command line (``make openssl``).

OpenSSL's ``s_client`` and ``s_server`` use our ML-DSA-65 PQC SVIDs (seed-form PKCS#8 keys) as TLS
certificates, offer only X25519MLKEM768, and verify our chains with their own X.509 code, while our
side verifies theirs with verify_pqc_svid against the PQC bundle. These tests fail (never skip) when
the binary is missing.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from spire_pqc.bench.openssl_cli import OpenSSLCli, find_openssl35
from spire_pqc.channel.api import SecureStreamWriter, open_connection, start_server
from spire_pqc.channel.authorize import authorize_id
from spire_pqc.channel.sources import Mode
from spire_pqc.crypto.keys import NoEncryption
from spire_pqc.errors import NoHybridGroupError
from spire_pqc.svid import HybridSvid
from tests.unit.channel._creds import World, make_world

pytestmark = [pytest.mark.openssl35, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def openssl() -> OpenSSLCli:
    return find_openssl35()  # raises NotConfiguredError ("run make openssl") instead of skipping


@pytest.fixture(scope="module")
def world() -> World:
    return make_world()


@pytest.fixture(scope="module")
def server_svid(world: World) -> HybridSvid:
    return world.main.mint("/server")


@pytest.fixture(scope="module")
def client_svid(world: World) -> HybridSvid:
    return world.main.mint("/openssl-peer")


def _files(directory: Path, svid: HybridSvid, world: World) -> dict[str, str]:
    """PEM files OpenSSL reads: PQC leaf, its intermediate(s), the seed-form ML-DSA key, the PQC root."""
    directory.mkdir(exist_ok=True)
    files = {
        "cert": svid.pqc_chain[0].public_bytes(Encoding.PEM),
        "chain": b"".join(c.public_bytes(Encoding.PEM) for c in svid.pqc_chain[1:]),
        "key": svid.pqc_key.pem(NoEncryption()),
        "root": world.main.hierarchy.root.public_bytes(Encoding.PEM),
    }
    paths = {}
    for name, data in files.items():
        path = directory / f"{name}.pem"
        path.write_bytes(data)
        path.chmod(0o600)
        paths[name] = str(path)
    return paths


def _s_client(port: int, files: dict[str, str], group: str) -> list[str]:
    args = ["s_client", "-connect", f"127.0.0.1:{port}", "-tls1_3", "-groups", group]
    args += ["-cert", files["cert"], "-cert_chain", files["chain"], "-key", files["key"]]
    args += ["-CAfile", files["root"], "-verify_return_error", "-ign_eof"]
    return args


async def _run(openssl: OpenSSLCli, args: list[str], stdin: bytes) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        str(openssl.path), *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(stdin), 60)
    return process.returncode or 0, output.decode(errors="replace")


@pytest.mark.asyncio
async def test_openssl_s_client_against_our_pq_tls_server(
    openssl: OpenSSLCli, world: World, server_svid: HybridSvid, client_svid: HybridSvid, tmp_path: Path
) -> None:
    peers: list[str] = []

    async def handler(reader: asyncio.StreamReader, writer: SecureStreamWriter) -> None:
        peers.append(str(writer.peer_id()))
        line = await reader.readline()
        writer.write(b"PONG " + line.strip() + b" from " + str(writer.peer_id()).encode() + b"\n")
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    files = _files(tmp_path / "client", client_svid, world)
    async with await start_server(
        handler, "127.0.0.1", 0, source=world.source(server_svid),
        authorizer=authorize_id(client_svid.spiffe_id), mode=Mode.PQ_TLS,
    ) as server:  # fmt: skip
        code, out = await _run(openssl, _s_client(server.port, files, "X25519MLKEM768"), b"ping\n")
    assert code == 0, out
    assert "Negotiated TLS1.3 group: X25519MLKEM768" in out, out
    assert "Verify return code: 0 (ok)" in out, out
    assert re.search(r"Peer signature type: (mldsa65|ML-DSA-65)", out), out
    assert f"PONG ping from {client_svid.spiffe_id}" in out, out
    assert peers == [str(client_svid.spiffe_id)]
    assert not server.failures


@pytest.mark.asyncio
async def test_our_pq_tls_client_against_openssl_s_server(
    openssl: OpenSSLCli, world: World, server_svid: HybridSvid, client_svid: HybridSvid, tmp_path: Path
) -> None:
    files = _files(tmp_path / "server", server_svid, world)
    process = await asyncio.create_subprocess_exec(
        str(openssl.path), "s_server", "-accept", "127.0.0.1:0", "-naccept", "1", "-tls1_3",
        "-groups", "X25519MLKEM768", "-cert", files["cert"], "-cert_chain", files["chain"],
        "-key", files["key"], "-CAfile", files["root"], "-Verify", "2", "-verify_return_error", "-rev",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert process.stdout is not None
    try:
        port = 0
        seen: list[str] = []
        while not port:
            line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
            assert line, "s_server exited: " + "".join(seen)
            seen.append(line)
            if match := re.match(r"ACCEPT 127\.0\.0\.1:(\d+)", line):
                port = int(match.group(1))
        reader, writer = await open_connection(
            "127.0.0.1", port, source=world.source(client_svid),
            authorizer=authorize_id(server_svid.spiffe_id), mode="pq-tls",
        )  # fmt: skip
        assert writer.group == "X25519MLKEM768"
        assert writer.peer_id() == server_svid.spiffe_id
        writer.write(b"post-quantum\n")
        await writer.drain()
        reply = await asyncio.wait_for(reader.readline(), 30)
        assert reply.strip() == b"mutnauq-tsop"
        writer.close()
        await writer.wait_closed()
        rest = (await asyncio.wait_for(process.stdout.read(), 30)).decode()
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
    log = "".join(seen) + rest
    # OpenSSL verified our ML-DSA-65 client chain to the PQC root and saw only the hybrid group.
    assert "Verification: OK" in log, log
    assert "Signature type: mldsa65" in log, log
    assert "Supported groups: X25519MLKEM768" in log, log
    assert "Peer Temp Key: X25519MLKEM768" in log, log


@pytest.mark.asyncio
async def test_classical_only_openssl_client_is_refused(
    openssl: OpenSSLCli, world: World, server_svid: HybridSvid, client_svid: HybridSvid, tmp_path: Path
) -> None:
    files = _files(tmp_path / "client", client_svid, world)

    async def handler(reader: asyncio.StreamReader, writer: SecureStreamWriter) -> None:
        raise AssertionError("a classical-only client must never reach the application")

    async with await start_server(
        handler, "127.0.0.1", 0, source=world.source(server_svid),
        authorizer=authorize_id(client_svid.spiffe_id), mode=Mode.PQ_TLS,
    ) as server:  # fmt: skip
        code, out = await _run(openssl, _s_client(server.port, files, "X25519"), b"")
        for _ in range(100):
            if server.failures:
                break
            await asyncio.sleep(0.02)
    assert code != 0, out
    assert "handshake failure" in out, out
    assert [type(e) for e in server.failures] == [NoHybridGroupError]
