"""`spire-pqc bench crypto`: the `openssl speed -mr` parser on real output, the per-backend workers, rows,
ratios and the table.

No timing is asserted (benchmarks are never timed unit tests); the measuring loop is only checked to
count calls and report a positive rate.
"""

from __future__ import annotations

import pytest

from spire_pqc.bench.crypto import (
    CASES,
    BenchInfo,
    Row,
    _Worker,
    format_table,
    measure,
    parse_speed_mr,
    run_crypto_bench,
)
from tests._backends import require_liboqs

# Captured from `openssl35 speed -mr -seconds 1 ML-KEM-768 ML-DSA-65 X25519MLKEM768 ecdhx25519 ecdsap256`
# (Debian trixie OpenSSL 3.5.9, x86_64, a busy 2-CPU machine): stderr first, then stdout.
SPEED_MR_3_5_9 = """\
+DTP:256:sign:ecdsa:1
+R7:15594:256:0.54
+DTP:256:verify:ecdsa:1
+R8:5774:256:0.51
+DTP:253::ecdh:1
+R9:13106:253:0.64
+DTP:ML-KEM-768:keygen:1
+R15:8868:ML-KEM-768:0.56
+DTP:ML-KEM-768:encaps:1
+R16:10181:ML-KEM-768:0.50
+DTP:ML-KEM-768:decaps:1
+R17:6628:ML-KEM-768:0.49
+DTP:X25519MLKEM768:keygen:1
+R15:3429:X25519MLKEM768:0.49
+DTP:X25519MLKEM768:encaps:1
+R16:2543:X25519MLKEM768:0.49
+DTP:X25519MLKEM768:decaps:1
+R17:3343:X25519MLKEM768:0.50
+DTP:ML-DSA-65:keygen:1
+R18:2214:ML-DSA-65:0.55
+DTP:ML-DSA-65:signs:1
+R19:374:ML-DSA-65:0.53
+DTP:ML-DSA-65:verify:1
+R20:2498:ML-DSA-65:0.60
+F4:3:256:28877.777778:11321.568627
+F5:22:253:20478.125000:0.000049
+F9:13:15835.714286:20362.000000:13526.530612
+F9:15:6997.959184:5189.795918:6686.000000
+F10:10:4025.454545:705.660377:4163.333333
"""


def test_parser_reads_every_window_of_real_output() -> None:
    rates = parse_speed_mr(SPEED_MR_3_5_9)
    expected = {
        ("ECDSA-P256", "sign"): 15594 / 0.54,
        ("ECDSA-P256", "verify"): 5774 / 0.51,
        ("X25519", "derive"): 13106 / 0.64,
        ("ML-KEM-768", "keygen"): 8868 / 0.56,
        ("ML-KEM-768", "encaps"): 10181 / 0.50,
        ("ML-KEM-768", "decaps"): 6628 / 0.49,
        ("X25519MLKEM768", "keygen"): 3429 / 0.49,
        ("X25519MLKEM768", "encaps"): 2543 / 0.49,
        ("X25519MLKEM768", "decaps"): 3343 / 0.50,
        ("ML-DSA-65", "keygen"): 2214 / 0.55,
        ("ML-DSA-65", "sign"): 374 / 0.53,  # speed says "signs"
        ("ML-DSA-65", "verify"): 2498 / 0.60,
    }
    assert rates.keys() == expected.keys()
    for key, value in expected.items():
        assert rates[key] == pytest.approx(value), key


def test_parser_agrees_with_openssls_own_summary_lines() -> None:
    # The +F lines carry OpenSSL's own rates (count / CPU seconds) in a fixed order; they must match ours.
    rates = parse_speed_mr(SPEED_MR_3_5_9)
    assert rates[("ECDSA-P256", "sign")] == pytest.approx(28877.777778)
    assert rates[("X25519", "derive")] == pytest.approx(20478.125)
    assert rates[("ML-KEM-768", "encaps")] == pytest.approx(20362.0)
    assert rates[("X25519MLKEM768", "decaps")] == pytest.approx(6686.0)
    assert rates[("ML-DSA-65", "sign")] == pytest.approx(705.660377)


def test_parser_tolerates_noise_and_zero_time_and_needs_the_dtp_line() -> None:
    text = "\n".join(
        [
            "Doing ML-KEM-768 keygen ops for 1s: 100 ML-KEM-768 KEM keygen ops in 0.5s",  # human-readable
            "+R15:999:ML-KEM-768:0.50",  # no +DTP before it: unlabelled, ignored
            "+DT:aes-128-gcm:3:16",  # a cipher window resets the label
            "+R:100:aes-128-gcm:3.00",
            "+DTP:ML-DSA-65:verify:1",
            "+R20:10:ML-DSA-65:0.00",  # zero time: no rate rather than a division by zero
            "+DTP:ML-DSA-65:keygen:1",
            "+R18:garbage:ML-DSA-65:x",  # malformed: skipped
            "+DTP:448::ecdh:1",
            "+R9:50:448:0.25",
            "",
        ]
    )
    assert parse_speed_mr(text) == {("X448", "derive"): 200.0}


def test_ratios_against_speed_and_between_backends() -> None:
    row = Row("ML-DSA-65", "sign", {"openssl": 600.0, "liboqs": 1800.0}, 300.0)
    assert row.ratio("openssl") == pytest.approx(2.0)
    assert row.ratio("liboqs") == pytest.approx(6.0)
    assert row.backend_ratio() == pytest.approx(3.0)  # liboqs / openssl
    assert Row("X448", "derive", {"openssl": 600.0}, None).ratio("openssl") is None
    assert Row("X25519", "derive", {"openssl": 600.0}, 0.0).ratio("openssl") is None
    assert Row("X25519", "derive", {"openssl": 600.0}, 10.0).backend_ratio() is None  # liboqs did not run


