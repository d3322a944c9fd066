"""`spire-pqc bench crypto`: primitive throughput of spire-pqc on each PQ backend beside `openssl speed`,
measured in one run.

Each operation goes through the public key classes (``spire_pqc.crypto``), so the figures include what a
caller pays: the Python layer, the FIPS 203 encapsulation-key check, the hybrid framing. The classical rows
(X25519, ECDSA-P256) go through pyca/cryptography and show the same Python-call overhead on algorithms
whose C code is long optimised. The baseline is the OpenSSL >= 3.5 command line (``openssl35``, installed by
``make openssl``) running ``openssl speed -mr`` on the same machine in the same run (README, "Benchmarks").

The backend is chosen once per process, so each backend is measured by a worker process of its own
(``python -m spire_pqc.bench.crypto --worker`` with ``SPIRE_PQC_BACKEND`` set, through
:mod:`spire_pqc.bench.worker`; the liboqs worker finds
liboqs through ``OQS_INSTALL_PATH``, which ``make bench`` sets). The workers wait on a pipe between windows,
so only one thing measures at a time.

Both sides are timed in CPU seconds of the measuring process (``time.process_time`` in the worker, user time
in ``openssl speed``), so a busy machine slows both alike instead of skewing the ratio. The work is split into
``rounds``; each round measures every operation on every backend for one short window and then runs one
``openssl speed``; each figure is the median over the rounds.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from spire_pqc.bench.openssl_cli import OpenSSLCli, find_openssl35
from spire_pqc.bench.worker import JsonObject, Worker, serve
from spire_pqc.crypto._backend import openssl_helpers
from spire_pqc.crypto.hybrid import (
    X25519MLKEM768PrivateKey,
    x25519mlkem768_encapsulate,
)
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey
from spire_pqc.crypto.mlkem import MLKEM768PrivateKey
from spire_pqc.crypto.status import backend_info
from spire_pqc.errors import CryptoError, UnavailableError

Key = tuple[str, str]  # (algorithm, operation), e.g. ("ML-KEM-768", "encaps")

# The algorithms `openssl speed` is asked for (names from `openssl35 list -kem-algorithms` /
# `-signature-algorithms`; `ecdhx25519` and `ecdsap256` are the classic speed names).
SPEED_ALGORITHMS = ("ML-KEM-768", "ML-DSA-65", "X25519MLKEM768", "ecdhx25519", "ecdsap256")
# Operations per speed run (3 ML-KEM + 3 ML-DSA + 3 hybrid + 1 ECDH + 2 ECDSA), for its timeout.
_SPEED_WINDOWS = 12
_OPERATION_NAMES = {"signs": "sign"}  # speed says "signs" for ML-DSA; we say "sign"
_ECDH_CURVES = {"253": "X25519", "448": "X448"}  # speed labels ECDH by key bits only
_ECDSA_CURVES = {"256": "ECDSA-P256", "384": "ECDSA-P384", "521": "ECDSA-P521"}
EXCHANGE = "exchange"
# cryptography's own MLKEM768PrivateKey.from_seed_bytes alone, whatever the backend: the floor of the
# openssl backend's keygen (compared with `openssl speed`'s keygen).
KEYGEN_FLOOR = "keygen-floor"
_SPEED_OF = {("ML-KEM-768", KEYGEN_FLOOR): ("ML-KEM-768", "keygen")}


BACKENDS = ("openssl", "liboqs")


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


@dataclass(frozen=True)
class Row:
    """One operation: our median ops/s per backend and, when measured, `openssl speed`'s."""

    algorithm: str
    operation: str
    ops: Mapping[str, float]  # backend name -> ops/s, for the backends that ran
    openssl_ops: float | None

    def ratio(self, backend: str) -> float | None:
        """ours on ``backend`` / `openssl speed` (> 1 means spire-pqc is faster)."""
        return _ratio(self.ops.get(backend), self.openssl_ops)

    def backend_ratio(self, backend: str = "liboqs", baseline: str = "openssl") -> float | None:
        """ours on ``backend`` / ours on ``baseline`` (> 1 means ``backend`` is faster)."""
        return _ratio(self.ops.get(backend), self.ops.get(baseline))


