"""One upstream subscription per calling process, shared by all of that process's open requests.

Each Workload API request of a caller made the SPIRE source open its own Delegated Identity
subscription (SPIRE attests the PID, signs nothing new, answers with the same SVIDs), so a process
with 500 streams held 500 upstream streams, a rotation arrived 500 times, and every one-shot fetch
paid a round trip to spire-agent. :class:`SharedWatches` keeps one upstream watch per process while
at least one request of that process is open: a new request of the same process gets the latest
full state at once, and each upstream state is parsed once and broadcast.

The key is the process, not the PID alone: (pid, start time, uid, gid). A PID recycled onto another
process, or a process that changed its uid or gid, is another key, hence its own, freshly attested
subscription. An upstream failure ends every request sharing it with that same error, and the next
request starts a new subscription. Nothing outlives the last request of a process.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Hashable
from typing import Generic, TypeVar

from spire_pqc.errors import UnavailableError

K = TypeVar("K", bound=Hashable)
S = TypeVar("S")


class _Upstream(Generic[S]):
    def __init__(self) -> None:
        self.value: S | None = None
        self.version = 0
        self.error: BaseException | None = None
        self.changed = asyncio.Event()
        self.watchers = 0
        self.task: asyncio.Task[None] | None = None

    def publish(self, value: S) -> None:
        self.value = value
        self.version += 1
        event, self.changed = self.changed, asyncio.Event()
        event.set()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.changed.set()


class SharedWatches(Generic[K, S]):
    """``watch(key)`` yields full states from one shared ``open_upstream(key)`` per key."""

    def __init__(self, open_upstream: Callable[[K], AsyncIterator[S]]) -> None:
        self._open = open_upstream
        self._upstreams: dict[K, _Upstream[S]] = {}

    def __len__(self) -> int:
        return len(self._upstreams)

    async def _follow(self, key: K, upstream: _Upstream[S]) -> None:
        states = self._open(key)
        try:
            async for state in states:
                upstream.publish(state)
            upstream.fail(UnavailableError("identity source ended the stream"))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - handed to every watcher, which raises it
            upstream.fail(exc)
        finally:
            if self._upstreams.get(key) is upstream and upstream.error is not None:
                del self._upstreams[key]  # the next request subscribes afresh
            close = getattr(states, "aclose", None)
            if close is not None:
                with contextlib.suppress(RuntimeError, Exception):
                    await close()

    async def watch(self, key: K) -> AsyncGenerator[S, None]:
        upstream = self._upstreams.get(key)
        if upstream is None:
            upstream = _Upstream()
            self._upstreams[key] = upstream
            upstream.task = asyncio.create_task(self._follow(key, upstream), name="spire-pqc-shared-watch")
        upstream.watchers += 1
        try:
            seen = 0
            while True:
                while upstream.version == seen and upstream.error is None:
                    await upstream.changed.wait()
                if upstream.version != seen:
                    seen = upstream.version
                    assert upstream.value is not None
                    yield upstream.value
                elif upstream.error is not None:
                    raise upstream.error
        finally:
            upstream.watchers -= 1
            if upstream.watchers == 0:
                self._close(key, upstream)

    def _close(self, key: K, upstream: _Upstream[S]) -> None:
        if upstream.watchers:
            return
        if self._upstreams.get(key) is upstream:
            del self._upstreams[key]
        if upstream.task is not None and not upstream.task.done():
            upstream.task.cancel()

    async def close(self) -> None:
        """End every upstream subscription (the agent is stopping)."""
        tasks = [u.task for u in self._upstreams.values() if u.task is not None]
        for key, upstream in list(self._upstreams.items()):
            upstream.watchers = 0
            self._close(key, upstream)
        await asyncio.gather(*tasks, return_exceptions=True)
