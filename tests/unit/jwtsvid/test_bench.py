"""`spire-pqc bench jwt` runs end to end on a tiny size (the numbers belong to the benchmark itself)."""

from __future__ import annotations

from spire_pqc.bench import jwt as bench_jwt


def test_the_jwt_benchmark_measures_both_sides() -> None:
    report = bench_jwt.run(iterations=3, roundtrips=3)
    assert report.hybrid_bytes > report.classical_bytes > 0
    for timing in (
        report.classical_issue,
        report.hybrid_issue,
        report.classical_validate,
        report.hybrid_validate,
        report.classical_roundtrip,
        report.hybrid_roundtrip,
    ):
        assert timing is not None
        assert 0 < timing.p50_ms <= timing.p99_ms
    text = bench_jwt.format_report(report)
    assert "hybrid validate" in text and "hybrid fetch+validate" in text