@dataclass(frozen=True)
class BenchInfo:
    """What was measured with: printed above the table so numbers can be compared across machines.

    ``backends`` maps each backend asked for to its ``backend_info().describe()`` line, or to
    ``"unavailable: <reason>"`` when its worker could not load it.
    """

    backends: Mapping[str, str]
    python: str
    machine: str
    openssl_cli: str | None


# --- parsing `openssl speed -mr` ---------------------------------------------------------------


def _dtp_key(fields: Sequence[str]) -> Key | None:
    """Map the fields of a ``+DTP:`` line to (algorithm, operation).

    Observed with OpenSSL 3.5.9: ``+DTP:ML-KEM-768:keygen:1`` (KEM and signature algorithms:
    name, operation, seconds), ``+DTP:256:sign:ecdsa:1`` (bits, operation, "ecdsa", seconds) and
    ``+DTP:253::ecdh:1`` (bits, empty operation, "ecdh", seconds).
    """
    if len(fields) == 4 and fields[2] == "ecdsa":
        return _ECDSA_CURVES.get(fields[0], f"ECDSA-{fields[0]}"), fields[1]
    if len(fields) == 4 and fields[2] == "ecdh":
        return _ECDH_CURVES.get(fields[0], f"ECDH-{fields[0]}"), "derive"
    if len(fields) == 3 and fields[0] and fields[1]:
        return fields[0], _OPERATION_NAMES.get(fields[1], fields[1])
    return None


def parse_speed_mr(text: str) -> dict[Key, float]:
    """Ops/s per (algorithm, operation) from ``openssl speed -mr`` output (stderr and stdout together).

    In machine-readable mode every measured window is a ``+DTP:`` line naming it, followed by a
    ``+R<n>:<count>:<label>:<seconds>`` line; the rate is count / seconds. The ``+F`` summary lines do not
    name KEM and signature algorithms, so they are not used. Unknown lines are ignored.
    """
    rates: dict[Key, float] = {}
    pending: Key | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("+DTP:"):
            pending = _dtp_key(line.split(":")[1:])
        elif line.startswith("+DT:"):  # symmetric-cipher windows: not ours
            pending = None
        elif line.startswith("+R") and pending is not None:
            fields = line.split(":")
            try:
                count, seconds = int(fields[1]), float(fields[-1])
            except (IndexError, ValueError):
                pending = None
                continue
            if seconds > 0:
                rates[pending] = count / seconds
            pending = None
    return rates


def openssl_speed(cli: OpenSSLCli, seconds: int) -> dict[Key, float]:
    """One `openssl speed -mr` run over :data:`SPEED_ALGORITHMS`, ``seconds`` per operation."""
    timeout = _SPEED_WINDOWS * seconds * 4 + 60.0  # generous: the machine may be busy
    result = cli.run(["speed", "-mr", "-seconds", str(seconds), *SPEED_ALGORITHMS], timeout=timeout)
    output = result.stderr.decode(errors="replace") + "\n" + result.stdout.decode(errors="replace")
    rates = parse_speed_mr(output)
    missing = [key for key in _OPENSSL_KEYS if key not in rates]
    if missing:
        raise UnavailableError(f"`openssl speed` reported no figure for {missing}; output: {output[-1000:]}")
    rates[("X25519MLKEM768", EXCHANGE)] = _exchange_rate(rates)
    return rates


def _exchange_rate(rates: dict[Key, float]) -> float:
    """A full hybrid exchange is keygen + encaps + decaps one after the other: add their times."""
    per_op = [rates[("X25519MLKEM768", op)] for op in ("keygen", "encaps", "decaps")]
    return 1.0 / sum(1.0 / rate for rate in per_op)


# --- our side ----------------------------------------------------------------------------------


# Every operation we time, in report order, with whether `openssl speed` measures the same operation.
CASES: tuple[tuple[str, str, bool], ...] = (
    ("ML-KEM-768", "keygen", True),
    ("ML-KEM-768", "encaps", True),
    ("ML-KEM-768", "decaps", True),
    ("ML-DSA-65", "keygen", True),
    ("ML-DSA-65", "sign", True),
    ("ML-DSA-65", "verify", True),
    ("X25519MLKEM768", "keygen", True),
    ("X25519MLKEM768", "encaps", True),
    ("X25519MLKEM768", "decaps", True),
    ("X25519MLKEM768", EXCHANGE, True),
    ("X25519", "derive", True),
    ("ECDSA-P256", "sign", True),
    ("ECDSA-P256", "verify", True),
    ("ML-KEM-768", KEYGEN_FLOOR, True),
)


