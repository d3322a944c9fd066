"""Who is calling: SO_PEERCRED at connect time, guarded against PID reuse until every answer.

grpcio cannot see the peer of a Unix-socket connection (``context.peer()`` is just ``'unix:'``,
with no descriptor or PID), so the agent serves gRPC with grpclib and records the peer of each connection when it is
accepted (:mod:`spire_pqc.agent.connections`); this module decides whether that peer may still be
answered.

The identity sources answer *by PID* (SPIRE's Delegated Identity API attests the PID it is given),
so the PID must still name the process that connected, both when the connection is accepted and
after the source has answered. As SPIRE's own peer tracker does
(``spiffe/spire:pkg/common/peertracker/tracker_linux.go``), a process is known by its *stamp*:
``starttime`` (field 22 of ``/proc/<pid>/stat``) plus its owner (the effective uid and gid of
``/proc/<pid>/status``).

* At connect: SO_PEERCRED gives pid, uid, gid as of connect(2). The process may already have exited
  and its PID been given to another process (the agent accepts later than the kernel connects), so
  the stamp read from ``/proc/<pid>`` must have the connecting uid and gid, and — where the kernel
  has SO_PEERPIDFD (Linux ≥ 6.5) — the connecting process itself must still be alive after the stamp
  was read, which proves the stamp is its own.
* Before every answer (:meth:`PeerTracker.caller`): the stamp is read again and must be unchanged.
  An exited caller, or one whose PID now names another process, is refused.

Both reads go through one ``/proc/<pid>`` directory descriptor: if the process dies in between, the
second read fails instead of reading another process's file.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from spire_pqc.agent.model import Caller
from spire_pqc.agent.perstate import PerState
from spire_pqc.errors import AuthorizationError

log = logging.getLogger(__name__)

# struct ucred { pid_t pid; uid_t uid; gid_t gid; }: uid_t and gid_t are unsigned (4294967294 is a uid).
_UCRED = struct.Struct("iII")
# Linux >= 6.5; Python 3.11's socket module does not name it (reference §0 item 4).
SO_PEERPIDFD = getattr(socket, "SO_PEERPIDFD", 77)


@dataclass(frozen=True)
class ProcessStamp:
    """What identifies one incarnation of a PID: its start time and its owner."""

    starttime: int
    uid: int
    gid: int


class ProcReader(Protocol):
    """Reads a process's stamp; raises OSError (or ValueError) when the process cannot be read."""

    def stamp(self, pid: int) -> ProcessStamp: ...


def _effective_id(status: str, key: str) -> int:
    for line in status.splitlines():
        if line.startswith(key):
            return int(line.split()[2])  # "Uid:\treal\teffective\tsaved\tfs"
    raise ValueError(f"no {key} line in /proc/<pid>/status")


class LinuxProcReader:
    """Reads ``/proc`` (``root`` is injectable for tests)."""

    def __init__(self, root: str | Path = "/proc") -> None:
        self._root = Path(root)

    def stamp(self, pid: int) -> ProcessStamp:
        if pid <= 0:
            raise ValueError(f"invalid PID {pid}")
        directory = os.open(self._root / str(pid), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            stat = _read_at(directory, "stat")
            status = _read_at(directory, "status")
        finally:
            os.close(directory)
        # comm (field 2) is in parentheses and may itself contain spaces or ')': split after the last ')'.
        # The remaining fields start at field 3 (state), so field 22 (starttime) is index 19.
        fields = stat[stat.rindex(")") + 2 :].split()
        return ProcessStamp(int(fields[19]), _effective_id(status, "Uid:"), _effective_id(status, "Gid:"))


def _read_at(directory: int, name: str) -> str:
    fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=directory)
    try:
        return os.read(fd, 16384).decode("ascii", errors="replace")
    finally:
        os.close(fd)


def peer_credentials(sock: socket.socket) -> Caller:
    """pid, uid, gid of the process that connected ``sock`` (as of its connect(2))."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    return Caller(pid, uid, gid)


def _peer_pidfd(sock: socket.socket) -> int | None:
    """A pidfd of the exact process that connected, or None where the kernel has no SO_PEERPIDFD."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD, 4)
    except OSError:
        return None
    return int(struct.unpack("i", raw)[0])


