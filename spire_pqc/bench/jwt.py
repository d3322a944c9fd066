"""`spire-pqc bench jwt`: hybrid JWT-SVID issuance and validation against classical, in the same run.

Both sides run in this process on the same keys, so the ratios show what the post-quantum part adds:

* **issue**: classical = one ES256 JWT-SVID signed (what SPIRE does per FetchJWTSVID); hybrid = the
  same, plus what the PQC CA does for the PQC part (verify the classical token, sign ML-DSA-65);
* **validate**: classical = :func:`spire_pqc.jwtsvid.classical.validate` (ES256 against the JWT
  bundle); hybrid = :func:`spire_pqc.jwtsvid.hybrid.validate` (both signatures, the binding, and the
  PQC key's certificate chain to the PQC root);
* **size**: bytes on the wire (the classical token; both compact tokens).

Not measured here: the Workload API round trip on the node agent's socket (the HybridWorkload JWT RPCs
are not wired yet; see docs/pq-jwt.md).
"""

from __future__ import annotations

import datetime as dt
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from spire_pqc.agent.jwtsvid import JwtSigningKey, jwks_bytes
from spire_pqc.bundle import BundleSet, X509Bundle
from spire_pqc.ca.devca import PQCHierarchy
from spire_pqc.jwtsvid import classical, hybrid
from spire_pqc.jwtsvid.bundle import PqcJwtBundle
from spire_pqc.spiffeid import SpiffeId, TrustDomain
from spire_pqc.x509.signer import TrustDomainSigner


@dataclass(frozen=True)
class Timing:
    name: str
    p50_ms: float
    p99_ms: float


@dataclass(frozen=True)
class JwtReport:
    iterations: int
    classical_issue: Timing
    hybrid_issue: Timing
    classical_validate: Timing
    hybrid_validate: Timing
    classical_bytes: int
    hybrid_bytes: int


def _time(name: str, iterations: int, operation: Callable[[], object]) -> Timing:
    samples = []
    for _ in range(iterations):
        start = time.perf_counter()
        operation()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return Timing(name, statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.99))])


def run(*, iterations: int = 300) -> JwtReport:
    td = TrustDomain.parse("bench.example")
    who = SpiffeId.parse("spiffe://bench.example/workload")
    hierarchy = PQCHierarchy.generate(td)
    inter = hierarchy.intermediate
    signer = TrustDomainSigner.issue(inter.certificate, inter.key, td.name, ttl=dt.timedelta(hours=1))
    classical_key = JwtSigningKey.generate()
    jwt_bundles = {td: jwks_bytes([classical_key.public_jwk()])}
    pqc_jwt_bundles = {td: PqcJwtBundle.from_signers(td, [signer])}
    pqc_bundles = BundleSet([X509Bundle(td, [hierarchy.root])])
    ttl = dt.timedelta(minutes=5)

    def issue_classical() -> str:
        return classical_key.sign(who, ["bench"], ttl)

    def issue_hybrid() -> hybrid.HybridJwtSvid:
        return hybrid.sign_pqc_part(issue_classical(), signer, trust_domain=td, jwt_bundles=jwt_bundles)

    token = issue_hybrid()
    return JwtReport(
        iterations,
        _time("classical issue", iterations, issue_classical),
        _time("hybrid issue", iterations, issue_hybrid),
        _time(
            "classical validate",
            iterations,
            lambda: classical.validate(token.classical, "bench", jwt_bundles),
        ),
        _time(
            "hybrid validate",
            iterations,
            lambda: hybrid.validate(
                token,
                "bench",
                jwt_bundles=jwt_bundles,
                pqc_jwt_bundles=pqc_jwt_bundles,
                pqc_bundles=pqc_bundles,
            ),
        ),
        len(token.classical),
        len(token.classical) + len(token.pqc),
    )


def format_report(report: JwtReport) -> str:
    lines = [f"JWT-SVIDs, {report.iterations} operations each (p50 / p99 ms; ratio = hybrid / classical p50)"]
    for c, h in (
        (report.classical_issue, report.hybrid_issue),
        (report.classical_validate, report.hybrid_validate),
    ):
        lines.append(f"  {c.name:<20} {c.p50_ms:8.3f} / {c.p99_ms:8.3f}")
        lines.append(f"  {h.name:<20} {h.p50_ms:8.3f} / {h.p99_ms:8.3f}   x{h.p50_ms / c.p50_ms:.1f}")
    lines.append(
        f"  bytes: classical {report.classical_bytes}, hybrid (both tokens) {report.hybrid_bytes}"
        f"   x{report.hybrid_bytes / report.classical_bytes:.1f}"
    )
    return "\n".join(lines)
