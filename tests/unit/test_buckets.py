"""TokenBuckets: a burst, then the rate; keys apart; a bounded table."""

from __future__ import annotations

import pytest

from spire_pqc._internal.buckets import TokenBuckets


def test_a_burst_then_the_rate_per_key() -> None:
    now = [0.0]
    buckets = TokenBuckets(rate=2.0, burst=3, clock=lambda: now[0])
    assert [buckets.take("a") for _ in range(4)] == [True, True, True, False]
    assert buckets.take("b")  # another key has its own bucket
    now[0] += 0.5  # one token back at 2/s
    assert buckets.take("a") and not buckets.take("a")
    now[0] += 100  # never more than the burst
    assert [buckets.take("a") for _ in range(4)] == [True, True, True, False]


def test_the_table_is_bounded() -> None:
    buckets = TokenBuckets(rate=1.0, burst=1, max_keys=2, clock=lambda: 0.0)
    assert buckets.take("a") and buckets.take("b") and buckets.take("c")
    assert len(buckets._buckets) == 2
    with pytest.raises(ValueError):
        TokenBuckets(rate=0, burst=1)
