"""The agent benchmark helpers run and report consistent numbers (no timing assertions)."""

from __future__ import annotations

import pytest

from spire_pqc.bench.agent import restart, rotation_fanout, rss_with_identities


@pytest.mark.asyncio
async def test_fanout_and_rss_helpers() -> None:
    fanout = await rotation_fanout(5)
    assert fanout.streams == 5
    assert 0 < fanout.median_ms <= fanout.last_ms
    rss = await rss_with_identities(3)
    assert rss.identities == 3
    assert rss.baseline_kib > 0 and rss.provisioned_kib > 0


@pytest.mark.asyncio
async def test_restart_helper() -> None:
    kept = await restart(3)
    assert kept.identities == 3
    assert kept.fresh_ms > 0 and kept.restored_ms > 0 and kept.open_ms > 0
    assert 10_000 < kept.bytes_per_identity < 100_000  # keys and three ML-DSA-signed certificates
