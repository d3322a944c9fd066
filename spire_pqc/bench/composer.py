"""`spire-pqc bench composer`: what the plugin adds to SPIRE's signing, measured in one run.

spire-server v1.15.3 processes are started on loopback: one without the spire-pqc composer (the
baseline) and one with it per PQ backend (the plugin process inherits ``SPIRE_PQC_BACKEND``), and
the same number of `spire-server x509 mint` calls is timed against each, interleaved so machine
noise hits all alike. Each mint is a CLI process (spawn + gRPC + signing), so the difference of the
medians is the composer's cost per SVID as a SPIRE user sees it.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from spire_pqc._proto.spire_pqc.ca.v1 import ca_pb2_grpc
from spire_pqc.agent.caclient import issue_request_message
from spire_pqc.bench.spirelab import SpireServer, cleanup, free_port, short_tempdir
from spire_pqc.bundle import BundleSet
from spire_pqc.ca.request import build_request
from spire_pqc.channel.bridge import TLSBridge
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey
from spire_pqc.crypto.mlkem import MLKEM768PrivateKey
from spire_pqc.spiffeid import match_id
from spire_pqc.svid import X509Svid

AGENT_ID = "spiffe://example.org/bench/node-agent"


BACKENDS = ("openssl", "liboqs")


@dataclass(frozen=True)
class PluginResult:
    backend: str
    p50_ms: float
    p99_ms: float
    endpoint_requests: int = 0
    endpoint_per_s: float = 0.0
    endpoint_p50_ms: float = 0.0
    endpoint_p99_ms: float = 0.0


@dataclass(frozen=True)
class ComposerReport:
    mints: int
    baseline_p50_ms: float
    baseline_p99_ms: float
    plugins: tuple[PluginResult, ...]

    def overhead_ms(self, backend: str) -> float:
        """Composer cost per SVID at p50: with the plugin on ``backend`` minus without."""
        return next(p.p50_ms for p in self.plugins if p.backend == backend) - self.baseline_p50_ms


def _p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def _pqc_files(directory: Path, trust_domain: str) -> dict[str, object]:
    cli = [sys.executable, "-m", "spire_pqc.cli"]
    subprocess.run([*cli, "ca", "init", "--trust-domain", trust_domain, "--out-dir", str(directory), "--no-encryption"],
                   check=True, capture_output=True)  # fmt: skip
    subprocess.run([*cli, "ca", "intermediate", "--trust-domain", trust_domain, "--root-dir", str(directory),
                    "--out-dir", str(directory), "--no-encryption"], check=True, capture_output=True)  # fmt: skip
    return {
        "intermediate_key_path": str(directory / "intermediate.key.pem"),
        "intermediate_cert_path": str(directory / "intermediate.crt.pem"),
        "pqc_bundle_path": str(directory / "root.crt.pem"),
    }


def _load_svid(directory: Path) -> tuple[list[x509.Certificate], PrivateKeyTypes]:
    chain = x509.load_pem_x509_certificates((directory / "svid.pem").read_bytes())
    return chain, serialization.load_pem_private_key((directory / "key.pem").read_bytes(), password=None)


def _endpoint_latencies(server: SpireServer, port: int, requests: int) -> tuple[list[float], float]:
    """IssuePQCSVID through the real endpoint (bridge, hybrid mTLS, one connection), one at a time."""
    agent_dir, workload_dir = server.workdir / "agent-svid", server.workdir / "wl"
    if server.mint(AGENT_ID, agent_dir).returncode != 0:
        raise RuntimeError("cannot mint the node-agent SVID")
    agent_chain, agent_key = _load_svid(agent_dir)
    bundles = BundleSet.from_certificates(x509.load_pem_x509_certificates(server.bundle_pem()))
    prepared = []
    for index in range(requests):  # client-side work (SVIDs, keys, proofs) is not timed
        if server.mint(f"spiffe://example.org/bench/wl/{index}", workload_dir).returncode != 0:
            raise RuntimeError("cannot mint a workload SVID")
        chain, key = _load_svid(workload_dir)
        request = build_request(
            tuple(c.public_bytes(serialization.Encoding.DER) for c in chain), key,
            MLDSA65PrivateKey.generate(), MLKEM768PrivateKey.generate().public_key().spki(),
            timestamp_ms=int(time.time() * 1000),
        )  # fmt: skip
        prepared.append(issue_request_message(request))
    identity = X509Svid.of(agent_chain, agent_key)
    bridge = TLSBridge(
        ("127.0.0.1", port), lambda: identity, lambda: bundles, match_id("spiffe://example.org/spire/server")
    )
    channel = grpc.insecure_channel(bridge.target)
    try:
        stub = ca_pb2_grpc.PQCCertificateAuthorityStub(channel)
        stub.IssuePQCSVID(prepared[0], timeout=30)  # warm-up: connection and handshake
        latencies = []
        started = time.perf_counter()
        for message in prepared[1:]:
            t0 = time.perf_counter()
            stub.IssuePQCSVID(message, timeout=30)
            latencies.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - started
    finally:
        channel.close()
        bridge.close()
    return latencies, elapsed


def run(*, mints: int = 100, backends: tuple[str, ...] = BACKENDS) -> ComposerReport:
    base_dir = short_tempdir()
    pqc_dir = Path(tempfile.mkdtemp(prefix="spire-pqc-bench-"))
    baseline = SpireServer(base_dir)
    plugin_data = _pqc_files(pqc_dir, "example.org")
    servers: dict[str, tuple[SpireServer, int]] = {}
    for backend in backends:
        port = free_port()
        servers[backend] = (
            SpireServer(
                short_tempdir(),
                composer_data={
                    **plugin_data,
                    "endpoint_listen_address": f"127.0.0.1:{port}",
                    "authorized_agents": [AGENT_ID],
                },
                extra_env={"SPIRE_PQC_BACKEND": backend},
            ),
            port,
        )
    everyone = [("baseline", baseline)] + [(name, server) for name, (server, _) in servers.items()]
    try:
        for _, server in everyone:
            server.start()
        times: dict[str, list[float]] = {name: [] for name, _ in everyone}
        for index in range(mints):
            for name, server in everyone if index % 2 == 0 else everyone[::-1]:
                started = time.perf_counter()
                result = server.mint(f"spiffe://example.org/bench/{index}", server.workdir / "mint")
                times[name].append(time.perf_counter() - started)
                if result.returncode != 0:
                    raise RuntimeError(f"x509 mint failed on the {name} server: {result.stderr}")
        plugins = []
        for name, (server, port) in servers.items():
            endpoint, elapsed = _endpoint_latencies(server, port, max(2, mints // 2))
            plugins.append(
                PluginResult(
                    backend=name,
                    p50_ms=statistics.median(times[name]) * 1e3,
                    p99_ms=_p99(times[name]) * 1e3,
                    endpoint_requests=len(endpoint),
                    endpoint_per_s=len(endpoint) / elapsed,
                    endpoint_p50_ms=statistics.median(endpoint) * 1e3,
                    endpoint_p99_ms=_p99(endpoint) * 1e3,
                )
            )
    finally:
        for _, server in everyone:
            server.stop()
        for path in [pqc_dir] + [server.workdir for _, server in everyone]:
            cleanup(path)
    return ComposerReport(
        mints=mints,
        baseline_p50_ms=statistics.median(times["baseline"]) * 1e3,
        baseline_p99_ms=_p99(times["baseline"]) * 1e3,
        plugins=tuple(plugins),
    )


def format_report(report: ComposerReport) -> str:
    lines = [
        f"spire-pqc bench composer ({report.mints} `spire-server x509 mint` calls per server, interleaved)",
        f"  SPIRE without plugin:           p50 {report.baseline_p50_ms:7.1f} ms  p99 {report.baseline_p99_ms:7.1f} ms",
    ]
    for plugin in report.plugins:
        lines.append(
            f"  SPIRE with spire-pqc ({plugin.backend:>7}): p50 {plugin.p50_ms:7.1f} ms  p99 {plugin.p99_ms:7.1f} ms"
            f"  composer overhead at p50 {report.overhead_ms(plugin.backend):+.1f} ms per SVID"
            f" (ratio {plugin.p50_ms / report.baseline_p50_ms:.2f})"
        )
    for plugin in report.plugins:
        lines.append(
            f"  PQC CA endpoint ({plugin.backend}, {plugin.endpoint_requests} sequential IssuePQCSVID, one hybrid"
            f" mTLS connection): {plugin.endpoint_per_s:.1f} req/s  p50 {plugin.endpoint_p50_ms:.1f} ms"
            f"  p99 {plugin.endpoint_p99_ms:.1f} ms"
        )
    return "\n".join(lines)