def test_measure_counts_calls_and_reports_a_rate() -> None:
    calls = 0

    def operation() -> None:
        nonlocal calls
        calls += 1
        sum(range(200))  # some CPU, so the process clock advances

    rate = measure(operation, 0.02)
    assert calls > 3  # three warm-up calls, then at least one batch
    assert rate > 0


@pytest.mark.liboqs
def test_bench_measures_every_operation_on_both_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    """One worker process per backend (SPIRE_PQC_BACKEND), every operation measured on each."""
    monkeypatch.setenv("OQS_INSTALL_PATH", str(require_liboqs()))
    result = run_crypto_bench(0.02, False, rounds=1)
    assert [(row.algorithm, row.operation) for row in result.rows] == [(a, o) for a, o, _ in CASES]
    assert [(row.algorithm, row.operation) for row in result.rows][:6] == [
        ("ML-KEM-768", "keygen"), ("ML-KEM-768", "encaps"), ("ML-KEM-768", "decaps"),
        ("ML-DSA-65", "keygen"), ("ML-DSA-65", "sign"), ("ML-DSA-65", "verify"),
    ]  # fmt: skip
    assert (result.rows[-1].algorithm, result.rows[-1].operation) == ("ML-KEM-768", "keygen-floor")
    assert all(set(row.ops) == {"openssl", "liboqs"} for row in result.rows)
    assert all(rate > 0 for row in result.rows for rate in row.ops.values())
    assert all(row.openssl_ops is None and row.backend_ratio() is not None for row in result.rows)
    assert result.backends["openssl"].startswith("openssl ")
    assert result.backends["liboqs"].startswith("liboqs 0.16.0 ")


def test_an_unusable_backend_is_reported_not_measured() -> None:
    worker = _Worker("bogus")
    try:
        worker.start()
    finally:
        worker.stop()
    assert worker.unavailable is not None and "expected one of auto, openssl, liboqs" in worker.unavailable
    assert worker.rates == {}


def test_bench_rejects_nonsense_settings() -> None:
    with pytest.raises(ValueError, match="seconds_per_op"):
        run_crypto_bench(0.0, False)
    with pytest.raises(ValueError, match="rounds"):
        run_crypto_bench(1.0, False, rounds=0)
    with pytest.raises(ValueError, match="backends"):
        run_crypto_bench(1.0, False, backends=("openssl", "bogus"))
    with pytest.raises(ValueError, match="backends"):
        run_crypto_bench(1.0, False, backends=())


def _info(**backends: str) -> BenchInfo:
    return BenchInfo(
        backends=backends,
        python="CPython 3.11.7",
        machine="x86_64, 2 CPUs",
        openssl_cli="OpenSSL 3.5.9 29 Sep 2026 (/cache/bin/openssl35)",
    )


def test_table_shows_both_backends_speed_and_ratios() -> None:
    info = _info(openssl="openssl 4.0.3 (cryptography 50.0.2, OpenSSL 4.0.3)", liboqs="liboqs 0.16.0 (...)")
    rows = [
        Row("ML-DSA-65", "sign", {"openssl": 1000.0, "liboqs": 7000.0}, 800.0),
        Row("X448", "derive", {"openssl": 7028.0, "liboqs": 9000.0}, None),
    ]
    lines = format_table(rows, info, rounds=3, seconds_per_op=1.0).splitlines()
    assert "median of 3 round(s)" in lines[0]
    assert "  backend openssl: openssl 4.0.3 (cryptography 50.0.2, OpenSSL 4.0.3)" in lines
    assert "  backend liboqs: liboqs 0.16.0 (...)" in lines
    assert any("OpenSSL 3.5.9" in line for line in lines)
    header = next(line for line in lines if line.startswith("algorithm"))
    assert header.split() == [
        "algorithm", "operation", "openssl", "liboqs", "speed", "openssl/speed", "liboqs/speed", "liboqs/openssl"
    ]  # fmt: skip
    dsa = next(line for line in lines if line.startswith("ML-DSA-65"))
    assert dsa.split() == ["ML-DSA-65", "sign", "1,000", "7,000", "800", "1.25", "8.75", "7.00"]
    x448 = next(line for line in lines if line.startswith("X448"))  # no `openssl speed` figure
    assert x448.split() == ["X448", "derive", "7,028", "9,000", "-", "-", "-", "1.28"]


def test_table_with_one_backend_unavailable() -> None:
    info = _info(openssl="openssl 4.0.3 (...)", liboqs="unavailable: liboqs backend requested but ...")
    rows = [Row("ML-KEM-768", "decaps", {"openssl": 22932.4}, 11706.0)]
    lines = format_table(rows, info, rounds=1, seconds_per_op=1.0).splitlines()
    assert "  backend liboqs: unavailable: liboqs backend requested but ..." in lines
    header = next(line for line in lines if line.startswith("algorithm"))
    assert header.split() == ["algorithm", "operation", "openssl", "speed", "openssl/speed"]
    kem = next(line for line in lines if line.startswith("ML-KEM-768"))
    assert kem.split() == ["ML-KEM-768", "decaps", "22,932", "11,706", "1.96"]
