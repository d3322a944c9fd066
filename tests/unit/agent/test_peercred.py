"""SO_PEERCRED and the /proc stamp that guards against PID reuse."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest

from spire_pqc.agent.model import Caller
from spire_pqc.agent.peercred import (
    LinuxProcReader,
    PeerCredServer,
    PeerTracker,
    ProcessStamp,
    peer_credentials,
)
from spire_pqc.errors import AuthorizationError


def _fake_proc(root: Path, pid: int, comm: str, starttime: int) -> None:
    (root / str(pid)).mkdir(parents=True, exist_ok=True)
    rest = ["S", "1", "1", "1", "0", "-1", "4194560"] + ["0"] * 12 + [str(starttime), "100", "200"]
    (root / str(pid) / "stat").write_text(f"{pid} ({comm}) " + " ".join(rest) + "\n")


def test_starttime_is_field_22_even_with_parentheses_in_comm(tmp_path: Path) -> None:
    _fake_proc(tmp_path, 42, "evil) S 1 2 (name", 987654)
    stamp = LinuxProcReader(tmp_path).stamp(42)
    assert stamp.starttime == 987654
    assert (stamp.uid, stamp.gid) == (os.getuid(), os.getgid())


def test_real_proc_of_this_process() -> None:
    stamp = LinuxProcReader().stamp(os.getpid())
    fields = Path(f"/proc/{os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()
    assert stamp.starttime == int(fields[19])


def test_peer_credentials_of_a_socketpair() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        assert peer_credentials(a) == Caller(os.getpid(), os.getuid(), os.getgid())


class _Transport(asyncio.BaseTransport):
    def __init__(self, sock: socket.socket) -> None:
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
    ("later", "message"),
    [
        (ProcessStamp(2, 0, 0), "PID reused"),
        (ProcessStamp(1, 5, 0), "PID reused"),
        (ProcessStamp(1, 0, 5), "PID reused"),
        (FileNotFoundError(2, "No such file"), "is gone"),
    ],
)
def test_tracker_refuses_a_changed_process(later: ProcessStamp | OSError, message: str) -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        transport = _Transport(a)
        tracker = PeerTracker(_Stamps(ProcessStamp(1, 0, 0), ProcessStamp(1, 0, 0), later))
        tracker.on_connect(transport)
        assert tracker.caller(transport).pid == os.getpid()  # unchanged: accepted
        with pytest.raises(AuthorizationError, match=message):
            tracker.caller(transport)
        tracker.on_disconnect(transport)
        assert len(tracker) == 0
        with pytest.raises(AuthorizationError, match="no recorded peer"):
            tracker.caller(transport)


def test_process_gone_at_connect_time() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        transport = _Transport(a)
        tracker = PeerTracker(_Stamps(FileNotFoundError(2, "gone")))
        tracker.on_connect(transport)
        with pytest.raises(AuthorizationError, match="cannot be inspected"):
            tracker.caller(transport)


def test_grpclib_hook_still_exists() -> None:
    # PeerCredServer relies on grpclib building one protocol per connection in _protocol_factory.
    import grpclib.server

    assert callable(grpclib.server.Server._protocol_factory)
    assert PeerCredServer._protocol_factory is not grpclib.server.Server._protocol_factory
