"""`spire-pqc bench ca --endpoints`: issuance requests/s through two CA endpoints vs one, same run.

SPIRE HA runs one plugin (one PQC CA endpoint) per spire-server, all sharing one ledger database.
Here two endpoint processes are started, each the plugin's real :class:`CAEndpoint` (gRPC, mutual
TLS, its intermediate key file re-checked per issuance, the ledger's unique constraint enforcing one
issuance per classical SVID) configured by ``build_config`` from the same plugin_data, on one shared
ledger: a SQLite file (WAL) and, when PostgreSQL 15 is installed, a private PostgreSQL cluster
(:mod:`spire_pqc.bench.postgres`, default durable settings). The load generator (this process) is
the agent's own :class:`GrpcCAClient` over its hybrid-TLS bridge, ``concurrency`` requests in
flight, sending either every request to endpoint A ("one") or alternating A/B ("two"); the two
modes take turns for ``rounds`` rounds on the same endpoint processes and the same ledger, and each
figure is the median over the rounds. Requests (a classical SVID of the trust domain, fresh PQC
keys and both proofs) are prepared before the clock starts.

On a machine with few cores the endpoints and the load generator share them: the report prints the
CPU count and the CPU seconds each endpoint used, so the ratio can be read against that.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import functools
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from spire_pqc._internal.files import atomic_write
from spire_pqc.agent.caclient import GrpcCAClient, TLSIdentity
from spire_pqc.bench.worker import JsonObject, Worker, serve
from spire_pqc.ca.devca import DevAuthority
from spire_pqc.ca.request import IssueRequest, build_request
from spire_pqc.crypto import NoEncryption
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey
from spire_pqc.crypto.mlkem import MLKEM768PrivateKey
from spire_pqc.crypto.status import backend_info
from spire_pqc.errors import UnavailableError
from spire_pqc.spiffeid import SpiffeId, TrustDomain

TRUST_DOMAIN = TrustDomain.parse("bench.example")
AGENT = SpiffeId.parse("spiffe://bench.example/spire/agent/bench")
SERVER = SpiffeId.parse("spiffe://bench.example/spire/server")
_PEM = serialization.Encoding.PEM


def _key_pem(key: object) -> bytes:
    from cryptography.hazmat.primitives.asymmetric import ec

    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key.private_bytes(_PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


# --- an endpoint process -------------------------------------------------------------------------


def _plugin_files(directory: Path, authority: DevAuthority) -> dict[str, Path]:
    inter = authority.hierarchy.intermediate
    files = {
        "key": directory / "intermediate.key.pem",
        "chain": directory / "intermediate.crt.pem",
        "root": directory / "root.crt.pem",
    }
    atomic_write(files["key"], inter.key.pem(NoEncryption()), mode=0o600)
    atomic_write(
        files["chain"], inter.certificate.public_bytes(_PEM) + authority.hierarchy.root.public_bytes(_PEM)
    )
    atomic_write(files["root"], authority.hierarchy.root.public_bytes(_PEM))
    return files


def _prepare_endpoint() -> tuple[JsonObject, Callable[[JsonObject], JsonObject]]:
    from spire_pqc.plugin.config import build_config
    from spire_pqc.plugin.endpoint import CAEndpoint, ServerIdentity

    describe = backend_info().describe()
    running: list[CAEndpoint] = []

    def handle(request: JsonObject) -> JsonObject:
        if "serve" in request:
            spec = request["serve"]
            directory = Path(str(spec["directory"]))
            authority = DevAuthority.load(directory / "dev-ca", TRUST_DOMAIN)
            files = _plugin_files(directory / f"plugin-{spec['name']}", authority)
            lines = [
                f'intermediate_key_path = "{files["key"]}"',
                f'intermediate_cert_path = "{files["chain"]}"',
                f'pqc_bundle_path = "{files["root"]}"',
                f'endpoint_listen_address = "127.0.0.1:{int(spec["port"])}"',
                'authorized_agents = ["spiffe://bench.example/spire/agent/*"]',
                f'ledger_dsn = "{spec["dsn"]}"',
            ]
            if spec.get("password_file"):
                lines.append(f'ledger_password_file = "{spec["password_file"]}"')
            config = build_config(TRUST_DOMAIN.name, "\n".join(lines))
            cert, key = authority.classical.issue_svid(SERVER, ttl=dt.timedelta(days=1))
            identity = ServerIdentity(
                chain=(cert,), private_key_pem=_key_pem(key), bundle=(authority.classical.certificate,)
            )
            endpoint = CAEndpoint(config, lambda: identity)
            endpoint.start()
            running.append(endpoint)
            return {"port": endpoint.port}
        if "cpu" in request:
            return {"cpu_s": time.process_time()}
        if "stop" in request:
            for endpoint in running:
                endpoint.stop()
            running.clear()
            return {"stopped": True}
        raise ValueError(f"unknown request {sorted(request)}")

    return {"backend": describe}, handle


# --- the load generator --------------------------------------------------------------------------


@dataclass(frozen=True)
class LedgerFigures:
    ledger: str  # "sqlite file" / "postgresql"
    one_per_s: float  # median over rounds: every request to endpoint A
    two_per_s: float  # median over rounds: requests alternating between A and B
    one_p50_ms: float
    two_p50_ms: float
    cpu_a_s: float  # CPU seconds each endpoint process used over the whole run (both modes)
    cpu_b_s: float
    cpu_load_s: float  # CPU seconds of the load generator (this process) over the same run
    issued: int  # successful issuances (every request must succeed)

    @property
    def ratio(self) -> float:
        return self.two_per_s / self.one_per_s if self.one_per_s else 0.0


@dataclass(frozen=True)
class EndpointsReport:
    backend: str
    requests: int
    concurrency: int
    rounds: int
    cpus: int
    ledgers: tuple[LedgerFigures, ...]
    skipped: tuple[str, ...] = ()  # ledgers not measured, with the reason


def _prepare_requests(authority: DevAuthority, count: int, first: int) -> list[IssueRequest]:
    now_ms = int(time.time() * 1000)
    prepared = []
    for index in range(first, first + count):
        leaf, key = authority.classical.issue_svid(
            SpiffeId.parse(f"spiffe://bench.example/w/{index}"), ttl=dt.timedelta(hours=1)
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


async def _drive(
    clients: Sequence[GrpcCAClient], requests: Sequence[IssueRequest], concurrency: int
) -> tuple[float, float]:
    """Send ``requests`` (request i to ``clients[i % len(clients)]``), ``concurrency`` in flight;
    return (requests/s, p50 ms). Every request must be issued."""
    latencies: list[float] = []
    queue = iter(enumerate(requests))

    async def sender() -> None:
        for index, request in queue:
            t0 = time.perf_counter()
            await clients[index % len(clients)].issue(request)
            latencies.append(time.perf_counter() - t0)

    started = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return len(requests) / elapsed, statistics.median(latencies) * 1e3


async def _measure(
    authority: DevAuthority, ports: Sequence[int], requests: int, concurrency: int, rounds: int, first: int
) -> tuple[list[float], list[float], list[float], list[float]]:
    cert, key = authority.classical.issue_svid(AGENT, ttl=dt.timedelta(days=1))
    identity = TLSIdentity(
        cert.public_bytes(_PEM), _key_pem(key), authority.classical.certificate.public_bytes(_PEM)
    )

    async def current() -> TLSIdentity:
        return identity

    a, b = (GrpcCAClient(f"127.0.0.1:{port}", current, server_id=SERVER, timeout=60) for port in ports)
    one: list[float] = []
    two: list[float] = []
    one_p50: list[float] = []
    two_p50: list[float] = []
    try:
        # Warm both connections (TLS handshakes, the endpoints' first issuance) outside the clock.
        warm = await asyncio.to_thread(_prepare_requests, authority, 2, first)
        await a.issue(warm[0])
        await b.issue(warm[1])
        first += 2
        for index in range(rounds):
            for mode in ("one", "two") if index % 2 == 0 else ("two", "one"):
                print(
                    f"bench ca --endpoints: round {index + 1}/{rounds}, {mode} endpoint(s)",
                    file=sys.stderr,
                    flush=True,
                )
                # Prepared right before the clock starts, so they are fresh (freshness window).
                prepared = await asyncio.to_thread(_prepare_requests, authority, requests, first)
                first += requests
                clients = [a] if mode == "one" else [a, b]
                rate, p50 = await _drive(clients, prepared, concurrency)
                (one if mode == "one" else two).append(rate)
                (one_p50 if mode == "one" else two_p50).append(p50)
    finally:
        await a.close()
        await b.close()
    return one, two, one_p50, two_p50


def _ledger_run(
    name: str,
    directory: Path,
    authority: DevAuthority,
    dsn: str,
    password_file: Path | None,
    *,
    requests: int,
    concurrency: int,
    rounds: int,
    env: dict[str, str],
) -> LedgerFigures:
    workers = [Worker("spire_pqc.bench.endpoints", ["--endpoint"], env=env) for _ in range(2)]
    try:
        ports = []
        for label, worker in zip("ab", workers, strict=True):
            worker.start()
            if worker.unavailable is not None:
                raise UnavailableError(f"bench ca --endpoints: {worker.unavailable}")
            spec: JsonObject = {
                "directory": str(directory), "name": f"{name}-{label}", "dsn": dsn,
                "port": _free_port(), "password_file": str(password_file) if password_file else "",
            }  # fmt: skip
            ports.append(int(worker.ask({"serve": spec})["port"]))
        cpu0 = [float(w.ask({"cpu": True})["cpu_s"]) for w in workers]
        load0 = time.process_time()
        one, two, one_p50, two_p50 = asyncio.run(
            _measure(authority, ports, requests, concurrency, rounds, first=len(name) * 1_000_000)
        )
        load = time.process_time() - load0
        cpu1 = [float(w.ask({"cpu": True})["cpu_s"]) for w in workers]
        for worker in workers:
            worker.ask({"stop": True})
    finally:
        for worker in workers:
            worker.stop()
    return LedgerFigures(
        ledger=name,
        one_per_s=statistics.median(one),
        two_per_s=statistics.median(two),
        one_p50_ms=statistics.median(one_p50),
        two_p50_ms=statistics.median(two_p50),
        cpu_a_s=cpu1[0] - cpu0[0],
        cpu_b_s=cpu1[1] - cpu0[1],
        cpu_load_s=load,
        issued=(len(one) + len(two)) * requests + 2,
    )


def _free_port() -> int:
    from spire_pqc.bench.spirelab import free_port

    return free_port()


def run(
    *,
    requests: int = 300,
    concurrency: int = 8,
    rounds: int = 3,
    backend: str = "openssl",
    postgres: bool = True,
) -> EndpointsReport:
    """Two endpoint processes on one SQLite file ledger, then on one PostgreSQL ledger (if installed)."""
    if requests < 1 or concurrency < 1 or rounds < 1:
        raise ValueError("requests, concurrency and rounds must be >= 1")
    env = dict(os.environ, SPIRE_PQC_BACKEND=backend)
    directory = Path(tempfile.mkdtemp(prefix="spq-endpoints-", dir="/tmp"))
    figures: list[LedgerFigures] = []
    skipped: list[str] = []
    try:
        authority = DevAuthority.load_or_create(directory / "dev-ca", TRUST_DOMAIN)
        measure = functools.partial(
            _ledger_run, directory=directory, authority=authority,
            requests=requests, concurrency=concurrency, rounds=rounds, env=env,
        )  # fmt: skip
        figures.append(measure("sqlite file", dsn=f"sqlite://{directory / 'ledger.db'}", password_file=None))
        if postgres:
            from spire_pqc.bench.postgres import PostgresCluster, PostgresLabError, postgres_bindir

            try:
                postgres_bindir()
            except PostgresLabError as exc:
                skipped.append(f"postgresql: {exc}")
            else:
                with PostgresCluster() as cluster:
                    cluster.create_database("ledger")
                    password = cluster.write_password_file(directory / "pg-password")
                    figures.append(measure("postgresql", dsn=cluster.dsn("ledger"), password_file=password))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return EndpointsReport(
        backend=backend,
        requests=requests,
        concurrency=concurrency,
        rounds=rounds,
        cpus=os.cpu_count() or 1,
        ledgers=tuple(figures),
        skipped=tuple(skipped),
    )


def format_report(report: EndpointsReport) -> str:
    lines = [
        f"spire-pqc bench ca --endpoints ({report.backend}): two CA endpoint processes on one ledger; "
        f"{report.requests} issuance requests per round, {report.concurrency} in flight, median of "
        f"{report.rounds} round(s) per mode; {report.cpus} CPUs shared by both endpoints and the load generator",
        f"{'ledger':<13}{'one req/s':>10}{'two req/s':>10}{'two/one':>9}{'one p50 ms':>12}{'two p50 ms':>12}"
        f"{'CPU s A':>9}{'CPU s B':>9}{'CPU s load':>12}",
    ]
    for f in report.ledgers:
        lines.append(
            f"{f.ledger:<13}{f.one_per_s:>10.1f}{f.two_per_s:>10.1f}{f.ratio:>9.2f}{f.one_p50_ms:>12.1f}"
            f"{f.two_p50_ms:>12.1f}{f.cpu_a_s:>9.1f}{f.cpu_b_s:>9.1f}{f.cpu_load_s:>12.1f}"
        )
    lines += [f"  not measured: {why}" for why in report.skipped]
    lines.append(
        "one = every request to endpoint A; two = requests alternating A/B (same processes, same ledger, same run)"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="bench ca --endpoints worker (internal)")
    parser.add_argument("--endpoint", action="store_true", required=True)
    parser.parse_args()
    sys.exit(serve(_prepare_endpoint))