def _operations() -> dict[Key, Callable[[], object]]:
    """Every operation of :data:`CASES` on this process's backend, inputs prepared outside the callable.

    Like `openssl speed`, encapsulation reuses one public key and verification one signature; the
    X25519MLKEM768 "exchange" row instead uses fresh keys every time (a real TLS handshake).
    """
    message = os.urandom(32)
    digest = hashlib.sha256(message).digest()

    kem = MLKEM768PrivateKey.generate()
    kem_public = kem.public_key()
    _, kem_ct = kem_public.encapsulate()

    dsa = MLDSA65PrivateKey.generate()
    dsa_public = dsa.public_key()
    dsa_sig = dsa.sign(message, context=b"")

    client = X25519MLKEM768PrivateKey.generate()
    client_share = client.client_share()
    _, server_share = x25519mlkem768_encapsulate(client_share)

    cryptography_keys = openssl_helpers()  # cryptography's own ML-KEM, for the keygen-floor row

    x25519 = X25519PrivateKey.generate()
    x25519_peer = X25519PrivateKey.generate().public_key()

    ecdsa = ec.generate_private_key(ec.SECP256R1())
    # A 32-byte digest signed as-is, as `openssl speed ecdsa` does (no hashing inside the timing).
    prehashed = ec.ECDSA(utils.Prehashed(hashes.SHA256()))
    ecdsa_sig = ecdsa.sign(digest, prehashed)
    ecdsa_public = ecdsa.public_key()

    def hybrid_exchange() -> None:
        peer = X25519MLKEM768PrivateKey.generate()
        secret, reply = x25519mlkem768_encapsulate(peer.client_share())
        if peer.decapsulate(reply) != secret:
            raise CryptoError("X25519MLKEM768: client and server derived different secrets")

    operations: dict[Key, Callable[[], object]] = {
        ("ML-KEM-768", "keygen"): MLKEM768PrivateKey.generate,
        ("ML-KEM-768", KEYGEN_FLOOR): lambda: cryptography_keys.cryptography_mlkem768_private_key(
            os.urandom(64)
        ),
        ("ML-KEM-768", "encaps"): kem_public.encapsulate,
        ("ML-KEM-768", "decaps"): lambda: kem.decapsulate(kem_ct),
        ("ML-DSA-65", "keygen"): MLDSA65PrivateKey.generate,
        ("ML-DSA-65", "sign"): lambda: dsa.sign(message, context=b""),
        ("ML-DSA-65", "verify"): lambda: dsa_public.verify(dsa_sig, message, context=b""),
        ("X25519MLKEM768", "keygen"): lambda: X25519MLKEM768PrivateKey.generate().client_share(),
        ("X25519MLKEM768", "encaps"): lambda: x25519mlkem768_encapsulate(client_share),
        ("X25519MLKEM768", "decaps"): lambda: client.decapsulate(server_share),
        ("X25519MLKEM768", EXCHANGE): hybrid_exchange,
        ("X25519", "derive"): lambda: x25519.exchange(x25519_peer),
        ("ECDSA-P256", "sign"): lambda: ecdsa.sign(digest, prehashed),
        ("ECDSA-P256", "verify"): lambda: ecdsa_public.verify(ecdsa_sig, digest, prehashed),
    }
    return operations


# Operations `openssl speed` must report (the exchange row is derived from three of them).
_OPENSSL_KEYS: tuple[Key, ...] = (
    ("ML-KEM-768", "keygen"),
    ("ML-KEM-768", "encaps"),
    ("ML-KEM-768", "decaps"),
    ("ML-DSA-65", "keygen"),
    ("ML-DSA-65", "sign"),
    ("ML-DSA-65", "verify"),
    ("X25519MLKEM768", "keygen"),
    ("X25519MLKEM768", "encaps"),
    ("X25519MLKEM768", "decaps"),
    ("X25519", "derive"),
    ("ECDSA-P256", "sign"),
    ("ECDSA-P256", "verify"),
)


