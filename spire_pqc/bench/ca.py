"""`spire-pqc bench ca`: what one PQC CA process sustains, on each PQ backend, against its crypto floor.

An issuance makes two ML-DSA-65 signatures (PQC SVID and KEM certificate) and verifies two ML-DSA-65
signatures (the SvidBinding in the classical leaf and the new key's proof) and two ECDSA signatures
(the classical proof and the classical chain). The *floor* is those six operations alone, timed on
the same messages in the same process right after the issuances: ``issuance / floor`` says how much
of the CA's time goes to anything else (parsing, policy, the ledger, encoding).

Each backend runs in a worker process of its own (:mod:`spire_pqc.bench.worker`, ``SPIRE_PQC_BACKEND``
set), the two taking turns for ``rounds`` rounds; each figure is the median over the rounds. Requests
are prepared before the clock starts (their classical SVIDs, keys and proofs are the agent's cost)
and answered one after another by one :class:`PQCIssuer` with its default in-memory SQLite ledger,
as one plugin process would. Rates are per CPU-second of the worker (``time.process_time``), so other
load on the machine slows the issuances and the floor alike; the wall-clock rate is printed beside.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from spire_pqc.bench.worker import JsonObject, Worker, serve
from spire_pqc.bundle import BundleSet
from spire_pqc.ca.composer import binding_extension
from spire_pqc.ca.devca import DevClassicalCA, PQCHierarchy
from spire_pqc.ca.issuer import Issued, PQCIssuer
from spire_pqc.ca.ledger import Pruner, open_ledger
from spire_pqc.ca.request import CLASSICAL_PREFIX, CONTEXT, IssueRequest, build_request
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey, MLDSA65PublicKey
from spire_pqc.crypto.mlkem import MLKEM768PrivateKey
from spire_pqc.crypto.status import backend_info
from spire_pqc.errors import UnavailableError
from spire_pqc.spiffeid import SpiffeId, TrustDomain
from spire_pqc.svid import binding_of
from spire_pqc.x509 import certs
from spire_pqc.x509.binding import CONTEXT as BINDING_CONTEXT
from spire_pqc.x509.binding import parse_binding, signed_message
from spire_pqc.x509.load import load_der_certificate

BACKENDS = ("openssl", "liboqs")


@dataclass(frozen=True)
class BackendResult:
    backend: str
    describe: str  # backend_info().describe(), or "unavailable: <reason>"
    issuance_per_cpu_s: float = 0.0
    issuance_per_wall_s: float = 0.0
    issuance_p50_ms: float = 0.0
    issuance_p99_ms: float = 0.0
    floor_per_cpu_s: float = 0.0  # the six signature operations of one issuance, nothing else
    bindings_per_cpu_s: float = 0.0

    @property
    def available(self) -> bool:
        return not self.describe.startswith("unavailable")

    @property
    def floor_ratio(self) -> float:
        """issuance rate / floor rate (1.0 would mean the CA does nothing but the signatures)."""
        return self.issuance_per_cpu_s / self.floor_per_cpu_s if self.floor_per_cpu_s else 0.0


@dataclass(frozen=True)
class CaReport:
    requests: int
    rounds: int
    results: tuple[BackendResult, ...]

    def result(self, backend: str) -> BackendResult:
        return next(r for r in self.results if r.backend == backend)


def _percentile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# --- the worker (one backend per process) ------------------------------------------------------


class _Bench:
    def __init__(self) -> None:
        self.td = TrustDomain.parse("bench.example")
        hierarchy = PQCHierarchy.generate(self.td)
        self.classical = DevClassicalCA(self.td, hierarchy.intermediate.key)
        self.ca_key = hierarchy.intermediate.key
        self.issuer = PQCIssuer(
            hierarchy.intermediate, self.td, BundleSet.from_certificates([self.classical.certificate])
        )
        self.serial = 0

    def requests(self, count: int, *, ttl: dt.timedelta = dt.timedelta(hours=1)) -> list[IssueRequest]:
        now_ms = int(time.time() * 1000)
        prepared = []
        for _ in range(count):
            self.serial += 1
            leaf, key = self.classical.issue_svid(
                SpiffeId.parse(f"spiffe://bench.example/w/{self.serial}"), ttl=ttl
            )
            prepared.append(
                build_request(
                    (leaf.public_bytes(serialization.Encoding.DER),),
                    key,
                    MLDSA65PrivateKey.generate(),
                    MLKEM768PrivateKey.generate().public_key().spki(),
                    timestamp_ms=now_ms,
                )
            )
        return prepared

    def floor(self, request: IssueRequest, issued: Issued, count: int) -> float:
        """CPU seconds per issuance of the six signature operations an issuance cannot avoid."""
        leaf = load_der_certificate(request.classical_chain[0], what="bench leaf")
        pqc = load_der_certificate(issued.response.pqc_svid_chain[0], what="bench PQC SVID")
        kem = load_der_certificate(issued.response.kem_certificate_chain[0], what="bench KEM certificate")
        spiffe_id = issued.spiffe_id
        binding = parse_binding(binding_of(leaf, spiffe_id=spiffe_id))
        binding_message = signed_message(spiffe_id, certs.spki_der(leaf))
        tbs = request.to_be_signed()
        proof_key = MLDSA65PublicKey.from_spki(request.mldsa_spki)
        leaf_key = leaf.public_key()
        ca_key = self.classical.certificate.public_key()
        assert isinstance(leaf_key, ec.EllipticCurvePublicKey) and isinstance(
            ca_key, ec.EllipticCurvePublicKey
        )
        chain_hash = leaf.signature_hash_algorithm or hashes.SHA256()
        operations: list[Callable[[], object]] = [
            lambda: self.ca_key.sign(pqc.tbs_certificate_bytes, context=b""),
            lambda: self.ca_key.sign(kem.tbs_certificate_bytes, context=b""),
            lambda: self.ca_key.public_key().verify(
                binding.signature, binding_message, context=BINDING_CONTEXT
            ),
            lambda: proof_key.verify(request.mldsa_proof, tbs, context=CONTEXT),
            lambda: leaf_key.verify(
                request.classical_proof, CLASSICAL_PREFIX + tbs, ec.ECDSA(hashes.SHA256())
            ),
            lambda: ca_key.verify(leaf.signature, leaf.tbs_certificate_bytes, ec.ECDSA(chain_hash)),
        ]
        started = time.process_time()
        for _ in range(count):
            for operation in operations:
                operation()
        return (time.process_time() - started) / count

    def round(self, count: int) -> JsonObject:
        prepared = self.requests(count)
        latencies = []
        issued: list[Issued] = []
        cpu, wall = time.process_time(), time.perf_counter()
        for request in prepared:
            t0 = time.perf_counter()
            issued.append(self.issuer.issue(request))
            latencies.append(time.perf_counter() - t0)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        floor = self.floor(prepared[0], issued[0], count)
        spki = self.classical.certificate.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        binding_cpu = time.process_time()
        for index in range(count):
            binding_extension(self.ca_key, f"spiffe://bench.example/w/{index}", spki)
        binding_cpu = time.process_time() - binding_cpu
        return {
            "issuance_per_cpu_s": count / cpu,
            "issuance_per_wall_s": count / wall,
            "p50_ms": statistics.median(latencies) * 1e3,
            "p99_ms": _percentile(latencies, 0.99) * 1e3,
            "floor_per_cpu_s": 1.0 / floor,
            "bindings_per_cpu_s": count / binding_cpu,
        }

    def expiring(self, total: int, ttl: dt.timedelta, freshness: dt.timedelta) -> JsonObject:
        """RSS of this process (as the plugin's) while ``total`` issuances go through a SQLite *file*
        ledger and expire (SVID TTL ``ttl``, kept ``freshness`` longer), pruned every second."""
        with tempfile.TemporaryDirectory(prefix="spq-ca-expiry-") as directory:
            ledger = open_ledger(f"sqlite://{Path(directory) / 'ledger.db'}")
            pruner = Pruner(ledger, interval=1.0)
            issuer = PQCIssuer(
                self.issuer.ca, self.td, BundleSet.from_certificates([self.classical.certificate]),
                ledger=ledger, freshness=freshness,
            )  # fmt: skip
            pruner.start()
            samples: list[list[float]] = []
            started, done, chunk = time.monotonic(), 0, 50  # small: a prepared SVID must not expire first
            try:
                while done < total:
                    for request in self.requests(min(chunk, total - done), ttl=ttl):
                        issuer.issue(request)
                    done = min(done + chunk, total)
                    if done % max(chunk, total // 20) < chunk or done == total:
                        samples.append(
                            [done, _rss_kib(), ledger.size().issuances, time.monotonic() - started]
                        )
            finally:
                pruner.stop()
                ledger.close()
        return {"samples": samples}


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def _prepare_worker() -> tuple[JsonObject, Callable[[JsonObject], JsonObject]]:
    describe = backend_info().describe()
    bench = _Bench()

    def handle(request: JsonObject) -> JsonObject:
        if "expiring" in request:
            return bench.expiring(
                int(request["expiring"]),
                dt.timedelta(seconds=float(request["ttl_s"])),
                dt.timedelta(seconds=float(request["freshness_s"])),
            )
        return bench.round(int(request["requests"]))

    return {"backend": describe}, handle


@dataclass(frozen=True)
class ExpiryReport:
    """RSS of one CA process while issuances expire: [issued, RSS KiB, live ledger entries, seconds]."""

    backend: str
    ttl_s: float
    freshness_s: float
    samples: tuple[tuple[int, int, int, float], ...]

    @property
    def growth_after_warmup_kib(self) -> int:
        """RSS at the end minus RSS once the first entries could have expired (TTL + freshness passed)."""
        warm = next((s for s in self.samples if s[3] >= self.ttl_s + self.freshness_s), self.samples[-1])
        return self.samples[-1][1] - warm[1]


def run_expiring(
    *, issuances: int = 100_000, ttl_s: float = 2.0, freshness_s: float = 5.0, backend: str = "liboqs"
) -> ExpiryReport:
    """``issuances`` through one CA process with a SQLite file ledger and its pruner, SVIDs of ``ttl_s``."""
    env = dict(os.environ, SPIRE_PQC_BACKEND=backend)
    with Worker("spire_pqc.bench.ca", ["--worker"], env=env) as worker:
        if worker.unavailable is not None:
            raise UnavailableError(f"bench ca on {backend}: {worker.unavailable}")
        reply = worker.ask({"expiring": issuances, "ttl_s": ttl_s, "freshness_s": freshness_s})
    samples = tuple((int(a), int(b), int(c), float(d)) for a, b, c, d in reply["samples"])
    return ExpiryReport(backend, ttl_s, freshness_s, samples)


def format_expiry(report: ExpiryReport) -> str:
    lines = [
        f"spire-pqc bench ca --expiring: one CA process ({report.backend}), SQLite file ledger pruned every second,"
        f" classical SVIDs of {report.ttl_s:g} s kept {report.freshness_s:g} s longer",
        f"{'issued':>10}{'RSS MiB':>10}{'live entries':>14}{'seconds':>9}",
    ]
    lines += [f"{n:>10,}{rss / 1024:>10.1f}{live:>14,}{t:>9.0f}" for n, rss, live, t in report.samples]
    lines.append(
        f"RSS growth after the first entries expired: {report.growth_after_warmup_kib / 1024:+.2f} MiB"
    )
    return "\n".join(lines)


# --- the run -------------------------------------------------------------------------------------


def _median(rounds: list[JsonObject], key: str) -> float:
    return statistics.median(float(r[key]) for r in rounds)


def run(*, requests: int = 300, rounds: int = 3, backends: Sequence[str] = BACKENDS) -> CaReport:
    if requests < 1 or rounds < 1:
        raise ValueError("requests and rounds must be >= 1")
    if not backends or any(b not in BACKENDS for b in backends):
        raise ValueError(f"backends must be some of {', '.join(BACKENDS)}, got {list(backends)}")
    workers = {
        name: Worker("spire_pqc.bench.ca", ["--worker"], env=dict(os.environ, SPIRE_PQC_BACKEND=name))
        for name in backends
    }
    measured: dict[str, list[JsonObject]] = {name: [] for name in backends}
    try:
        for worker in workers.values():
            worker.start()
        running = [name for name, worker in workers.items() if worker.unavailable is None]
        for index in range(rounds):
            for name in running if index % 2 == 0 else running[::-1]:
                print(f"bench ca: round {index + 1}/{rounds} on {name}", file=sys.stderr, flush=True)
                measured[name].append(workers[name].ask({"requests": requests}))
    finally:
        for worker in workers.values():
            worker.stop()
    results = []
    for name, worker in workers.items():
        if worker.unavailable is not None:
            results.append(BackendResult(name, f"unavailable: {worker.unavailable}"))
            continue
        got = measured[name]
        results.append(
            BackendResult(
                backend=name,
                describe=str(worker.ready.get("backend", "")),
                issuance_per_cpu_s=_median(got, "issuance_per_cpu_s"),
                issuance_per_wall_s=_median(got, "issuance_per_wall_s"),
                issuance_p50_ms=_median(got, "p50_ms"),
                issuance_p99_ms=_median(got, "p99_ms"),
                floor_per_cpu_s=_median(got, "floor_per_cpu_s"),
                bindings_per_cpu_s=_median(got, "bindings_per_cpu_s"),
            )
        )
    return CaReport(requests=requests, rounds=rounds, results=tuple(results))


def format_report(report: CaReport) -> str:
    lines = [
        f"spire-pqc bench ca: one CA process, one thread, {report.requests} requests per round, "
        f"median of {report.rounds} round(s); rates per CPU-second of the CA process",
    ]
    lines += [f"  backend {r.backend}: {r.describe}" for r in report.results]
    lines += [
        "",
        f"{'backend':<9}{'issuance/s':>11}{'wall/s':>9}{'p50 ms':>8}{'p99 ms':>8}{'floor/s':>9}"
        f"{'issuance/floor':>16}{'bindings/s':>12}",
    ]
    for r in report.results:
        if not r.available:
            lines.append(f"{r.backend:<9}  unavailable")
            continue
        lines.append(
            f"{r.backend:<9}{r.issuance_per_cpu_s:>11.1f}{r.issuance_per_wall_s:>9.1f}{r.issuance_p50_ms:>8.2f}"
            f"{r.issuance_p99_ms:>8.2f}{r.floor_per_cpu_s:>9.1f}{r.floor_ratio:>16.2f}{r.bindings_per_cpu_s:>12.1f}"
        )
    available = {r.backend: r for r in report.results if r.available}
    if {"openssl", "liboqs"} <= set(available):
        ratio = available["liboqs"].issuance_per_cpu_s / available["openssl"].issuance_per_cpu_s
        lines.append(f"liboqs / openssl issuance: {ratio:.2f}")
    lines += [
        "",
        "issuance = checks (chain, binding, both proofs, freshness, replay, one per serial) + PQC SVID + KEM cert",
        "floor = the 6 signature operations of one issuance alone (2 ML-DSA-65 signs, 2 ML-DSA-65 + 2 ECDSA",
        "verifies) on the same messages; bindings = SvidBinding signatures (what the composer adds per SVID).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="bench ca worker (internal)")
    parser.add_argument("--worker", action="store_true", required=True)
    parser.parse_args()
    sys.exit(serve(_prepare_worker))
