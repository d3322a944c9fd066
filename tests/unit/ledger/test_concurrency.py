"""Racing on one classical SVID serial: N threads in each of M processes, one winner, every time.

The processes are real (``spawn``), with their own connections, so nothing in Python can serialise
them: only the database's constraint can. The same race through the issuer reproduces issue 10's
measurement (two requests for one SVID with different keys both succeeding) and must now end in
one issuance and duplicates.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from spire_pqc.bench.postgres import PostgresCluster
from spire_pqc.ca.issuer import PQCIssuer
from spire_pqc.ca.ledger import open_ledger
from spire_pqc.ca.request import build_request
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey
from spire_pqc.crypto.mlkem import MLKEM768PrivateKey
from spire_pqc.errors import IssuanceError
from tests.unit.credentials.pki import Domain, der, now_ms
from tests.unit.ledger.entries import entry

PROCESSES = 3
THREADS = 8
SERIAL = "CN=race|42"


def race(dsn: str, password: str | None, process: int, barrier: Any) -> list[tuple[bool, str, bool]]:
    """In a child process: THREADS threads record SERIAL with their own keys and use one nonce."""
    ledger = open_ledger(dsn, password=password)

    def one(thread: int) -> tuple[bool, str, bool]:
        mine = entry(SERIAL, keys=f"{process}-{thread}".encode())
        ledger.size()  # connect (and migrate) before the start line, so the race is the insert
        barrier.wait(timeout=120)
        stored = ledger.record(mine)
        fresh_nonce = ledger.use_nonce(b"shared-nonce-16b", expires=dt.datetime(2031, 1, 1, tzinfo=dt.UTC))
        return stored is mine, stored.keys_fingerprint, fresh_nonce

    try:
        with ThreadPoolExecutor(THREADS) as pool:
            return list(pool.map(one, range(THREADS)))
    finally:
        ledger.close()


def run_race(dsn: str, password: str | None) -> list[tuple[bool, str, bool]]:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Manager().Barrier(PROCESSES * THREADS)
    with ctx.Pool(PROCESSES) as pool:
        results = pool.starmap(race, [(dsn, password, p, barrier) for p in range(PROCESSES)], chunksize=1)
    return [r for rs in results for r in rs]


def assert_one_winner(results: list[tuple[bool, str, bool]]) -> None:
    assert len(results) == PROCESSES * THREADS
    winners = [fp for won, fp, _ in results if won]
    assert len(winners) == 1, f"{len(winners)} racers inserted"
    assert {fp for _, fp, _ in results} == set(winners)  # everyone read back the one winner
    assert sum(fresh for *_, fresh in results) == 1  # and the nonce was fresh exactly once


@pytest.mark.timeout(300)
def test_threads_times_processes_on_sqlite(tmp_path: Path) -> None:
    for round_ in range(2):
        assert_one_winner(run_race(f"sqlite://{tmp_path / f'ledger-{round_}.db'}", None))


@pytest.mark.timeout(300)
def test_threads_times_processes_on_postgres(postgres: PostgresCluster, pg_dsn: str) -> None:
    assert_one_winner(run_race(pg_dsn, postgres.password))


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_concurrent_issue_for_one_svid_with_different_keys(tmp_path: Path, kind: str) -> None:
    """Issue 10's measurement: 8 threads, one classical SVID, 8 key pairs → 1 issued, 7 duplicates.

    Each attempt has its own PQCIssuer over the shared ledger, as the endpoint builds one per request
    (the old per-issuer lock therefore serialised nothing: 2 to 7 issuances per round on 0.1)."""
    domain = Domain.create("example.org")
    dsn = f"sqlite://{tmp_path / 'ledger.db'}" if kind == "sqlite" else "sqlite://:memory:"
    ledger = open_ledger(dsn)

    def issuer() -> PQCIssuer:
        return PQCIssuer(
            domain.hierarchy.intermediate, domain.trust_domain, domain.classical_bundles, ledger=ledger
        )

    leaf, key = domain.classical_ca.issue_svid(domain.spiffe_id())
    keys = [(MLDSA65PrivateKey.generate(), MLKEM768PrivateKey.generate()) for _ in range(THREADS)]

    def request(index: int) -> Any:
        mldsa, mlkem = keys[index]
        return build_request((der(leaf),), key, mldsa, mlkem.public_key().spki(), timestamp_ms=now_ms())

    requests = [request(i) for i in range(THREADS)]
    start = threading.Barrier(THREADS)

    def attempt(index: int) -> str:
        start.wait(timeout=60)
        try:
            issuer().issue(requests[index])
        except IssuanceError as exc:
            return exc.reason
        return "issued"

    try:
        with ThreadPoolExecutor(THREADS) as pool:
            outcomes = sorted(pool.map(attempt, range(THREADS)))
        assert outcomes == ["duplicate"] * (THREADS - 1) + ["issued"]
        assert ledger.size().issuances == 1
        # The winner's retry (same keys, a new request and nonce) gets the same certificates back.
        stored = ledger.lookup(_serial(leaf), now=dt.datetime.now(dt.UTC))
        assert stored is not None
        winner = next(i for i, r in enumerate(requests) if _fingerprint(r) == stored.keys_fingerprint)
        again = issuer().issue(request(winner))
        assert again.reissued and again.response == stored.response
    finally:
        ledger.close()


def _fingerprint(request: Any) -> str:
    import hashlib

    return hashlib.sha256(request.mldsa_spki + request.mlkem_spki).hexdigest()


def _serial(leaf: Any) -> str:
    return f"{leaf.issuer.rfc4514_string()}|{leaf.serial_number:x}"


def test_a_sibling_binding_travels_with_the_pqc_chain_and_verifies() -> None:
    """SPIRE HA: server A's intermediate made the binding, server B's issues the PQC SVID."""
    from cryptography import x509

    from spire_pqc.ca.devca import PQCHierarchy
    from spire_pqc.ca.issuer import IntermediateCA
    from spire_pqc.errors import BindingError
    from spire_pqc.svid import verify_hybrid_svid
    from spire_pqc.x509 import certs

    domain = Domain.create("example.org")  # its intermediate plays server A (it makes the bindings)
    h = domain.hierarchy
    b_key = MLDSA65PrivateKey.generate()
    now = dt.datetime.now(dt.UTC)
    b_cert = certs.build_intermediate(
        h.root, h.root_key, b_key.public_key(), "example.org",
        not_before=now - dt.timedelta(minutes=1), not_after=now + dt.timedelta(days=1),
    )  # fmt: skip
    server_b = PQCIssuer(
        IntermediateCA(b_key, b_cert, (h.root,)), domain.trust_domain, domain.classical_bundles,
        sibling_intermediates=[h.intermediate.certificate],
    )  # fmt: skip
    leaf, key = domain.classical_ca.issue_svid(domain.spiffe_id())
    mldsa, mlkem = MLDSA65PrivateKey.generate(), MLKEM768PrivateKey.generate()
    issued = server_b.issue(
        build_request((der(leaf),), key, mldsa, mlkem.public_key().spki(), timestamp_ms=now_ms())
    )
    load = x509.load_der_x509_certificate
    pqc = [load(c) for c in issued.response.pqc_svid_chain]
    kem = [load(c) for c in issued.response.kem_certificate_chain]
    assert pqc[1] == b_cert and pqc[2] == h.intermediate.certificate
    verified = verify_hybrid_svid(
        [leaf], pqc, kem, classical_bundles=domain.classical_bundles, pqc_bundles=domain.pqc_bundles
    )
    assert verified.binding_intermediate == h.intermediate.public_key
    # Without the sibling's certificate a verifier cannot trust A's binding: refused, not guessed.
    with pytest.raises(BindingError):
        verify_hybrid_svid(
            [leaf],
            pqc[:2],
            kem[:2],
            classical_bundles=domain.classical_bundles,
            pqc_bundles=domain.pqc_bundles,
        )
    # A certificate that is not an intermediate of this root does not become a binding signer.
    other = PQCHierarchy.generate(domain.trust_domain)
    with pytest.raises(BindingError):
        verify_hybrid_svid(
            [leaf], [*pqc[:2], other.intermediate.certificate], kem[:2],
            classical_bundles=domain.classical_bundles, pqc_bundles=domain.pqc_bundles,
        )  # fmt: skip


_CLOSE_RACE = """
import datetime as dt, os, random, sys, threading
from spire_pqc.ca.ledger import open_ledger
from spire_pqc.errors import LedgerError
dsn, password, rounds = sys.argv[1], sys.argv[2] or None, int(sys.argv[3])
expires = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
for round in range(rounds):
    ledger = open_ledger(dsn.replace("ROUND", str(round)), password=password)
    def work():
        while True:
            try:
                ledger.use_nonce(os.urandom(16), expires=expires)
                ledger.size()
            except LedgerError:
                return  # "closed": the only way this loop may end
    worker = threading.Thread(target=work)
    worker.start()
    threading.Event().wait(random.random() / 100)
    ledger.close()
    worker.join(30)
    assert not worker.is_alive()
print("survived", rounds)
"""


@pytest.mark.parametrize("kind", ["sqlite", "memory", "postgresql"])
def test_close_while_another_thread_uses_the_ledger(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Closing (a plugin reconfiguration, an agent shutdown) while an issuance is in flight on another
    thread used to close that thread's connection under it: SQLite crashed the process (SIGSEGV)."""
    password = ""
    if kind == "sqlite":
        dsn = f"sqlite://{tmp_path}/ledger-ROUND.db"
    elif kind == "memory":
        dsn = "sqlite://:memory:"
    else:
        cluster: PostgresCluster = request.getfixturevalue("postgres")
        dsn, password = request.getfixturevalue("pg_dsn"), cluster.password or ""
    rounds = "40" if kind == "postgresql" else "150"
    result = subprocess.run(
        [sys.executable, "-c", _CLOSE_RACE, dsn, password, rounds], capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr[-2000:]}"
    assert f"survived {rounds}" in result.stdout
