"""The one interface every identity source implements."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from spire_pqc.agent.caclient import CAClient
from spire_pqc.agent.model import Caller, X509State
from spire_pqc.spiffeid import SpiffeId


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

    def local_ca_client(self) -> CAClient | None:
        """An in-process PQC CA that comes with the source (the dev trust domain), else None: the
        agent then uses the CA endpoint of its configuration."""
        ...

    def watch_service(self, spiffe_id: SpiffeId, selectors: Sequence[str]) -> AsyncIterator[X509State]:
        """Like :meth:`watch`, for the agent itself acting as ``spiffe_id`` (its tunnels): the SVID of
        that ID among those the source gives ``selectors`` ('type:value'; the dev source matches its
        entries by ID). :class:`~spire_pqc.errors.ConfigError` if the source cannot serve tunnels."""
        ...
