"""`spire-pqc bench ca`: what one PQC CA process sustains.

Requests are prepared first (their classical SVIDs, keys and proofs are client-side cost), then
answered one after another by a single :class:`PQCIssuer`, as one plugin process would. Binding
signatures (what the composer adds to every SPIRE signing) are measured beside it, and a bare
ML-DSA-65 signature gives the baseline both are made of.
"""

from __future__ import annotations

import datetime as dt
import statistics
import time
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization

from spire_pqc.bundle import BundleSet
from spire_pqc.ca.composer import binding_extension
from spire_pqc.ca.devca import DevClassicalCA, PQCHierarchy
from spire_pqc.ca.issuer import PQCIssuer
from spire_pqc.ca.request import IssueRequest, build_request
from spire_pqc.crypto import backend_name
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey
from spire_pqc.crypto.mlkem import MLKEM768PrivateKey
from spire_pqc.spiffeid import SpiffeId, TrustDomain


@dataclass(frozen=True)
class CaReport:
    backend: str
    requests: int
    issuance_per_s: float
    issuance_p50_ms: float
    issuance_p99_ms: float
    bindings_per_s: float
    binding_p50_ms: float
    mldsa_sign_per_s: float


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(*, requests: int = 200) -> CaReport:
    td = TrustDomain.parse("bench.example")
    hierarchy = PQCHierarchy.generate(td)
    classical = DevClassicalCA(td, hierarchy.intermediate.key)
    issuer = PQCIssuer(hierarchy.intermediate, td, BundleSet.from_certificates([classical.certificate]))
    prepared: list[IssueRequest] = []
    now_ms = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
    for index in range(requests):
        leaf, key = classical.issue_svid(SpiffeId.parse(f"spiffe://bench.example/w/{index}"))
        prepared.append(
            build_request(
                (leaf.public_bytes(serialization.Encoding.DER),),
                key,
                MLDSA65PrivateKey.generate(),
                MLKEM768PrivateKey.generate().public_key().spki(),
                timestamp_ms=now_ms,
            )
        )
    latencies = []
    started = time.perf_counter()
    for request in prepared:
        t0 = time.perf_counter()
        issuer.issue(request)
        latencies.append(time.perf_counter() - t0)
    issuance_elapsed = time.perf_counter() - started

    binding_key = hierarchy.intermediate.key
    spki = classical.certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    binding_times = []
    for index in range(requests):
        t0 = time.perf_counter()
        binding_extension(binding_key, f"spiffe://bench.example/w/{index}", spki)
        binding_times.append(time.perf_counter() - t0)
    sign_started = time.perf_counter()
    for _ in range(requests):
        binding_key.sign(b"x" * 128, context=b"bench")
    sign_elapsed = time.perf_counter() - sign_started
    return CaReport(
        backend=backend_name(),
        requests=requests,
        issuance_per_s=requests / issuance_elapsed,
        issuance_p50_ms=statistics.median(latencies) * 1e3,
        issuance_p99_ms=_percentile(latencies, 0.99) * 1e3,
        bindings_per_s=requests / sum(binding_times),
        binding_p50_ms=statistics.median(binding_times) * 1e3,
        mldsa_sign_per_s=requests / sign_elapsed,
    )


def format_report(report: CaReport) -> str:
    ratio = report.issuance_per_s / report.mldsa_sign_per_s
    return "\n".join(
        [
            f"spire-pqc bench ca (backend {report.backend}, {report.requests} requests, 1 process, 1 thread)",
            f"  issuance (checks + PQC SVID + KEM cert): {report.issuance_per_s:8.1f} req/s  "
            f"p50 {report.issuance_p50_ms:.2f} ms  p99 {report.issuance_p99_ms:.2f} ms",
            f"  SvidBinding signatures (per SPIRE signing): {report.bindings_per_s:8.1f} /s  "
            f"p50 {report.binding_p50_ms:.2f} ms",
            f"  baseline, bare ML-DSA-65 sign (128 B):      {report.mldsa_sign_per_s:8.1f} /s",
            f"  issuance / bare sign: {ratio:.2f}  (an issuance makes 2 ML-DSA-65 signatures and verifies 3)",
        ]
    )
