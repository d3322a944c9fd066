"""Exponential backoff with jitter: the one retry schedule of spire-pqc.

Every retry loop takes its delays from :class:`Backoff`: the agent's PQC issuance and CA failover,
its own SVID and the Delegated Identity streams, tunnel identities, the SDK's hybrid source, the
ledger's reconnection and the plugin's endpoint start. "Equal jitter" (each delay uniform in the
upper half of the current step) keeps the delay predictable for operators (never below half the
step) while spreading clients that failed together, such as every agent after a server restart.
"""

from __future__ import annotations

import random


class Backoff:
    """Delays for one retry loop: ``initial`` doubling up to ``maximum`` (seconds), with jitter.

    The n-th call of :meth:`next` since the last :meth:`reset` returns a delay uniform in
    ``[d/2, d]`` where ``d = min(initial * 2**n, maximum)``. Not thread-safe: one per loop (or
    guarded by the caller's lock).
    """

    def __init__(self, initial: float, maximum: float, *, rng: random.Random | None = None) -> None:
        if not 0 < initial <= maximum:
            raise ValueError(f"backoff needs 0 < initial <= maximum, got {initial}, {maximum}")
        self.initial = initial
        self.maximum = maximum
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not a secret
        self._step = initial

    def next(self) -> float:
        """The delay to wait before the next attempt (and one step longer the time after)."""
        step = self._step
        self._step = min(step * 2, self.maximum)
        return self._rng.uniform(step / 2, step)

    def reset(self) -> None:
        """After a success: the next failure waits about ``initial`` again."""
        self._step = self.initial
