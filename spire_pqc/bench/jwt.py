"""`spire-pqc bench jwt`: hybrid JWT-SVID issuance and validation against classical, in the same run.

Both sides run in this process on the same keys, so the ratios show what the post-quantum part adds:

* **issue**: classical = one ES256 JWT-SVID signed (what SPIRE does per FetchJWTSVID); hybrid = the
  same, plus what the PQC CA does for the PQC part (verify the classical token, sign ML-DSA-65);
* **validate**: classical = :func:`spire_pqc.jwtsvid.classical.validate` (ES256 against the JWT
  bundle); hybrid = :func:`spire_pqc.jwtsvid.hybrid.validate` (both signatures, the binding, and the
  PQC key's certificate chain to the PQC root);
* **fetch + validate on the agent**: a workload's round trips on a node agent's Unix socket (a dev-source
  agent in this process, grpclib client): classical = ``FetchJWTSVID`` then ``ValidateJWTSVID``; hybrid =
  ``FetchHybridJWTSVID`` (the classical token, the PQC part from the agent's CA, checked by the agent)
  then ``ValidateHybridJWTSVID``, on the same agent, interleaved;
* **size**: bytes on the wire (the classical token; both compact tokens).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
    classical_roundtrip: Timing | None = None
    hybrid_roundtrip: Timing | None = None


def _time(name: str, iterations: int, operation: Callable[[], object]) -> Timing:
    samples = []
    for _ in range(iterations):
        start = time.perf_counter()
        operation()
        samples.append((time.perf_counter() - start) * 1000)
    return _timing(name, samples)


async def _roundtrips(iterations: int) -> tuple[Timing, Timing]:
    """p50/p99 of fetch + validate on a dev agent's socket, classical and hybrid interleaved."""
    import os
    import shutil
    import tempfile
    from pathlib import Path

    from grpclib.client import Channel
    from grpclib.const import Cardinality
    from spiffe._proto import workload_pb2 as wl

    from spire_pqc._proto.spire_pqc.workload.v1 import workload_pb2 as hy
    from spire_pqc.agent.config import parse
    from spire_pqc.agent.server import Agent

    directory = Path(tempfile.mkdtemp(prefix="spqc-bench-jwt-", dir="/tmp"))
    who = "spiffe://bench.example/workload"
    config = parse({
        "agent": {"socket_path": str(directory / "agent.sock"), "shutdown_grace": "1s"},
        "source": {"kind": "dev", "dev": {"trust_domain": "bench.example", "entries": [
            {"spiffe_id": who, "selectors": [f"unix:uid:{os.getuid()}"]}]}},
    })  # fmt: skip
    header = {"workload.spiffe.io": "true"}
    samples: dict[str, list[float]] = {"classical": [], "hybrid": []}
    try:
        async with Agent(config) as agent:
            channel = Channel(path=str(agent.config.socket_path))

            async def call(method: str, request: Any, reply: type[Any]) -> Any:
                async with channel.request(method, Cardinality.UNARY_UNARY, type(request), reply,
                                           metadata=header, timeout=30) as stream:  # fmt: skip
                    await stream.send_message(request, end=True)
                    return await stream.recv_message()

            async def classical_once() -> None:
                got = await call("/SpiffeWorkloadAPI/FetchJWTSVID", wl.JWTSVIDRequest(audience=["bench"]),
                                 wl.JWTSVIDResponse)  # fmt: skip
                await call("/SpiffeWorkloadAPI/ValidateJWTSVID",
                           wl.ValidateJWTSVIDRequest(audience="bench", svid=got.svids[0].svid),
                           wl.ValidateJWTSVIDResponse)  # fmt: skip

            async def hybrid_once() -> None:
                base = "/spire_pqc.workload.v1.HybridWorkload/"
                got = await call(base + "FetchHybridJWTSVID", hy.HybridJWTSVIDRequest(audience=["bench"]),
                                 hy.HybridJWTSVIDResponse)  # fmt: skip
                token = got.svids[0]
                await call(base + "ValidateHybridJWTSVID",
                           hy.ValidateHybridJWTSVIDRequest(audience="bench", classical=token.classical,
                                                           pqc=token.pqc),
                           hy.ValidateHybridJWTSVIDResponse)  # fmt: skip

            try:
                await classical_once()  # warm up: the first calls attest the caller and issue SVIDs
                await hybrid_once()
                for _ in range(iterations):
                    for name, once in (("classical", classical_once), ("hybrid", hybrid_once)):
                        start = time.perf_counter()
                        await once()
                        samples[name].append((time.perf_counter() - start) * 1000)
            finally:
                channel.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return _timing("classical fetch+validate", samples["classical"]), _timing(
        "hybrid fetch+validate", samples["hybrid"]
    )


def _timing(name: str, samples: list[float]) -> Timing:
    samples = sorted(samples)
    return Timing(name, statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.99))])


def run(*, iterations: int = 300, roundtrips: int = 100) -> JwtReport:
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
    roundtrip = asyncio.run(_roundtrips(roundtrips)) if roundtrips > 0 else (None, None)
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
        *roundtrip,
    )


def format_report(report: JwtReport) -> str:
    lines = [f"JWT-SVIDs, {report.iterations} operations each (p50 / p99 ms; ratio = hybrid / classical p50)"]
    pairs = [
        (report.classical_issue, report.hybrid_issue),
        (report.classical_validate, report.hybrid_validate),
    ]
    if report.classical_roundtrip is not None and report.hybrid_roundtrip is not None:
        pairs.append((report.classical_roundtrip, report.hybrid_roundtrip))
    for c, h in pairs:
        lines.append(f"  {c.name:<24} {c.p50_ms:8.3f} / {c.p99_ms:8.3f}")
        lines.append(f"  {h.name:<24} {h.p50_ms:8.3f} / {h.p99_ms:8.3f}   x{h.p50_ms / c.p50_ms:.1f}")
    lines.append(
        f"  bytes: classical {report.classical_bytes}, hybrid (both tokens) {report.hybrid_bytes}"
        f"   x{report.hybrid_bytes / report.classical_bytes:.1f}"
    )
    return "\n".join(lines)
