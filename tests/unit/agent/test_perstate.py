"""Work shared by the streams serving one state (perstate.py): answers and the post-answer caller check.

The cache must be invalidated by every state change (a new state is a new object with no entry),
drop its entries with their state, and never give one state's answer — one caller's identities —
for another state, even one reusing a collected object's ``id()``.
"""

from __future__ import annotations

import asyncio
import gc
import os
from typing import Any

import pytest
from grpclib.client import Channel
from grpclib.const import Cardinality
from spiffe._proto import workload_pb2 as wl

from spire_pqc._internal import wire
from spire_pqc.agent.model import Caller
from spire_pqc.agent.peercred import CallerChanged, PeerRecord, PeerTracker, ProcessStamp
from spire_pqc.agent.perstate import PerState
from tests.unit.agent._support import HEADER, ME, running_agent


class _State:
    """Stands for an X509State: an object whose identity is the key."""

    def __init__(self, content: str) -> None:
        self.content = content


def test_computed_once_per_state_object() -> None:
    cache: PerState[str] = PerState()
    calls: list[str] = []

    def compute(state: _State) -> str:
        calls.append(state.content)
        return f"answer for {state.content}"

    first = _State("alice")
    assert cache.get(first, lambda: compute(first)) == "answer for alice"
    assert cache.get(first, lambda: compute(first)) == "answer for alice"
    assert calls == ["alice"]
    # A new state (any change), even with equal content, is computed afresh, never served from another's.
    second, other = _State("alice"), _State("bob")
    assert cache.get(other, lambda: compute(other)) == "answer for bob"
    assert cache.get(second, lambda: compute(second)) == "answer for alice"
    assert calls == ["alice", "bob", "alice"]
    assert len(cache) == 3


def test_entries_go_with_their_state_and_a_reused_id_finds_nothing() -> None:
    cache: PerState[str] = PerState()
    state = _State("alice")
    cache.get(state, lambda: "alice's SVID")
    old_id = id(state)
    del state
    gc.collect()
    assert len(cache) == 0
    # Allocate until CPython hands out the collected object's address again (usually at once).
    for _ in range(10_000):
        newcomer = _State("mallory")
        if id(newcomer) == old_id:
            break
    assert cache.get(newcomer, lambda: "mallory's SVID") == "mallory's SVID"


def test_a_failed_computation_is_not_kept() -> None:
    cache: PerState[str] = PerState()
    state = _State("x")

    def fail() -> str:
        raise ValueError("no")

    with pytest.raises(ValueError):
        cache.get(state, fail)
    assert cache.get(state, lambda: "ok") == "ok"


class _CountingProc:
    def __init__(self, stamp: ProcessStamp) -> None:
        self.now = stamp
        self.reads = 0

    def stamp(self, pid: int) -> ProcessStamp:
        self.reads += 1
        return self.now


class _Transport:
    """The tracker keys records by transport object."""


def _tracked(tracker: PeerTracker, pid: int, stamp: ProcessStamp) -> Any:
    transport = _Transport()
    tracker._records[id(transport)] = PeerRecord(Caller(pid, stamp.uid, stamp.gid, stamp.starttime), stamp)
    return transport


def test_caller_check_after_an_answer_reads_proc_once_per_state_and_pid() -> None:
    stamp = ProcessStamp(100, 1000, 1000)
    proc = _CountingProc(stamp)
    tracker = PeerTracker(proc)
    streams = [_tracked(tracker, 7, stamp) for _ in range(5)]
    state = _State("svid")
    for transport in streams:
        assert tracker.caller(transport, answered=state).pid == 7
    assert proc.reads == 1
    rotated = _State("svid after rotation")  # a new state: read again, after it was produced
    for transport in streams:
        tracker.caller(transport, answered=rotated)
    assert proc.reads == 2
    tracker.caller(streams[0])  # without an answer (before asking the source): always read
    assert proc.reads == 3


def test_the_shared_read_still_refuses_a_connection_of_a_previous_process_with_that_pid() -> None:
    old = ProcessStamp(100, 1000, 1000)
    new = ProcessStamp(200, 0, 0)  # the PID now names a root process
    proc = _CountingProc(new)
    tracker = PeerTracker(proc)
    current = _tracked(tracker, 7, new)
    stale = _tracked(tracker, 7, old)  # connected by the process that had PID 7 before
    state = _State("root's svid")
    assert tracker.caller(current, answered=state).uid == 0
    with pytest.raises(CallerChanged, match="PID reused"):
        tracker.caller(stale, answered=state)
    assert proc.reads == 1


