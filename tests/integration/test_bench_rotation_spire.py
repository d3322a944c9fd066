"""`spire-pqc bench rotation --source spire`: real spire-server (with the plugin) and spire-agent rotate
short-lived SVIDs, and the spire-pqc agent process delivers each with new PQC credentials while its RSS
is sampled."""

from __future__ import annotations

import pytest

from spire_pqc.bench import rotation as bench_rotation
from spire_pqc.bench import rotation_spire

pytestmark = pytest.mark.spire


def test_spire_source_soak_counts_rotations_that_spire_drives() -> None:
    soak = rotation_spire.run(rotations=6, identities=2, ttl_s=10, seconds=120.0, warmup_seconds=2.0)
    # Two SVIDs renewed by SPIRE's agent at half their 10 s life (it syncs every 5 s): ~15 s for six.
    assert soak.rotations >= 6 and soak.elapsed_s < 120
    assert soak.rss_warm_kib > 0 and soak.rss_end_kib > 0
    assert soak.rss_trend[-1] == (soak.rotations, soak.rss_end_kib)
    text = bench_rotation.format_report([soak])
    assert "spire source" in text and "tracemalloc: not run" in text
