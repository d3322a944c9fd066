"""`spire-pqc bench crypto`: primitive throughput of spire-pqc beside `openssl speed`, measured in one run.

Each operation goes through the public key classes (``spire_pqc.crypto``), so the figures include what a
caller pays: the Python layer, the FIPS 203 encapsulation-key check, the hybrid framing. The classical rows
(X25519, ECDSA-P256) go through pyca/cryptography and show the same Python-call overhead on algorithms
whose C code is long optimised. The baseline is the OpenSSL >= 3.5 command line (``openssl35``, installed by
``make openssl``) running ``openssl speed -mr`` on the same machine in the same run (DESIGN.md §6).

Both sides are timed in CPU seconds of the measuring process (``time.process_time`` here, user time in
``openssl speed``), so a busy machine slows both alike instead of skewing the ratio. The work is split into
``rounds``; each round measures every one of our operations for one short window and then runs one
``openssl speed``; each figure is the median over the rounds.
"""

from __future__ import annotations

import hashlib
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from spire_pqc.bench.openssl_cli import OpenSSLCli, find_openssl35
from spire_pqc.crypto import backend_name
from spire_pqc.crypto.hybrid import (
    X25519MLKEM768PrivateKey,
    XWingPrivateKey,
    x25519mlkem768_encapsulate,
    xwing_encapsulate,
)
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey
from spire_pqc.crypto.mlkem import MLKEM768PrivateKey
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


@dataclass(frozen=True)
class Row:
    """One operation: our median ops/s and, when measured, `openssl speed`'s."""

    algorithm: str
    operation: str
    ours_ops: float
    openssl_ops: float | None

    @property
    def ratio(self) -> float | None:
        """ours / openssl (> 1 means spire-pqc is faster)."""
        if self.openssl_ops is None or self.openssl_ops <= 0:
            return None
        return self.ours_ops / self.openssl_ops


@dataclass(frozen=True)
class BenchInfo:
    """What was measured with: printed above the table so numbers can be compared across machines."""

    backend: str
    cryptography: str
    cryptography_openssl: str
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


@dataclass(frozen=True)
class _Case:
    algorithm: str
    operation: str
    run: Callable[[], object]
    compare: bool  # True when `openssl speed` measures the same operation


