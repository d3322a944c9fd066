"""`spire-pqc bench rotation`: rotations really reach a workload with new PQC credentials, and the
report carries the RSS readings and tracemalloc's top growth (the 10,000-rotation soak is `make bench`)."""

from __future__ import annotations

from spire_pqc.bench import rotation as bench_rotation


def test_rotation_soak_counts_delivered_rotations_and_reports_memory() -> None:
    soak = bench_rotation.run(rotations=30, identities=3, ttl_s=2.0, seconds=1.0, warmup_seconds=0.3)
    assert soak.rotations >= 30
    assert 0 < soak.warmup_rotations <= soak.rotations
    assert soak.rss_warm_kib > 0 and soak.rss_end_kib > 0
    assert soak.top_growth and all("size=" in line for line in soak.top_growth)
    assert soak.rss_trend[0][0] == 0 and soak.rss_trend[-1][0] == soak.rotations
    text = bench_rotation.format_report(soak)
    assert "tracemalloc top allocation sites by growth" in text
    assert f"{soak.rotations} rotations of 3 identities" in text