def measure(operation: Callable[[], object], window: float) -> float:
    """Ops per CPU-second of ``operation`` over about ``window`` CPU-seconds.

    Calls run in batches that double until a batch takes a millisecond, so reading the clock costs
    nothing measurable even for the fastest operation.
    """
    for _ in range(3):  # warm caches (and the backend's one-time setup) outside the window
        operation()
    clock = time.process_time
    count, batch = 0, 1
    start = clock()
    elapsed = 0.0
    while elapsed < window:
        batch_start = clock()
        for _ in range(batch):
            operation()
        count += batch
        now = clock()
        if now - batch_start < 0.001:
            batch *= 2
        elapsed = now - start
    return count / elapsed


# --- the per-backend worker process -------------------------------------------------------------


def _prepare_worker() -> tuple[JsonObject, Callable[[JsonObject], JsonObject]]:
    """The worker's greeting (this process's backend) and its handler: for each request
    ``{"window": CPU seconds}`` it measures every case once and answers ``{"rates": [[algorithm,
    operation, ops/s], ...]}``."""
    ready = {"backend": backend_info().describe()}
    operations = _operations()

    def handle(request: JsonObject) -> JsonObject:
        window = float(request["window"])
        return {"rates": [[a, o, measure(operations[(a, o)], window)] for a, o, _ in CASES]}

    return ready, handle


def worker_main() -> int:
    """``python -m spire_pqc.bench.crypto --worker``: measure this process's backend on request
    (JSON lines, :mod:`spire_pqc.bench.worker`)."""
    return serve(_prepare_worker)


@dataclass
class _Worker:
    """A worker process measuring one backend; ``unavailable`` is set when it could not load it."""

    backend: str
    process: Worker | None = None
    describe: str = ""
    unavailable: str | None = None
    rates: dict[Key, list[float]] = field(default_factory=dict)

    def start(self) -> None:
        env = dict(os.environ, SPIRE_PQC_BACKEND=self.backend)
        self.process = Worker("spire_pqc.bench.crypto", ["--worker"], env=env).start()
        self.describe = str(self.process.ready.get("backend", ""))
        self.unavailable = self.process.unavailable

    def measure(self, window: float) -> None:
        assert self.process is not None
        rates = self.process.ask({"window": window})["rates"]
        assert isinstance(rates, list)
        for algorithm, operation, rate in rates:
            self.rates.setdefault((algorithm, operation), []).append(float(rate))

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


# --- the run -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchResult:
    rows: list[Row]
    backends: dict[str, str]  # backend -> describe line, or "unavailable: <reason>"


def run_crypto_bench(
    seconds_per_op: float,
    use_openssl: bool,
    *,
    rounds: int = 3,
    backends: Sequence[str] = BACKENDS,
    openssl: OpenSSLCli | None = None,
    progress: Callable[[str], None] | None = None,
) -> BenchResult:
    """Measure every operation on every backend; ``seconds_per_op`` of CPU time is split over ``rounds``.

    With ``use_openssl``, each round also runs `openssl speed` (``-seconds`` is whole seconds, at least 1)
    on ``openssl`` (default: :func:`find_openssl35`, which raises NotConfiguredError if it is missing).
    A backend whose worker cannot load it is reported as unavailable, with the reason.
    """
    if seconds_per_op <= 0 or rounds < 1:
        raise ValueError("seconds_per_op must be > 0 and rounds >= 1")
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown or not backends:
        raise ValueError(f"backends must be some of {', '.join(BACKENDS)}, got {list(backends)}")
    cli = (openssl or find_openssl35()) if use_openssl else None
    say = progress or (lambda _line: None)
    window = seconds_per_op / rounds
    speed_seconds = max(1, round(window))
    theirs: dict[Key, list[float]] = {}
    workers = [_Worker(name) for name in backends]
    try:
        for worker in workers:
            worker.start()
        running = [w for w in workers if w.unavailable is None]
        for index in range(rounds):
            # Alternate which backend measures first: the classical rows (the same code on both) showed
            # the first one ~10% slower when the order never changed.
            for worker in running if index % 2 == 0 else running[::-1]:
                say(
                    f"round {index + 1}/{rounds}: spire-pqc on {worker.backend}, {window:.2f} s per operation"
                )
                worker.measure(window)
            if cli is not None:
                say(f"round {index + 1}/{rounds}: openssl speed -seconds {speed_seconds}")
                for key, rate in openssl_speed(cli, speed_seconds).items():
                    theirs.setdefault(key, []).append(rate)
    finally:
        for worker in workers:
            worker.stop()
    rows = []
    for algorithm, operation, compare in CASES:
        baseline = (
            theirs.get(_SPEED_OF.get((algorithm, operation), (algorithm, operation))) if compare else None
        )
        rows.append(
            Row(
                algorithm=algorithm,
                operation=operation,
                ops={
                    w.backend: statistics.median(w.rates[(algorithm, operation)]) for w in workers if w.rates
                },
                openssl_ops=statistics.median(baseline) if baseline else None,
            )
        )
    described = {
        w.backend: w.describe if w.unavailable is None else f"unavailable: {w.unavailable}" for w in workers
    }
    return BenchResult(rows, described)


