"""Caller identification on the Unix socket: SO_PEERCRED, guarded against PID reuse.

grpcio cannot see the peer of a Unix-socket connection (reference/workload-api-and-peers.md §0
item 4), so the agent serves gRPC with grpclib, and this is the one module that knows how grpclib
exposes the transport: :class:`PeerCredServer` wraps each connection's protocol so the peer's
credentials are recorded *when the connection is made*, and :func:`caller_of` finds them again
from a request's ``stream.peer``.

PID reuse (as SPIRE's peertracker, ``spiffe/spire:pkg/common/peertracker/tracker_linux.go``): at
connect time we record the PID from SO_PEERCRED plus that process's ``starttime`` (field 22 of
``/proc/<pid>/stat``) and the uid/gid owning ``/proc/<pid>``; before every answer
:meth:`PeerTracker.caller` re-reads them. If the process exited, or the PID now belongs to another
process (different starttime or owner), the caller is refused: an exited client's descriptor,
passed to or inherited by another process, must never obtain the identity of whatever process
later gets the same PID.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import grpclib.server
from grpclib.protocol import H2Protocol

from spire_pqc.agent.model import Caller
from spire_pqc.errors import AuthorizationError

log = logging.getLogger(__name__)

_UCRED = struct.Struct("3i")  # struct ucred { pid_t pid; uid_t uid; gid_t gid; } on Linux


@dataclass(frozen=True)
class ProcessStamp:
    """What identifies one incarnation of a PID."""

    starttime: int
    uid: int
    gid: int


class ProcReader(Protocol):
    """Reads a process's stamp; raises OSError (or ValueError) when the process cannot be read."""

    def stamp(self, pid: int) -> ProcessStamp: ...


class LinuxProcReader:
    """Reads ``/proc`` (``root`` is injectable for tests)."""

    def __init__(self, root: str | Path = "/proc") -> None:
        self._root = Path(root)

    def stamp(self, pid: int) -> ProcessStamp:
        base = self._root / str(pid)
        info = os.stat(base)
        text = (base / "stat").read_text()
        # comm (field 2) is in parentheses and may itself contain spaces or ')': split after the last ')'.
        # The remaining fields start at field 3 (state), so field 22 (starttime) is index 19.
        fields = text[text.rindex(")") + 2 :].split()
        return ProcessStamp(int(fields[19]), info.st_uid, info.st_gid)


@dataclass(frozen=True)
class _Record:
    caller: Caller | None
    stamp: ProcessStamp | None
    problem: str | None


def peer_credentials(sock: socket.socket) -> Caller:
    """pid, uid, gid of the process that connected ``sock`` (as of its connect(2))."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    return Caller(pid, uid, gid)


class PeerTracker:
    """Records each connection's peer at connect time and re-validates it before each answer."""

    def __init__(self, proc: ProcReader | None = None) -> None:
        self._proc: ProcReader = proc or LinuxProcReader()
        self._records: dict[int, _Record] = {}

    def __len__(self) -> int:
        return len(self._records)

    def on_connect(self, transport: asyncio.BaseTransport) -> None:
        sock = transport.get_extra_info("socket")
        try:
            caller = peer_credentials(sock)
        except (OSError, AttributeError, struct.error) as exc:
            self._records[id(transport)] = _Record(None, None, f"no peer credentials: {exc}")
            return
        try:
            stamp = self._proc.stamp(caller.pid)
        except (OSError, ValueError, IndexError) as exc:
            # The process is already gone (or /proc is unreadable): nothing can be attested.
            self._records[id(transport)] = _Record(
                caller, None, f"process {caller.pid} cannot be inspected: {exc}"
            )
            return
        self._records[id(transport)] = _Record(caller, stamp, None)

    def on_disconnect(self, transport: asyncio.BaseTransport) -> None:
        self._records.pop(id(transport), None)

    def caller(self, transport: asyncio.BaseTransport) -> Caller:
        """The connection's caller, if it is still the same process; AuthorizationError otherwise."""
        record = self._records.get(id(transport))
        if record is None:
            raise AuthorizationError("connection has no recorded peer")
        if record.problem is not None or record.caller is None or record.stamp is None:
            raise AuthorizationError(record.problem or "caller unknown")
        pid = record.caller.pid
        try:
            now = self._proc.stamp(pid)
        except (OSError, ValueError, IndexError) as exc:
            raise AuthorizationError(f"caller process {pid} is gone ({exc.__class__.__name__})") from exc
        if now != record.stamp:
            log.warning(
                "security event: PID %d was reused since the connection was made; caller refused", pid
            )
            raise AuthorizationError(
                f"caller process {pid} is no longer the process that connected (PID reused)"
            )
        return record.caller


def caller_of(tracker: PeerTracker, stream: grpclib.server.Stream[Any, Any]) -> Caller:
    """The validated caller of a grpclib server stream."""
    # grpclib keeps the asyncio transport on Peer._transport; it is the object on_connect saw.
    transport = stream.peer._transport
    return tracker.caller(transport)


class _TrackingProtocol(asyncio.Protocol):
    """Delegates to grpclib's H2Protocol; records the peer before the first byte is read."""

    def __init__(self, inner: H2Protocol, tracker: PeerTracker, live: set[_TrackingProtocol]) -> None:
        self._inner = inner
        self._tracker = tracker
        self._live = live
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._live.add(self)
        self._tracker.on_connect(transport)
        self._inner.connection_made(transport)

    def close(self) -> None:
        """Close the connection after writing what is buffered (final statuses already queued)."""
        if self._transport is not None:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._live.discard(self)
        if self._transport is not None:
            self._tracker.on_disconnect(self._transport)
        self._inner.connection_lost(exc)


class PeerCredServer(grpclib.server.Server):
    """A grpclib server whose connections are tracked by a :class:`PeerTracker`."""

    def __init__(self, handlers: Any, tracker: PeerTracker) -> None:
        super().__init__(handlers)
        self.tracker = tracker
        self._live: set[_TrackingProtocol] = set()

    @property
    def connections(self) -> int:
        return len(self._live)

    def close_connections(self) -> None:
        """grpclib's close() stops listening and cancels handlers but keeps connections open; a
        stopped agent must drop them so clients reconnect (to its successor) instead of reusing them."""
        for protocol in list(self._live):
            protocol.close()

    # grpclib 0.4.x builds one protocol per connection here; wrapping it is the only hook that runs at
    # connect time (tests/unit/agent/test_peercred.py guards this against a grpclib upgrade).
    def _protocol_factory(self) -> H2Protocol:
        return _TrackingProtocol(super()._protocol_factory(), self.tracker, self._live)  # type: ignore[return-value]