def test_an_exited_caller_is_not_remembered() -> None:
    class Gone:
        reads = 0

        def stamp(self, pid: int) -> ProcessStamp:
            self.reads += 1
            raise FileNotFoundError(pid)

    proc = Gone()
    tracker = PeerTracker(proc)
    stamp = ProcessStamp(1, 0, 0)
    state = _State("svid")
    for transport in (_tracked(tracker, 9, stamp), _tracked(tracker, 9, stamp)):
        with pytest.raises(Exception, match="is gone"):
            tracker.caller(transport, answered=state)
    assert proc.reads == 2


def test_attested_caller_carries_its_start_time() -> None:
    import socket

    a, b = socket.socketpair(socket.AF_UNIX)
    try:
        record = PeerTracker().attest(a)
    finally:
        a.close()
        b.close()
    assert record.caller is not None and record.stamp is not None
    assert record.caller.starttime == record.stamp.starttime
    assert record.caller == Caller(os.getpid(), os.getuid(), os.getgid())  # not part of equality


@pytest.mark.asyncio
async def test_streams_get_the_same_bytes_and_every_rotation_a_new_answer() -> None:
    async with running_agent() as agent:
        channels = [Channel(path=str(agent.socket_path)) for _ in range(3)]
        try:
            streams = [
                await ch.request(
                    wire.FETCH_X509_SVID, Cardinality.UNARY_STREAM, wl.X509SVIDRequest, wl.X509SVIDResponse,
                    metadata=HEADER,
                ).__aenter__()
                for ch in channels
            ]  # fmt: skip
            for stream in streams:
                await stream.send_message(wl.X509SVIDRequest(), end=True)
            first = [await stream.recv_message() for stream in streams]
            assert all(r is not None and [s.spiffe_id for s in r.svids] == [ME] for r in first)
            assert len({r.SerializeToString(deterministic=True) for r in first if r is not None}) == 1
            seen = {first[0].svids[0].x509_svid} if first[0] is not None else set()
            for _ in range(2):  # each rotation: a new answer on every stream, never the cached old one
                await agent.source.rotate_now()  # type: ignore[attr-defined]
                replies = [await asyncio.wait_for(stream.recv_message(), 10) for stream in streams]
                certs = {r.svids[0].x509_svid for r in replies if r is not None}
                assert len(certs) == 1 and not certs & seen
                keys = {r.svids[0].x509_svid_key for r in replies if r is not None}
                assert len(keys) == 1
                seen |= certs
            for stream in streams:
                await stream.cancel()
                await stream.__aexit__(None, None, None)
        finally:
            for ch in channels:
                ch.close()


def test_encoded_answers_are_sent_as_their_bytes_and_only_as_their_own_type() -> None:
    from spire_pqc.agent.connections import Encoded, _EncodedProtoCodec

    codec = _EncodedProtoCodec()
    message = wl.X509SVIDResponse(svids=[wl.X509SVID(spiffe_id=ME)])
    data = message.SerializeToString(deterministic=True)
    assert codec.encode(Encoded(wl.X509SVIDResponse, data), wl.X509SVIDResponse) is data
    assert codec.encode(message, wl.X509SVIDResponse) == data  # plain messages as before
    with pytest.raises(TypeError):
        codec.encode(Encoded(wl.X509BundlesResponse, data), wl.X509SVIDResponse)


@pytest.mark.asyncio
async def test_dev_source_shares_a_state_only_between_callers_with_the_same_identities() -> None:
    from spire_pqc.agent.config import DevSourceConfig
    from spire_pqc.agent.sources.dev import DevIdentitySource
    from tests.unit.agent._support import TRUST_DOMAIN, dev_config, short_dir

    other = f"spiffe://{TRUST_DOMAIN}/workload/other"
    config = dev_config(short_dir(), extra_entries=[{"spiffe_id": other, "selectors": ["test:pid:2"]}])
    assert isinstance(config.source, DevSourceConfig)
    me = os.getuid()

    def attest(caller: Caller) -> frozenset[str]:  # pid 2 is the other workload, 1 and 3 are "me"
        return frozenset({"test:pid:2"} if caller.pid == 2 else {f"unix:uid:{me}"})

    source = DevIdentitySource(config.source, attestor=attest)
    await source.start()
    try:
        watches = [source.watch(Caller(pid, me, 0)) for pid in (1, 2, 3)]
        first = [await anext(w) for w in watches]
        assert [str(s.svids[0].spiffe_id) for s in first] == [ME, other, ME]
        assert first[0] is first[2] and first[1] is not first[0]
        await source.rotate_now()
        rotated = [await anext(w) for w in watches]
        assert rotated[0] is rotated[2] and rotated[0] is not first[0]  # a new state for the change
        assert [str(s.svids[0].spiffe_id) for s in rotated] == [ME, other, ME]
        assert rotated[0].svids[0].leaf_hash != first[0].svids[0].leaf_hash
        for w in watches:
            await w.aclose()  # type: ignore[attr-defined]
    finally:
        await source.close()