# --- report ------------------------------------------------------------------------------------


def bench_info(openssl: OpenSSLCli | None, backends: Mapping[str, str]) -> BenchInfo:
    return BenchInfo(
        backends=dict(backends),
        python=f"{platform.python_implementation()} {platform.python_version()}",
        machine=f"{platform.machine()}, {os.cpu_count()} CPUs",
        openssl_cli=f"{openssl.version_text} ({openssl.path})" if openssl is not None else None,
    )


def _ops(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def format_table(rows: Sequence[Row], info: BenchInfo, *, rounds: int, seconds_per_op: float) -> str:
    """A plain-text report: versions, then one line per operation with each backend's figure, openssl
    speed's, each backend against openssl speed, and liboqs against openssl (when both ran)."""
    measured = [b for b in BACKENDS if any(b in row.ops for row in rows)]
    lines = [
        f"spire-pqc bench crypto: ops per CPU-second, median of {rounds} round(s), "
        f"{seconds_per_op:g} s of CPU per operation and backend",
    ]
    lines += [f"  backend {name}: {text}" for name, text in info.backends.items()]
    lines += [
        f"  python: {info.python}; machine: {info.machine}",
        f"  baseline: {info.openssl_cli or 'not run (--no-openssl)'}",
        "",
    ]
    both = all(b in measured for b in BACKENDS)
    header = f"{'algorithm':<16}{'operation':<14}"
    header += "".join(f"{name:>11}" for name in measured) + f"{'speed':>11}"
    header += "".join(f"{name + '/speed':>14}" for name in measured)
    header += f"{'liboqs/openssl':>16}" if both else ""
    lines.append(header)
    for row in rows:
        line = f"{row.algorithm:<16}{row.operation:<14}"
        line += (
            "".join(f"{_ops(row.ops.get(name)):>11}" for name in measured) + f"{_ops(row.openssl_ops):>11}"
        )
        line += "".join(f"{_times(row.ratio(name)):>14}" for name in measured)
        line += f"{_times(row.backend_ratio()):>16}" if both else ""
        lines.append(line)
    lines += [
        "",
        "openssl / liboqs = spire-pqc on that backend (SPIRE_PQC_BACKEND); speed = `openssl speed` (same run).",
        "X25519 and ECDSA-P256 run the same code on both backends: their liboqs/openssl ratio is the bias.",
        f"ML-KEM-768 {KEYGEN_FLOOR} = cryptography's from_seed_bytes alone (same code on both backends): the",
        "floor of the openssl backend's keygen, against `openssl speed`'s keygen.",
        "exchange = client keygen + server encaps + client decaps with fresh keys; its speed figure is",
        "derived from openssl's three X25519MLKEM768 rates.",
    ]
    return "\n".join(lines)


def main(*, seconds: float, use_openssl: bool, rounds: int = 3, backends: Sequence[str] = BACKENDS) -> int:
    """Entry for `spire-pqc bench crypto` (called by spire_pqc.cli.bench): measure and print the table."""
    cli = find_openssl35() if use_openssl else None

    def progress(line: str) -> None:
        print(f"bench crypto: {line}", file=sys.stderr, flush=True)

    result = run_crypto_bench(
        seconds, use_openssl, rounds=rounds, backends=backends, openssl=cli, progress=progress
    )
    print(format_table(result.rows, bench_info(cli, result.backends), rounds=rounds, seconds_per_op=seconds))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="bench crypto worker (internal)")
    parser.add_argument("--worker", action="store_true", required=True)
    parser.parse_args()
    sys.exit(worker_main())
