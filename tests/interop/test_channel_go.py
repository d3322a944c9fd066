"""spiffe mode against Go's crypto/tls configured by go-spiffe's tlsconfig (built by the test).

The Go program (tests/interop/gotls) loads a classical X509-SVID and a bundle with go-spiffe v2,
builds ``tlsconfig.MTLSServerConfig`` / ``MTLSClientConfig`` with ``AuthorizeID`` and offers only
X25519MLKEM768 (or only X25519, for the refusal case). Go verifies our SVIDs (which carry the
SvidBinding extension) with its own crypto/x509; our side verifies Go's with the classical bundle.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from spire_pqc.channel.api import SecureStreamWriter, open_connection, start_server
from spire_pqc.channel.authorize import authorize_id
from spire_pqc.channel.sources import Mode
from spire_pqc.errors import ModeMismatchError, NoHybridGroupError
from spire_pqc.svid import HybridSvid
from tests.unit.channel._creds import World, make_world

pytestmark = pytest.mark.timeout(600)

SOURCE = Path(__file__).parent / "gotls"
# Go's tls.X25519MLKEM768 is the IANA codepoint 0x11EC (reference: draft-ietf-tls-ecdhe-mlkem).
X25519MLKEM768_ID = 4588


@pytest.fixture(scope="module")
def gotls(tmp_path_factory: pytest.TempPathFactory) -> Path:
    go = shutil.which("go")
    assert go, "the Go toolchain is required for the Go crypto/tls interop test"
    binary = tmp_path_factory.mktemp("gotls") / "gotls"
    result = subprocess.run(
        [go, "build", "-o", str(binary), "."],
        cwd=SOURCE,
        check=False,
        capture_output=True,
        text=True,
        timeout=480,
        env=dict(os.environ, CGO_ENABLED="0"),
    )
    assert result.returncode == 0, f"go build failed:\n{result.stdout}{result.stderr}"
    return binary


@pytest.fixture(scope="module")
def world() -> World:
    return make_world()


@pytest.fixture(scope="module")
def ours(world: World) -> HybridSvid:
    return world.main.mint("/python")


@pytest.fixture(scope="module")
def theirs(world: World) -> HybridSvid:
    return world.main.mint("/go")


def _go_args(directory: Path, svid: HybridSvid, world: World, peer: HybridSvid) -> list[str]:
    """Write the Go side's SVID chain, PKCS#8 key and bundle as PEM; return its credential flags."""
    directory.mkdir(exist_ok=True)
    pem = serialization.Encoding.PEM
    files = {
        "svid": b"".join(c.public_bytes(pem) for c in svid.classical_chain),
        "key": svid.classical_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        "bundle": world.main.classical.certificate.public_bytes(pem),
    }
    args: list[str] = []
    for name, data in files.items():
        path = directory / f"{name}.pem"
        path.write_bytes(data)
        path.chmod(0o600)
        args += [f"-{name}", str(path)]
    return [*args, "-peer", str(peer.spiffe_id)]


