"""SO_PEERCRED and the /proc stamp that guards against PID reuse (fast checks with fake /proc trees).

The attacks with real processes of other uids and a forced PID are in tests/security/test_pid_reuse.py.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spire_pqc.agent.connections import PeerCredServer
from spire_pqc.agent.model import Caller
from spire_pqc.agent.peercred import (
    CallerChanged,
    LinuxProcReader,
    PeerTracker,
    ProcessStamp,
    peer_credentials,
)
from spire_pqc.errors import AuthorizationError


def _fake_proc(root: Path, pid: int, comm: str, starttime: int, uid: int = 1000, gid: int = 1000) -> None:
    (root / str(pid)).mkdir(parents=True, exist_ok=True)
    rest = ["S", "1", "1", "1", "0", "-1", "4194560"] + ["0"] * 12 + [str(starttime), "100", "200"]
    (root / str(pid) / "stat").write_text(f"{pid} ({comm}) " + " ".join(rest) + "\n")
    (root / str(pid) / "status").write_text(
        f"Name:\t{comm}\nUid:\t{uid + 1}\t{uid}\t{uid}\t{uid}\nGid:\t{gid + 1}\t{gid}\t{gid}\t{gid}\n"
    )


def test_starttime_is_field_22_even_with_parentheses_in_comm(tmp_path: Path) -> None:
    _fake_proc(tmp_path, 42, "evil) S 1 2 (name", 987654, uid=4294967294, gid=7)
    stamp = LinuxProcReader(tmp_path).stamp(42)
    # starttime from stat; the owner is the *effective* uid/gid from status (its second column).
    assert stamp == ProcessStamp(987654, 4294967294, 7)


def test_real_proc_of_this_process() -> None:
    stamp = LinuxProcReader().stamp(os.getpid())
    fields = Path(f"/proc/{os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()
    assert stamp == ProcessStamp(int(fields[19]), os.geteuid(), os.getegid())


@pytest.mark.parametrize("pid", [0, -1])
def test_no_stamp_for_an_invalid_pid(pid: int) -> None:
    with pytest.raises(ValueError, match="invalid PID"):
        LinuxProcReader().stamp(pid)


def test_peer_credentials_of_a_socketpair() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        assert peer_credentials(a) == Caller(os.getpid(), os.getuid(), os.getgid())


class _Sock:
    """A socket whose SO_PEERCRED says what the test wants (the kernel's ucred layout)."""

    def __init__(self, pid: int, uid: int, gid: int) -> None:
        self.raw = struct.pack("iII", pid, uid, gid)

    def getsockopt(self, level: int, option: int, size: int) -> bytes:
        if option == socket.SO_PEERCRED:
            return self.raw
        raise OSError(92, "Protocol not available")  # no SO_PEERPIDFD on this fake


@given(st.integers(0, 2**32 - 2), st.integers(0, 2**32 - 2))
def test_uid_and_gid_are_unsigned(uid: int, gid: int) -> None:
    assert peer_credentials(_Sock(7, uid, gid)) == Caller(7, uid, gid)  # type: ignore[arg-type]


class _Transport(asyncio.BaseTransport):
    def __init__(self, sock: object) -> None:
        super().__init__()
        self._sock = sock

    def get_extra_info(self, name: str, default: object = None) -> object:
        return self._sock if name == "socket" else default


class _Stamps:
    def __init__(self, *stamps: ProcessStamp | OSError) -> None:
        self.stamps = list(stamps)

    def stamp(self, pid: int) -> ProcessStamp:
        item = self.stamps.pop(0) if len(self.stamps) > 1 else self.stamps[0]
        if isinstance(item, OSError):
            raise item
        return item


@pytest.mark.parametrize(
    ("later", "error", "message"),
    [
        (ProcessStamp(2, 0, 0), CallerChanged, "PID reused"),
        (ProcessStamp(1, 5, 0), CallerChanged, "PID reused"),
        (ProcessStamp(1, 0, 5), CallerChanged, "PID reused"),
        (FileNotFoundError(2, "No such file"), AuthorizationError, "is gone"),
    ],
)
def test_tracker_refuses_a_changed_process(
    later: ProcessStamp | OSError, error: type[Exception], message: str
) -> None:
    transport = _Transport(_Sock(1234, 0, 0))
    tracker = PeerTracker(_Stamps(ProcessStamp(1, 0, 0), ProcessStamp(1, 0, 0), later))
    tracker.on_connect(transport)
    assert tracker.caller(transport) == Caller(1234, 0, 0)  # unchanged: accepted
    with pytest.raises(error, match=message):
        tracker.caller(transport)
    tracker.on_disconnect(transport)
    assert len(tracker) == 0
    with pytest.raises(AuthorizationError, match="no recorded peer"):
        tracker.caller(transport)


def test_a_pid_owned_by_another_uid_at_connect_is_a_security_event() -> None:
    # SO_PEERCRED says uid 40001 connected, but /proc/<pid> now belongs to root: the PID was recycled
    # before the connection was accepted. The stamp must not be recorded as the caller's.
    transport = _Transport(_Sock(1234, 40001, 40001))
    tracker = PeerTracker(_Stamps(ProcessStamp(1, 0, 0)))
    record = tracker.on_connect(transport)
    assert record.security_event and record.uid == 40001
    with pytest.raises(CallerChanged, match="belongs to uid 0 gid 0, but uid 40001 gid 40001 connected"):
        tracker.caller(transport)


def test_process_gone_at_connect_time() -> None:
    transport = _Transport(_Sock(1234, 0, 0))
    tracker = PeerTracker(_Stamps(FileNotFoundError(2, "gone")))
    tracker.on_connect(transport)
    with pytest.raises(AuthorizationError, match="cannot be inspected"):
        tracker.caller(transport)


def test_no_peer_credentials() -> None:
    transport = _Transport(None)
    tracker = PeerTracker(_Stamps(ProcessStamp(1, 0, 0)))
    tracker.on_connect(transport)
    with pytest.raises(AuthorizationError, match="no socket"):
        tracker.caller(transport)


@pytest.mark.asyncio
async def test_grpclib_internals_the_server_relies_on() -> None:
    # PeerCredServer builds grpclib's per-connection protocol with Server._protocol_factory and
    # replaces asyncio's server by its own accept loop in Server._server / _server_closed_fut, which
    # grpclib's close() and wait_closed() use: a grpclib upgrade that changes them must fail here.
    import grpclib.server

    from spire_pqc.agent.config import Limits
    from spire_pqc.agent.connections import ConnectionRegistry
    from spire_pqc.agent.metrics import Metrics

    assert callable(grpclib.server.Server._protocol_factory)
    server = PeerCredServer([], ConnectionRegistry(PeerTracker(), Limits(), Metrics()))
    path = Path(tempfile.mkdtemp(dir="/tmp")) / "s.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    await server.serve(listener)
    _, writer = await asyncio.open_unix_connection(str(path))
    async with asyncio.timeout(10):
        while server.connections != 1:
            await asyncio.sleep(0.01)
    server.close()
    server.close_connections()
    await asyncio.wait_for(server.wait_closed(), 10)
    writer.close()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_unix_connection(str(path))
