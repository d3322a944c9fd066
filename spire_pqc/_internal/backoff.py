"""Exponential backoff with jitter: the one helper every retry loop uses (agent, CA client, ledger)."""

from __future__ import annotations

import random
from collections.abc import Callable


def backoff_delays(initial: float, maximum: float, rng: random.Random) -> Callable[[], float]:
    """Exponential backoff with "equal jitter": each delay is uniform in [d/2, d]; d doubles up to maximum."""
    state = {"next": initial}

    def delay() -> float:
        d = state["next"]
        state["next"] = min(d * 2, maximum)
        return rng.uniform(d / 2, d)

    return delay