def _alive(pidfd: int) -> bool:
    try:
        signal.pidfd_send_signal(pidfd, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists (an agent that is not root may not signal it)
    return True


class CallerChanged(AuthorizationError):
    """The PID no longer names the process that connected (it exited, or the PID was reused)."""


@dataclass(frozen=True)
class PeerRecord:
    """One accepted connection's peer: ``caller`` when attested, else ``problem`` says why not."""

    caller: Caller | None
    stamp: ProcessStamp | None
    problem: str | None = None
    security_event: bool = False  # the problem shows a PID that now belongs to someone else

    @property
    def uid(self) -> int | None:
        return self.caller.uid if self.caller is not None else None


class PeerTracker:
    """Attests each connection's peer at connect time and re-validates it before each answer."""

    def __init__(self, proc: ProcReader | None = None) -> None:
        self._proc: ProcReader = proc or LinuxProcReader()
        self._records: dict[int, PeerRecord] = {}
        # pid → stamp read after the identity source answered with a state (see :meth:`caller`).
        self._after: PerState[dict[int, ProcessStamp]] = PerState()

    def __len__(self) -> int:
        return len(self._records)

    def attest(self, sock: socket.socket | None) -> PeerRecord:
        """Who connected ``sock``; never raises (a record with a problem is refused later)."""
        if sock is None:
            return PeerRecord(None, None, "no socket")
        try:
            caller = peer_credentials(sock)
        except (OSError, struct.error) as exc:
            return PeerRecord(None, None, f"no peer credentials: {exc}")
        pidfd = _peer_pidfd(sock)
        try:
            try:
                stamp = self._proc.stamp(caller.pid)
            except (OSError, ValueError, IndexError) as exc:
                # Already gone (or /proc is unreadable): nothing can be attested.
                return PeerRecord(caller, None, f"process {caller.pid} cannot be inspected: {exc}")
            if pidfd is not None and not _alive(pidfd):
                # The stamp just read may be another process's: the one that connected has exited.
                return PeerRecord(
                    caller, None, f"process {caller.pid} exited before the connection was accepted", True
                )
        finally:
            if pidfd is not None:
                os.close(pidfd)
        if (stamp.uid, stamp.gid) != (caller.uid, caller.gid):
            return PeerRecord(
                caller,
                None,
                f"process {caller.pid} belongs to uid {stamp.uid} gid {stamp.gid}, but uid {caller.uid} "
                f"gid {caller.gid} connected (PID reused before the connection was accepted)",
                True,
            )
        return PeerRecord(Caller(caller.pid, caller.uid, caller.gid, stamp.starttime), stamp)

    def on_connect(self, transport: asyncio.BaseTransport) -> PeerRecord:
        record = self.attest(transport.get_extra_info("socket"))
        self._records[id(transport)] = record
        return record

    def on_disconnect(self, transport: asyncio.BaseTransport) -> None:
        self._records.pop(id(transport), None)

    def record(self, transport: asyncio.BaseTransport) -> PeerRecord | None:
        return self._records.get(id(transport))

    def caller(self, transport: asyncio.BaseTransport, answered: object | None = None) -> Caller:
        """The connection's caller, if it is still the same process; AuthorizationError otherwise.

        :class:`CallerChanged` when the PID now names another process (a security event).

        ``answered``: the identity source's state about to be sent. The stamp is then read once per
        PID and state — by the first of the PID's streams to send it, after the source produced it —
        and compared with each connection's own stamp. One read suffices: a PID is not reused while
        its process lives, so a stamp unchanged after the answer proves the process the source
        answered for (by PID) is the one that connected, for every stream sending that answer.
        """
        record = self._records.get(id(transport))
        if record is None:
            raise AuthorizationError("connection has no recorded peer")
        if record.problem is not None or record.caller is None or record.stamp is None:
            error = CallerChanged if record.security_event else AuthorizationError
            raise error(record.problem or "caller unknown")
        pid = record.caller.pid
        read = self._after.get(answered, dict) if answered is not None else {}
        now = read.get(pid)
        if now is None:
            try:
                now = self._proc.stamp(pid)
            except (OSError, ValueError, IndexError) as exc:
                raise AuthorizationError(f"caller process {pid} is gone ({exc.__class__.__name__})") from exc
            if answered is not None:
                read[pid] = now
        if now != record.stamp:
            raise CallerChanged(f"caller process {pid} is no longer the process that connected (PID reused)")
        return record.caller
