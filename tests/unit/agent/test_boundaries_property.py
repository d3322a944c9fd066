"""Property tests for the agent's own parsers of outside input (issue 9: typed errors, time-bounded).

* A request body of arbitrary bytes (any 5-byte prefix, any length claim, any tail) gets OK,
  INVALID_ARGUMENT or RESOURCE_EXHAUSTED from a running agent — never UNKNOWN/INTERNAL — within 10 s.
* Arbitrary values for the ``[limits]`` keys and an outbound tunnel's access keys and listener give a
  configuration or a ConfigError, never another exception.
* ``/proc/<pid>/stat`` with any process name (the caller chooses it) yields the right start time.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError, StreamTerminatedError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from spiffe._proto import workload_pb2 as wl

from spire_pqc._internal import wire
from spire_pqc.agent.config import parse
from spire_pqc.agent.peercred import LinuxProcReader
from spire_pqc.agent.server import Agent
from spire_pqc.errors import ConfigError
from tests.unit.agent._support import HEADER, ME, dev_config, short_dir


@contextmanager
def agent_in_thread() -> Iterator[Agent]:
    """A running agent on its own event loop (hypothesis drives the clients from this thread)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    agent = Agent(dev_config(short_dir()))
    asyncio.run_coroutine_threadsafe(agent.start(), loop).result(30)
    try:
        yield agent
    finally:
        asyncio.run_coroutine_threadsafe(agent.close(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


async def _send_raw(path: Path, body: bytes) -> str:
    channel = Channel(path=str(path))
    try:
        async with channel.request(
            wire.FETCH_X509_SVID, Cardinality.UNARY_STREAM, wl.X509SVIDRequest,
            wl.X509SVIDResponse, metadata=HEADER, timeout=10,
        ) as stream:  # fmt: skip
            await stream.send_request()
            await stream._stream.send_data(body, end_stream=True)
            stream._end_done = True
            try:
                reply = await stream.recv_message()
            except StreamTerminatedError:  # answered, then reset to stop an unread body (grpclib raises)
                code = dict(stream._stream.headers or ()).get("grpc-status")
                return Status(int(code)).name if code is not None else "reset without a status"
            assert reply is not None and [s.spiffe_id for s in reply.svids] == [ME]
            await stream.cancel()
            return "OK"
    except GRPCError as exc:
        return exc.status.name
    finally:
        channel.close()


_PREFIXES = st.one_of(
    st.binary(max_size=8),  # anything, including no complete prefix
    st.builds(
        lambda flag, length, tail: bytes([flag]) + length.to_bytes(4, "big") + tail,
        st.integers(0, 255),
        st.one_of(st.integers(0, 64), st.integers(0, 2**32 - 1)),
        st.binary(max_size=64),
    ),
)
ALLOWED = {"OK", "INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"}


@pytest.fixture(scope="module")
def running() -> Iterator[Agent]:
    with agent_in_thread() as agent:
        yield agent


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=_PREFIXES)
def test_any_request_body_gets_a_precise_status(running: Agent, body: bytes) -> None:
    status = asyncio.run(asyncio.wait_for(_send_raw(running.socket_path, body), 10))
    assert status in ALLOWED, (body, status)


_VALUES: st.SearchStrategy[Any] = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.text(max_size=12), st.just("*")),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None)
@given(
    limits=st.dictionaries(
        st.sampled_from(["max_connections_per_uid", "max_streams_per_uid", "idle_timeout", "other"]), _VALUES
    ),
    access=st.dictionaries(st.sampled_from(["allowed_uids", "allowed_gids", "allow_non_loopback"]), _VALUES),
    listen=st.one_of(_VALUES, st.text(max_size=20).map(lambda t: "unix:" + t)),
)
def test_limits_and_tunnel_access_give_a_config_or_a_config_error(
    limits: dict[str, Any], access: dict[str, Any], listen: Any
) -> None:
    tunnel = {
        "name": "o",
        "listen": listen,
        "remote": "127.0.0.1:2",
        "peer_ids": [ME],
        "spiffe_id": ME,
        **access,
    }
    data = {
        "agent": {"socket_path": "/run/a.sock"},
        "source": {"kind": "dev", "dev": {"trust_domain": "example.org",
                                          "entries": [{"spiffe_id": ME, "selectors": ["unix:uid:1"]}]}},
        "limits": limits,
        "tunnel": {"outbound": [tunnel]},
    }  # fmt: skip
    try:
        config = parse(data)
    except ConfigError:
        return
    assert config.limits.max_connections_per_uid >= 1 and config.tunnels[0].local_users is not None


@settings(max_examples=200, deadline=None)
@given(comm=st.text(st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), max_size=16),
       starttime=st.integers(0, 2**63))  # fmt: skip
def test_any_process_name_leaves_the_start_time_intact(
    tmp_path_factory: Any, comm: str, starttime: int
) -> None:
    root = tmp_path_factory.mktemp("proc")
    (root / "7").mkdir()
    rest = ["S", *["1"] * 18, str(starttime), "0", "0"]
    (root / "7" / "stat").write_text(f"7 ({comm}) " + " ".join(rest) + "\n", encoding="utf-8")
    (root / "7" / "status").write_text("Uid:\t1\t2\t3\t4\nGid:\t5\t6\t7\t8\n")
    stamp = LinuxProcReader(root).stamp(7)
    assert (stamp.starttime, stamp.uid, stamp.gid) == (starttime, 2, 6)
    assert os.path.isdir(root)
