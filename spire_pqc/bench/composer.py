"""`spire-pqc bench composer`: what the plugin adds to SPIRE's signing, measured in one run.

Two spire-server v1.15.3 processes are started on loopback, one with the spire-pqc composer and one
without, and the same number of `spire-server x509 mint` calls is timed against each, interleaved
so machine noise hits both alike. Each mint is a CLI process (spawn + gRPC + signing), so the
difference of the medians is the composer's cost per SVID as a SPIRE user sees it.
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


@dataclass(frozen=True)
class ComposerReport:
    mints: int
    baseline_p50_ms: float
    baseline_p99_ms: float
    plugin_p50_ms: float
    plugin_p99_ms: float
    endpoint_requests: int = 0
    endpoint_per_s: float = 0.0
    endpoint_p50_ms: float = 0.0
    endpoint_p99_ms: float = 0.0


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


def run(*, mints: int = 100) -> ComposerReport:
    base_dir, plugin_dir = short_tempdir(), short_tempdir()
    pqc_dir = Path(tempfile.mkdtemp(prefix="spire-pqc-bench-"))
    baseline = SpireServer(base_dir)
    endpoint_port = free_port()
    with_plugin = SpireServer(
        plugin_dir,
        composer_data={
            **_pqc_files(pqc_dir, "example.org"),
            "endpoint_listen_address": f"127.0.0.1:{endpoint_port}",
            "authorized_agents": [AGENT_ID],
        },
    )
    try:
        baseline.start()
        with_plugin.start()
        times: dict[str, list[float]] = {"baseline": [], "plugin": []}
        for index in range(mints):
            for name, server in (("baseline", baseline), ("plugin", with_plugin)):
                started = time.perf_counter()
                result = server.mint(f"spiffe://example.org/bench/{index}", server.workdir / "mint")
                times[name].append(time.perf_counter() - started)
                if result.returncode != 0:
                    raise RuntimeError(f"x509 mint failed on the {name} server: {result.stderr}")
        endpoint, endpoint_elapsed = _endpoint_latencies(with_plugin, endpoint_port, max(2, mints // 2))
    finally:
        baseline.stop()
        with_plugin.stop()
        for path in (base_dir, plugin_dir, pqc_dir):
            cleanup(path)
    return ComposerReport(
        mints=mints,
        baseline_p50_ms=statistics.median(times["baseline"]) * 1e3,
        baseline_p99_ms=_p99(times["baseline"]) * 1e3,
        plugin_p50_ms=statistics.median(times["plugin"]) * 1e3,
        plugin_p99_ms=_p99(times["plugin"]) * 1e3,
        endpoint_requests=len(endpoint),
        endpoint_per_s=len(endpoint) / endpoint_elapsed,
        endpoint_p50_ms=statistics.median(endpoint) * 1e3,
        endpoint_p99_ms=_p99(endpoint) * 1e3,
    )


def format_report(report: ComposerReport) -> str:
    overhead = report.plugin_p50_ms - report.baseline_p50_ms
    return "\n".join(
        [
            f"spire-pqc bench composer ({report.mints} `spire-server x509 mint` calls per server, interleaved)",
            f"  SPIRE without plugin: p50 {report.baseline_p50_ms:7.1f} ms  p99 {report.baseline_p99_ms:7.1f} ms",
            f"  SPIRE with spire-pqc: p50 {report.plugin_p50_ms:7.1f} ms  p99 {report.plugin_p99_ms:7.1f} ms",
            f"  composer overhead at p50: {overhead:+.1f} ms per SVID "
            f"(ratio {report.plugin_p50_ms / report.baseline_p50_ms:.2f})",
            f"  PQC CA endpoint ({report.endpoint_requests} sequential IssuePQCSVID, one hybrid mTLS connection): "
            f"{report.endpoint_per_s:.1f} req/s",
            f"    p50 {report.endpoint_p50_ms:.1f} ms  p99 {report.endpoint_p99_ms:.1f} ms",
        ]
    )
