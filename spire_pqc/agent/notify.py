"""A versioned value that many asyncio tasks watch (rotation fan-out to open streams)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Generic, TypeVar

from spire_pqc.errors import UnavailableError

T = TypeVar("T")


class Broadcast(Generic[T]):
    """Holds the latest value; :meth:`updates` yields it now and after every :meth:`publish`.

    Watchers never see intermediate values they were too slow for, only the latest (full state
    semantics of the Workload API). One ``asyncio.Event`` per version wakes every watcher at once, so a
    publish costs O(1) regardless of the number of watchers; each then sends on its own stream.
    """

    def __init__(self) -> None:
        self._value: T | None = None
        self._version = 0
        self._changed = asyncio.Event()
        self._closed = False

    @property
    def value(self) -> T | None:
        return self._value

    @property
    def version(self) -> int:
        return self._version

    @property
    def closed(self) -> bool:
        return self._closed

    def publish(self, value: T) -> None:
        self._value = value
        self._version += 1
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    def close(self) -> None:
        """Wake every watcher; they raise UnavailableError (the agent is shutting down)."""
        self._closed = True
        self._changed.set()

    async def wait_changed(self, seen_version: int) -> int:
        """Wait until the version differs from ``seen_version``; return the new version."""
        while self._version == seen_version:
            if self._closed:
                raise UnavailableError("the agent is shutting down")
            await self._changed.wait()
        if self._closed:
            raise UnavailableError("the agent is shutting down")
        return self._version

    async def updates(self) -> AsyncIterator[T]:
        """The current value (if any) immediately, then each newer one."""
        seen = 0
        while True:
            seen = await self.wait_changed(seen)
            value = self._value
            if value is not None:
                yield value
