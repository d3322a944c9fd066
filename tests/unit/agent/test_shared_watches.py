"""One upstream subscription per calling process (spire_pqc.agent.sources.shared)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from spire_pqc.agent.sources.shared import SharedWatches
from spire_pqc.errors import AuthorizationError


class Upstream:
    """A fake upstream: each open is recorded; states and failures are pushed by the test."""

    def __init__(self) -> None:
        self.opened: list[str] = []
        self.closed: list[str] = []
        self.queues: dict[str, asyncio.Queue[int | Exception]] = {}

    async def open(self, key: str) -> AsyncIterator[int]:
        self.opened.append(key)
        queue = self.queues.setdefault(key, asyncio.Queue())
        try:
            while True:
                item = await queue.get()
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            self.closed.append(key)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


@pytest.mark.asyncio
async def test_requests_of_one_process_share_one_upstream_and_all_see_each_state() -> None:
    upstream = Upstream()
    shared: SharedWatches[str, int] = SharedWatches(upstream.open)
    first = shared.watch("p1")
    upstream.queues.setdefault("p1", asyncio.Queue()).put_nowait(1)
    assert await anext(first) == 1
    second = shared.watch("p1")
    assert await asyncio.wait_for(anext(second), 1) == 1  # the latest state at once
    assert upstream.opened == ["p1"]
    upstream.queues["p1"].put_nowait(2)
    assert await anext(first) == 2
    assert await anext(second) == 2
    other = shared.watch("p2")
    upstream.queues.setdefault("p2", asyncio.Queue()).put_nowait(7)
    assert await anext(other) == 7
    assert upstream.opened == ["p1", "p2"]  # another process: its own subscription
    for watch in (first, second, other):
        await watch.aclose()
    await settle()
    assert sorted(upstream.closed) == ["p1", "p2"]  # nothing outlives the last request
    assert len(shared) == 0


@pytest.mark.asyncio
async def test_an_upstream_failure_ends_every_request_and_the_next_one_subscribes_again() -> None:
    upstream = Upstream()
    shared: SharedWatches[str, int] = SharedWatches(upstream.open)
    queue = upstream.queues.setdefault("p", asyncio.Queue())
    queue.put_nowait(1)
    a, b = shared.watch("p"), shared.watch("p")
    assert await anext(a) == 1
    assert await anext(b) == 1
    queue.put_nowait(AuthorizationError("no identity issued"))
    for watch in (a, b):
        with pytest.raises(AuthorizationError, match="no identity issued"):
            await anext(watch)
    await settle()
    assert len(shared) == 0
    queue.put_nowait(3)
    again = shared.watch("p")
    assert await anext(again) == 3
    assert upstream.opened == ["p", "p"]
    await again.aclose()


@pytest.mark.asyncio
async def test_a_request_that_ends_before_the_first_state_closes_the_upstream() -> None:
    upstream = Upstream()
    shared: SharedWatches[str, int] = SharedWatches(upstream.open)
    watch = shared.watch("p")

    async def first() -> int:
        return await anext(watch)

    task = asyncio.create_task(first())
    await settle()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await watch.aclose()
    await settle()
    assert upstream.closed == ["p"]
    assert len(shared) == 0
