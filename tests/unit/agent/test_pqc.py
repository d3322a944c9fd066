"""Backoff with jitter, and the provisioner's fallback to previous still-valid credentials."""

from __future__ import annotations

import random

from spire_pqc._internal.backoff import backoff_delays


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    delays = backoff_delays(1.0, 8.0, random.Random(7))
    values = [delays() for _ in range(8)]
    bounds = [1, 2, 4, 8, 8, 8, 8, 8]
    for value, bound in zip(values, bounds, strict=True):
        assert bound / 2 <= value <= bound
    assert len(set(values)) == len(values)  # jittered, not synchronized