def _cases() -> list[_Case]:
    """Every operation we time, with its inputs prepared outside the timed callable.

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

    xwing = XWingPrivateKey.generate()
    xwing_public = xwing.public_bytes()
    _, xwing_ct = xwing_encapsulate(xwing_public)

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

    return [
        _Case("ML-KEM-768", "keygen", MLKEM768PrivateKey.generate, True),
        _Case("ML-KEM-768", "encaps", kem_public.encapsulate, True),
        _Case("ML-KEM-768", "decaps", lambda: kem.decapsulate(kem_ct), True),
        _Case("ML-DSA-65", "keygen", MLDSA65PrivateKey.generate, True),
        _Case("ML-DSA-65", "sign", lambda: dsa.sign(message, context=b""), True),
        _Case("ML-DSA-65", "verify", lambda: dsa_public.verify(dsa_sig, message, context=b""), True),
        _Case("X25519MLKEM768", "keygen", lambda: X25519MLKEM768PrivateKey.generate().client_share(), True),
        _Case("X25519MLKEM768", "encaps", lambda: x25519mlkem768_encapsulate(client_share), True),
        _Case("X25519MLKEM768", "decaps", lambda: client.decapsulate(server_share), True),
        _Case("X25519MLKEM768", EXCHANGE, hybrid_exchange, True),
        _Case("X-Wing", "keygen", lambda: XWingPrivateKey.generate().public_bytes(), False),
        _Case("X-Wing", "encaps", lambda: xwing_encapsulate(xwing_public), False),
        _Case("X-Wing", "decaps", lambda: xwing.decapsulate(xwing_ct), False),
        _Case("X25519", "derive", lambda: x25519.exchange(x25519_peer), True),
        _Case("ECDSA-P256", "sign", lambda: ecdsa.sign(digest, prehashed), True),
        _Case("ECDSA-P256", "verify", lambda: ecdsa_public.verify(ecdsa_sig, digest, prehashed), True),
    ]


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


def run_crypto_bench(
    seconds_per_op: float,
    use_openssl: bool,
    *,
    rounds: int = 3,
    openssl: OpenSSLCli | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[Row]:
    """Measure every operation; ``seconds_per_op`` of our CPU time is split over ``rounds`` windows.

    With ``use_openssl``, each round also runs `openssl speed` (``-seconds`` is whole seconds, at least 1)
    on ``openssl`` (default: :func:`find_openssl35`, which raises NotConfiguredError if it is missing).
    """
    if seconds_per_op <= 0 or rounds < 1:
        raise ValueError("seconds_per_op must be > 0 and rounds >= 1")
    cli = (openssl or find_openssl35()) if use_openssl else None
    say = progress or (lambda _line: None)
    cases = _cases()
    window = seconds_per_op / rounds
    speed_seconds = max(1, round(window))
    ours: dict[Key, list[float]] = {(c.algorithm, c.operation): [] for c in cases}
    theirs: dict[Key, list[float]] = {}
    for index in range(rounds):
        say(f"round {index + 1}/{rounds}: spire-pqc, {len(cases)} operations x {window:.2f} s")
        for case in cases:
            ours[(case.algorithm, case.operation)].append(measure(case.run, window))
        if cli is not None:
            say(f"round {index + 1}/{rounds}: openssl speed -seconds {speed_seconds}")
            for key, rate in openssl_speed(cli, speed_seconds).items():
                theirs.setdefault(key, []).append(rate)
    rows = []
    for case in cases:
        key = (case.algorithm, case.operation)
        baseline = theirs.get(key) if case.compare else None
        rows.append(
            Row(
                algorithm=case.algorithm,
                operation=case.operation,
                ours_ops=statistics.median(ours[key]),
                openssl_ops=statistics.median(baseline) if baseline else None,
            )
        )
    return rows


# --- report ------------------------------------------------------------------------------------


def bench_info(openssl: OpenSSLCli | None) -> BenchInfo:
    import cryptography
    from cryptography.hazmat.backends.openssl.backend import backend as cryptography_backend

    return BenchInfo(
        backend=backend_name(),
        cryptography=cryptography.__version__,
        cryptography_openssl=str(cryptography_backend.openssl_version_text()),
        python=f"{platform.python_implementation()} {platform.python_version()}",
        machine=f"{platform.machine()}, {os.cpu_count()} CPUs",
        openssl_cli=f"{openssl.version_text} ({openssl.path})" if openssl is not None else None,
    )


def _ops(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def format_table(rows: Sequence[Row], info: BenchInfo, *, rounds: int, seconds_per_op: float) -> str:
    """A plain-text report: versions, then one line per operation with ours, openssl's and the ratio."""
    lines = [
        f"spire-pqc bench crypto: ops per CPU-second, median of {rounds} round(s), "
        f"{seconds_per_op:g} s of CPU per operation",
        f"  spire-pqc backend: {info.backend} (cryptography {info.cryptography}, {info.cryptography_openssl})",
        f"  python: {info.python}; machine: {info.machine}",
        f"  baseline: {info.openssl_cli or 'not run (--no-openssl)'}",
        "",
        f"{'algorithm':<16}{'operation':<10}{'spire-pqc':>14}{'openssl speed':>16}{'ours/openssl':>14}",
    ]
    for row in rows:
        ratio = "-" if row.ratio is None else f"{row.ratio:.2f}"
        lines.append(
            f"{row.algorithm:<16}{row.operation:<10}{_ops(row.ours_ops):>14}"
            f"{_ops(row.openssl_ops):>16}{ratio:>14}"
        )
    lines += [
        "",
        "exchange = client keygen + server encaps + client decaps with fresh keys; its openssl figure is",
        "derived from openssl's three X25519MLKEM768 rates. X-Wing has no openssl counterpart.",
    ]
    return "\n".join(lines)


def main(*, seconds: float, use_openssl: bool, rounds: int = 3) -> int:
    """Entry for `spire-pqc bench crypto` (called by spire_pqc.cli.bench): measure and print the table."""
    cli = find_openssl35() if use_openssl else None

    def progress(line: str) -> None:
        print(f"bench crypto: {line}", file=sys.stderr, flush=True)

    rows = run_crypto_bench(seconds, use_openssl, rounds=rounds, openssl=cli, progress=progress)
    print(format_table(rows, bench_info(cli), rounds=rounds, seconds_per_op=seconds))
    return 0
