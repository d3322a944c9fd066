"""`spire-pqc bench channel`: mutual-handshake latency and bytes per channel mode, in one run.

Every mode runs on the same stack (pyOpenSSL memory BIOs on asyncio, loopback TCP, both ends in this
process) with dev credentials minted the production way (dev classical CA with SvidBinding, PQC
issuance). The baseline is classical SPIFFE mTLS: ECDSA P-256 SVIDs with the X25519 key exchange,
verified exactly like ``spiffe`` mode. Modes are interleaved per iteration so machine noise hits
all of them alike. Per connection:

* ``connect``: until the client has a verified connection (``open_connection`` returned; in hybrid
  mode that includes receiving and verifying the server's PQ proof);
* ``ready``: until a one-byte echo came back, i.e. the server also verified and accepted the client;
* ``bytes``: raw TLS bytes the client sent and received until ``connect`` (handshake + proofs).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import socket
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from spire_pqc.bench.openssl_cli import OpenSSLCli, find_openssl35
from spire_pqc.bundle import BundleSet, X509Bundle
from spire_pqc.ca.devca import DevClassicalCA, PQCHierarchy
from spire_pqc.ca.issuer import PQCIssuer
from spire_pqc.ca.request import build_request
from spire_pqc.channel.api import SecureServer, open_connection, start_server
from spire_pqc.channel.authorize import authorize_id
from spire_pqc.channel.context import context_for, restrict_groups
from spire_pqc.channel.session import peer_chain
from spire_pqc.channel.sources import Mode
from spire_pqc.channel.tlsproto import TlsAppTransport, TlsProtocol
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey
from spire_pqc.crypto.mlkem import MLKEM768PrivateKey
from spire_pqc.source import StaticHybridSource
from spire_pqc.spiffeid import SpiffeId, TrustDomain
from spire_pqc.svid import HybridSvid, der, verify_classical_svid

BASELINE = "classical mTLS (X25519)"


@dataclass(frozen=True)
class ModeResult:
    name: str
    connect_p50_ms: float
    ready_p50_ms: float
    ready_p99_ms: float
    client_sent: int
    client_received: int
    # Process CPU (both ends, all threads) per handshake: what a busy node pays, unlike latency.
    cpu_p50_ms: float = 0.0

    @property
    def total_bytes(self) -> int:
        return self.client_sent + self.client_received


@dataclass(frozen=True)
class ChannelReport:
    handshakes: int
    results: tuple[ModeResult, ...]


def _p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def _mint(trust_domain: TrustDomain, ca: DevClassicalCA, issuer: PQCIssuer, path: str) -> HybridSvid:
    spiffe_id = SpiffeId.from_parts(trust_domain, path)
    leaf, key = ca.issue_svid(spiffe_id)
    mldsa, mlkem = MLDSA65PrivateKey.generate(), MLKEM768PrivateKey.generate()
    request = build_request(
        (der(leaf),), key, mldsa, mlkem.public_key().spki(), timestamp_ms=int(time.time() * 1000)
    )
    response = issuer.issue(request).response
    load = x509.load_der_x509_certificate
    return HybridSvid(
        spiffe_id=spiffe_id,
        classical_chain=(leaf,),
        classical_key=key,
        pqc_chain=tuple(load(c) for c in response.pqc_svid_chain),
        pqc_key=mldsa,
        kem_chain=tuple(load(c) for c in response.kem_certificate_chain),
        kem_key=mlkem,
    )


@dataclass(frozen=True)
class _World:
    server: HybridSvid
    client: HybridSvid
    classical: BundleSet
    pqc: BundleSet


def _world() -> _World:
    td = TrustDomain.parse("bench.example")
    hierarchy = PQCHierarchy.generate(td)
    ca = DevClassicalCA(td, hierarchy.intermediate.key)
    issuer = PQCIssuer(hierarchy.intermediate, td, BundleSet.from_certificates([ca.certificate]))
    return _World(
        _mint(td, ca, issuer, "/server"),
        _mint(td, ca, issuer, "/client"),
        BundleSet([X509Bundle(td, [ca.certificate])]),
        BundleSet([X509Bundle(td, [hierarchy.root])]),
    )


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(await reader.readexactly(1))
    await writer.drain()
    writer.close()


Connector = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


async def _one(connect: Connector) -> tuple[float, float, int, int]:
    started = time.perf_counter()
    reader, writer = await connect()
    connected = time.perf_counter()
    transport = writer.transport
    assert isinstance(transport, TlsAppTransport)
    sent, received = transport.wire_bytes()
    writer.write(b"x")
    await writer.drain()
    if await reader.readexactly(1) != b"x":
        raise RuntimeError("echo mismatch")
    ready = time.perf_counter()
    writer.close()
    await writer.wait_closed()
    return (connected - started) * 1e3, (ready - started) * 1e3, sent, received


async def _classical_baseline(world: _World) -> tuple[asyncio.Server, Connector]:
    """SPIFFE mTLS with X25519 only, verified like spiffe mode (this benchmark's own baseline)."""
    loop = asyncio.get_running_loop()
    server_ctx = context_for(Mode.SPIFFE, world.server)
    restrict_groups(server_ctx, b"X25519")
    client_ctx = context_for(Mode.SPIFFE, world.client)
    restrict_groups(client_ctx, b"X25519")
    tasks: set[asyncio.Task[None]] = set()

    async def accept(proto: TlsProtocol) -> None:
        await proto.handshake()
        peer = verify_classical_svid(peer_chain(proto), world.classical, at=dt.datetime.now(dt.UTC))
        authorize_id(world.client.spiffe_id)(peer, peer_chain(proto))
        reader = asyncio.StreamReader()
        app = asyncio.StreamReaderProtocol(reader)
        transport = proto.attach(app, {})
        await _echo(reader, asyncio.StreamWriter(transport, app, reader, loop))

    def factory() -> TlsProtocol:
        proto = TlsProtocol(server_ctx, server_side=True)
        task = loop.create_task(accept(proto))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return proto

    server = await loop.create_server(factory, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        _, proto = await loop.create_connection(
            lambda: TlsProtocol(client_ctx, server_side=False), "127.0.0.1", port
        )
        await proto.handshake()
        chain = peer_chain(proto)
        peer = verify_classical_svid(chain, world.classical, at=dt.datetime.now(dt.UTC))
        authorize_id(world.server.spiffe_id)(peer, chain)
        reader = asyncio.StreamReader()
        app = asyncio.StreamReaderProtocol(reader)
        transport = proto.attach(app, {})
        return reader, asyncio.StreamWriter(transport, app, reader, loop)

    return server, connect


def _connector(world: _World, mode: Mode, port: int) -> Connector:
    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await open_connection(
            "127.0.0.1", port, source=StaticHybridSource(world.client, world.classical, world.pqc),
            authorizer=authorize_id(world.server.spiffe_id), mode=mode,
        )  # fmt: skip

    return connect


async def _run(handshakes: int) -> ChannelReport:
    world = _world()
    connectors: dict[str, Connector] = {}
    baseline_server, connectors[BASELINE] = await _classical_baseline(world)
    servers: list[asyncio.Server | SecureServer] = [baseline_server]
    for mode in Mode:
        secure = await start_server(
            _echo, "127.0.0.1", 0, source=StaticHybridSource(world.server, world.classical, world.pqc),
            authorizer=authorize_id(world.client.spiffe_id), mode=mode,
        )  # fmt: skip
        servers.append(secure)
        connectors[f"{mode.value} (X25519MLKEM768)"] = _connector(world, mode, secure.port)
    samples: dict[str, list[tuple[float, float, int, int]]] = {name: [] for name in connectors}
    cpu: dict[str, list[float]] = {name: [] for name in connectors}
    try:
        for connect in connectors.values():  # warm-up: thread pool, contexts, code paths
            await _one(connect)
        for _ in range(handshakes):
            for name, connect in connectors.items():
                started = time.process_time()
                samples[name].append(await _one(connect))
                cpu[name].append((time.process_time() - started) * 1e3)
    finally:
        for server in servers:
            server.close()
            await server.wait_closed()
    results = []
    for name, rows in samples.items():
        connect_ms = [r[0] for r in rows]
        ready_ms = [r[1] for r in rows]
        results.append(
            ModeResult(
                name,
                statistics.median(connect_ms),
                statistics.median(ready_ms),
                _p99(ready_ms),
                rows[-1][2],
                rows[-1][3],
                statistics.median(cpu[name]),
            )
        )
    return ChannelReport(handshakes, tuple(results))


def run(*, handshakes: int = 100) -> ChannelReport:
    """Measure ``handshakes`` mutual handshakes per mode (plus the classical baseline)."""
    return asyncio.run(_run(handshakes))


def format_report(report: ChannelReport) -> str:
    base = next(r for r in report.results if r.name == BASELINE)
    lines = [
        f"channel: {report.handshakes} mutual handshakes per mode, loopback, both ends in one process",
        f"{'mode':<28} {'connect p50':>12} {'ready p50':>10} {'ready p99':>10} {'vs classical':>13} "
        f"{'CPU p50':>9} {'client sent':>12} {'received':>9} {'total B':>8}",
    ]
    for r in report.results:
        ratio = r.ready_p50_ms / base.ready_p50_ms if base.ready_p50_ms else float("nan")
        lines.append(
            f"{r.name:<28} {r.connect_p50_ms:>10.2f}ms {r.ready_p50_ms:>8.2f}ms {r.ready_p99_ms:>8.2f}ms "
            f"{ratio:>12.2f}x {r.cpu_p50_ms:>7.2f}ms {r.client_sent:>12,} {r.client_received:>9,} {r.total_bytes:>8,}"
        )
    return "\n".join(lines)


# --- the OpenSSL command line as a reference point for pq-tls ----------------------------------------

_S_TIME_REAL = re.compile(rb"(\d+) connections in (\d+) real seconds")


@dataclass(frozen=True)
class STimeReport:
    seconds: int
    openssl_server_per_s: float
    ours_per_s: float


async def _s_time(openssl: OpenSSLCli, port: int, files: dict[str, Path], seconds: int) -> float:
    proc = await asyncio.create_subprocess_exec(
        str(openssl.path), "s_time", "-connect", f"127.0.0.1:{port}", "-new", "-tls1_3", "-time", str(seconds),
        # s_time sends only the first certificate of -cert; OpenSSL appends the intermediate from the
        # verify store (auto-chain), so -CAfile holds the root and the intermediate.
        "-cert", str(files["client_chain"]), "-key", str(files["client_key"]), "-CAfile", str(files["client_cas"]),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await proc.communicate()
    match = _S_TIME_REAL.search(stdout)
    if match is None:
        raise RuntimeError(f"unexpected s_time output: {stdout[-300:]!r} {stderr[-300:]!r}")
    return int(match.group(1)) / int(match.group(2))


def _write_pq_files(directory: Path, world: _World) -> dict[str, Path]:
    from cryptography.hazmat.primitives import serialization

    from spire_pqc.crypto.keys import NoEncryption

    def pem(chain: tuple[x509.Certificate, ...]) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)

    files = {
        "server_chain": (pem(world.server.pqc_chain), 0o644),
        "server_key": (world.server.pqc_key.pem(NoEncryption()), 0o600),
        "client_chain": (pem(world.client.pqc_chain), 0o644),
        "client_key": (world.client.pqc_key.pem(NoEncryption()), 0o600),
        "root": (pem(tuple(world.pqc.get(world.server.spiffe_id.trust_domain).authorities)), 0o644),
        "client_cas": (
            pem(
                tuple(world.pqc.get(world.server.spiffe_id.trust_domain).authorities)
                + world.client.pqc_chain[1:]
            ),
            0o644,
        ),
    }
    paths = {}
    for name, (data, mode) in files.items():
        path = directory / f"{name}.pem"
        path.write_bytes(data)
        path.chmod(mode)
        paths[name] = path
    return paths


async def _s_time_run(seconds: int) -> STimeReport:
    openssl = find_openssl35()
    world = _world()
    with tempfile.TemporaryDirectory(prefix="spire-pqc-stime-") as tmp:
        files = _write_pq_files(Path(tmp), world)
        # 1. OpenSSL client against OpenSSL's own server: the same certificates, group and mutual auth.
        port = _free_port()
        server = await asyncio.create_subprocess_exec(
            str(openssl.path), "s_server", "-accept", f"127.0.0.1:{port}", "-tls1_3", "-groups", "X25519MLKEM768",
            "-cert", str(files["server_chain"]), "-key", str(files["server_key"]), "-Verify", "3",
            "-CAfile", str(files["root"]), "-quiet",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            await _wait_listening(port)
            reference = await _s_time(openssl, port, files, seconds)
        finally:
            server.kill()
            await server.wait()
        # 2. The same OpenSSL client against our pq-tls server (verification, authorizer and all).
        ours = await start_server(
            _close, "127.0.0.1", 0, source=StaticHybridSource(world.server, world.classical, world.pqc),
            authorizer=authorize_id(world.client.spiffe_id), mode=Mode.PQ_TLS,
        )  # fmt: skip
        try:
            ours_rate = await _s_time(openssl, ours.port, files, seconds)
            if ours.failures:
                raise RuntimeError(f"our pq-tls server refused s_time's connections: {ours.failures[-1]}")
        finally:
            ours.close()
            await ours.wait_closed()
    return STimeReport(seconds, reference, ours_rate)


async def _close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """s_time only handshakes, then disconnects: accept the verified peer and close."""
    writer.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _wait_listening(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        await writer.wait_closed()
        return
    raise RuntimeError(f"openssl s_server did not listen on {port}")


def run_s_time(*, seconds: int = 5) -> STimeReport:
    """`openssl s_time` mutual handshakes/s against OpenSSL's s_server and against our pq-tls server."""
    return asyncio.run(_s_time_run(seconds))


def format_s_time(report: STimeReport) -> str:
    return "\n".join(
        [
            f"openssl s_time -new, {report.seconds} s, ML-DSA-65 certificates, X25519MLKEM768, mutual TLS:",
            f"  against openssl s_server:       {report.openssl_server_per_s:8.1f} handshakes/s",
            f"  against our pq-tls server:      {report.ours_per_s:8.1f} handshakes/s "
            f"(ratio {report.ours_per_s / report.openssl_server_per_s:.2f})",
        ]
    )
