"""`spire-pqc bench rotation`: rotations really reach a workload with new PQC credentials, each arena
setting runs in its own child process, and the report carries the RSS readings (tracemalloc off) and
tracemalloc's top growth over the traced rotations after them (the 10,000-rotation soak is `make bench`)."""

from __future__ import annotations

import pytest

from spire_pqc.bench import rotation as bench_rotation


def test_rotation_soak_counts_delivered_rotations_and_reports_memory() -> None:
    soaks = bench_rotation.run(
        rotations=30, identities=3, ttl_s=2.0, seconds=1.0, warmup_seconds=0.3, traced=12, arenas=(0, 1)
    )
    assert [s.arenas for s in soaks] == [0, 1]
    for soak in soaks:
        assert soak.rotations >= 30
        assert 0 <= soak.warmup_rotations <= soak.rotations
        assert soak.rss_warm_kib > 0 and soak.rss_end_kib > 0
        assert soak.traced_rotations >= 12 and soak.tracemalloc_kib > 0
        assert soak.top_growth and all("size=" in line for line in soak.top_growth)
        assert soak.rss_trend[0][0] == 0 and soak.rss_trend[-1][0] == soak.rotations
    text = bench_rotation.format_report(soaks)
    assert "tracemalloc top allocation sites by growth" in text
    assert "malloc arenas: glibc default" in text and "malloc arenas 1" in text
    assert f"{soaks[0].rotations} rotations of 3 identities" in text


def test_arena_counts_are_checked() -> None:
    with pytest.raises(ValueError, match="arenas"):
        bench_rotation.run(rotations=1, arenas=(-1,))
