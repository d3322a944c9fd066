"""The agent benchmark helpers run and report consistent numbers (no timing assertions)."""

from __future__ import annotations

import pytest

from spire_pqc.bench.agent import rotation_fanout, rss_with_identities


@pytest.mark.asyncio
async def test_fanout_and_rss_helpers() -> None:
    fanout = await rotation_fanout(5)
    assert fanout.streams == 5
    assert 0 < fanout.median_ms <= fanout.last_ms
    rss = await rss_with_identities(3)
    assert rss.identities == 3
    assert rss.baseline_kib > 0 and rss.provisioned_kib > 0