async def _run(binary: Path, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        str(binary), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode(), err.decode()


def _curve(stdout: str) -> int:
    match = re.search(r"^curve (\d+) ", stdout, re.MULTILINE)
    assert match, stdout
    return int(match.group(1))


async def _echo(reader: asyncio.StreamReader, writer: SecureStreamWriter) -> None:
    line = await reader.readline()
    writer.write(line)
    await writer.drain()
    writer.close()
    await writer.wait_closed()


@pytest.mark.asyncio
async def test_go_client_against_our_spiffe_server(
    gotls: Path, world: World, ours: HybridSvid, theirs: HybridSvid, tmp_path: Path
) -> None:
    seen: list[tuple[str, str, Mode]] = []

    async def handler(reader: asyncio.StreamReader, writer: SecureStreamWriter) -> None:
        seen.append((str(writer.peer_id()), writer.group, writer.mode))
        await _echo(reader, writer)

    creds = _go_args(tmp_path / "go", theirs, world, ours)
    async with await start_server(
        handler, "127.0.0.1", 0, source=world.source(ours),
        authorizer=authorize_id(theirs.spiffe_id), mode=Mode.SPIFFE,
    ) as server:  # fmt: skip
        code, out, err = await _run(
            gotls, "client", "-addr", f"127.0.0.1:{server.port}", *creds, "-line", "hello from go"
        )
    assert code == 0, err
    assert "echo hello from go" in out.splitlines(), out
    assert _curve(out) == X25519MLKEM768_ID, out
    assert seen == [(str(theirs.spiffe_id), "X25519MLKEM768", Mode.SPIFFE)]
    assert not server.failures


@pytest.mark.asyncio
async def test_our_spiffe_client_against_go_server(
    gotls: Path, world: World, ours: HybridSvid, theirs: HybridSvid, tmp_path: Path
) -> None:
    creds = _go_args(tmp_path / "go", theirs, world, ours)
    process = await asyncio.create_subprocess_exec(
        str(gotls), "server", *creds, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None and process.stderr is not None
    try:
        first = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        match = re.fullmatch(r"listening (\d+)\n", first)
        assert match, first + (await process.stderr.read()).decode()
        reader, writer = await open_connection(
            "127.0.0.1", int(match.group(1)), source=world.source(ours),
            authorizer=authorize_id(theirs.spiffe_id),
            mode="spiffe",
        )  # fmt: skip
        assert writer.group == "X25519MLKEM768"
        assert writer.mode is Mode.SPIFFE
        assert writer.peer_id() == theirs.spiffe_id
        writer.write(b"hello from python\n")
        await writer.drain()
        assert await asyncio.wait_for(reader.readline(), 30) == b"hello from python\n"
        writer.close()
        await writer.wait_closed()
        out, err = await asyncio.wait_for(process.communicate(), 30)
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
    assert process.returncode == 0, err.decode()
    assert _curve(out.decode()) == X25519MLKEM768_ID, out
    assert f"peer {ours.spiffe_id}" in out.decode().splitlines(), out


@pytest.mark.asyncio
async def test_x25519_only_go_client_is_refused(
    gotls: Path, world: World, ours: HybridSvid, theirs: HybridSvid, tmp_path: Path
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: SecureStreamWriter) -> None:
        raise AssertionError("a classical-only client must never reach the application")

    creds = _go_args(tmp_path / "go", theirs, world, ours)
    async with await start_server(
        handler, "127.0.0.1", 0, source=world.source(ours),
        authorizer=authorize_id(theirs.spiffe_id), mode=Mode.SPIFFE,
    ) as server:  # fmt: skip
        code, out, err = await _run(
            gotls, "client", "-addr", f"127.0.0.1:{server.port}", *creds, "-curve", "x25519"
        )
        for _ in range(100):
            if server.failures:
                break
            await asyncio.sleep(0.02)
    assert code != 0, out
    assert "handshake failure" in err, err
    assert [type(e) for e in server.failures] == [NoHybridGroupError]
    assert server.accepted == 0


@pytest.mark.asyncio
async def test_our_spiffe_client_refuses_x25519_only_go_server(
    gotls: Path, world: World, ours: HybridSvid, theirs: HybridSvid, tmp_path: Path
) -> None:
    creds = _go_args(tmp_path / "go", theirs, world, ours)
    process = await asyncio.create_subprocess_exec(
        str(gotls), "server", *creds, "-curve", "x25519",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    try:
        first = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        match = re.fullmatch(r"listening (\d+)\n", first)
        assert match, first
        with pytest.raises(NoHybridGroupError):
            await open_connection(
                "127.0.0.1", int(match.group(1)), source=world.source(ours),
                authorizer=authorize_id(theirs.spiffe_id),
                mode=Mode.SPIFFE,
            )  # fmt: skip
        _, err = await asyncio.wait_for(process.communicate(), 30)
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
    assert process.returncode != 0
    assert "handshake" in err.decode(), err


# --- mode mismatch: our hybrid end facing a standard SPIFFE peer (Go crypto/tls + go-spiffe) --------


@pytest.mark.asyncio
async def test_go_spiffe_client_against_our_hybrid_server_gets_nothing(
    gotls: Path, world: World, ours: HybridSvid, theirs: HybridSvid, tmp_path: Path
) -> None:
    """The Go client sends no ALPN: our hybrid server refuses it before writing anything, so the Go
    application reads no PQ proof and ours is never called."""
    calls: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: SecureStreamWriter) -> None:
        calls.append(await reader.read())

    creds = _go_args(tmp_path / "go", theirs, world, ours)
    async with await start_server(
        handler, "127.0.0.1", 0, source=world.source(ours), authorizer=authorize_id(theirs.spiffe_id),
        mode=Mode.HYBRID,
    ) as server:  # fmt: skip
        code, out, err = await _run(
            gotls, "client", "-addr", f"127.0.0.1:{server.port}", *creds, "-line", "hello from go"
        )
        async with asyncio.timeout(30):
            while not server.failures:
                await asyncio.sleep(0.01)
    assert code != 0, out
    assert "echo" not in out, out  # the Go application received no line (no proof bytes either)
    assert "client: read:" in err, err
    assert calls == []
    refusal = server.failures[0]
    assert isinstance(refusal, ModeMismatchError), repr(refusal)
    assert "no ALPN" in str(refusal) and "hybrid" in str(refusal)


@pytest.mark.asyncio
async def test_our_hybrid_client_against_go_spiffe_server_sends_nothing(
    gotls: Path, world: World, ours: HybridSvid, theirs: HybridSvid, tmp_path: Path
) -> None:
    """The Go server selects no ALPN: our hybrid client refuses before its PQ proof, so the Go
    application reads nothing (before ALPN it read ~14 KiB of proof as a request)."""
    creds = _go_args(tmp_path / "go", theirs, world, ours)
    process = await asyncio.create_subprocess_exec(
        str(gotls), "server", *creds, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None and process.stderr is not None
    try:
        first = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        match = re.fullmatch(r"listening (\d+)\n", first)
        assert match, first + (await process.stderr.read()).decode()
        with pytest.raises(ModeMismatchError, match="did not select ALPN"):
            await open_connection(
                "127.0.0.1", int(match.group(1)), source=world.source(ours),
                authorizer=authorize_id(theirs.spiffe_id), mode=Mode.HYBRID,
            )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), 30)
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
    assert process.returncode != 0, out.decode()
    assert "server: read:" in err.decode(), err.decode()  # no line ever reached the Go application
    assert "peer" not in out.decode(), out.decode()
