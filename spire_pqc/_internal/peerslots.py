"""Connection slots counted per peer address, so one client cannot take every slot of a listener.

A listener asks :meth:`PeerSlots.take` from its protocol's ``connection_made`` (before any byte is
read) and calls :meth:`PeerSlots.release` once the connection's work is done.
"""

from __future__ import annotations

import asyncio
from collections import Counter

__all__ = ["PeerSlots", "peer_host"]


def peer_host(transport: asyncio.BaseTransport) -> str:
    """The peer's host as the listener saw it (``"(unknown)"`` for a socket without one)."""
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else "(unknown)"


class PeerSlots:
    """At most ``total`` connections, and at most ``per_peer`` from one host."""

    def __init__(self, *, total: int, per_peer: int) -> None:
        if total < 1 or per_peer < 1:
            raise ValueError("connection caps must be at least 1")
        self.total = total
        self.per_peer = per_peer
        self._held: Counter[str] = Counter()

    def take(self, host: str) -> bool:
        """Hold a slot for ``host``; False when either cap is reached."""
        if self._held.total() >= self.total or self._held[host] >= self.per_peer:
            return False
        self._held[host] += 1
        return True

    def release(self, host: str) -> None:
        self._held[host] -= 1
        if self._held[host] <= 0:
            del self._held[host]

    def held(self, host: str | None = None) -> int:
        return self._held.total() if host is None else self._held[host]
