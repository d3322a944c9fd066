"""The one interface every identity source implements."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from spire_pqc.agent.model import Caller, X509State


class IdentitySource(Protocol):
    """Classical SVIDs and bundles for a caller, as a stream of full states.

    :meth:`watch` yields the caller's current state first (without waiting when it is known) and
    then a new full state after every change (rotation, bundle update). It raises
    :class:`~spire_pqc.errors.AuthorizationError` when the caller has no identity (the Workload
    API's PermissionDenied) and :class:`~spire_pqc.errors.UnavailableError` while the source is
    initialising, its upstream is unreachable, or the agent is shutting down.
    """

    name: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    @property
    def ready(self) -> bool:
        """True once the source can answer callers (readiness probe)."""
        ...

    def watch(self, caller: Caller) -> AsyncIterator[X509State]: ...
