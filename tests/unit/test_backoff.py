"""The one retry schedule: bounds of every delay, doubling, the cap, reset, and jitter that spreads."""

from __future__ import annotations

import random
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spire_pqc._internal.backoff import Backoff


@given(
    initial=st.floats(0.001, 100),
    factor=st.floats(1, 1000),
    attempts=st.integers(1, 40),
    seed=st.integers(0, 2**32),
)
def test_every_delay_lies_in_the_upper_half_of_its_step(
    initial: float, factor: float, attempts: int, seed: int
) -> None:
    maximum = initial * factor
    backoff = Backoff(initial, maximum, rng=random.Random(seed))
    for n in range(attempts):
        step = min(initial * 2**n, maximum)
        delay = backoff.next()
        assert step / 2 <= delay <= step
        assert initial / 2 <= delay <= maximum


def test_doubles_then_stays_at_the_cap_and_reset_starts_over() -> None:
    backoff = Backoff(1.0, 8.0, rng=random.Random(7))
    delays = [backoff.next() for _ in range(8)]
    for delay, step in zip(delays, [1, 2, 4, 8, 8, 8, 8, 8], strict=True):
        assert step / 2 <= delay <= step
    backoff.reset()
    assert 0.5 <= backoff.next() <= 1.0
    assert 1.0 <= backoff.next() <= 2.0


def test_jitter_spreads_clients_that_failed_together() -> None:
    """A thousand agents whose server restarted do not come back in lockstep."""
    first_retries = [Backoff(10.0, 60.0).next() for _ in range(1000)]
    assert min(first_retries) >= 5.0 and max(first_retries) <= 10.0
    assert len(set(first_retries)) == 1000
    assert statistics.pstdev(first_retries) > 1.0  # uniform over [5, 10]: about 1.44


@pytest.mark.parametrize(("initial", "maximum"), [(0, 1), (-1, 1), (2, 1)])
def test_refuses_a_schedule_that_cannot_work(initial: float, maximum: float) -> None:
    with pytest.raises(ValueError, match="0 < initial <= maximum"):
        Backoff(initial, maximum)
