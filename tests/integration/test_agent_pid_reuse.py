"""A real process connects, hands its connection to us and exits: its PID is gone, so the caller is refused.

The child calls connect(2), so SO_PEERCRED names the child's PID. It passes the connected socket to
the test over SCM_RIGHTS and exits; the test then sends a request on that connection. The agent
must notice that the process that connected no longer exists (as it would if the PID had been
reused) and answer PERMISSION_DENIED.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import textwrap

import pytest
from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError
from grpclib.protocol import H2Protocol
from spiffe._proto import workload_pb2 as wl

from spire_pqc._internal import wire
from tests.unit.agent._support import HEADER, running_agent

CHILD = textwrap.dedent(
    """
    import socket, sys
    parent = socket.socket(fileno=int(sys.argv[2]))
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(sys.argv[1])
    socket.send_fds(parent, [b"x"], [conn.fileno()])
    """
)


class _SocketChannel(Channel):
    """A grpclib channel over an already connected socket (test-only)."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(path="/unused")
        self._sock = sock

    async def _create_connection(self) -> H2Protocol:
        _, protocol = await asyncio.get_running_loop().create_unix_connection(
            self._protocol_factory, sock=self._sock
        )
        return protocol


@pytest.mark.asyncio
async def test_connection_of_an_exited_process_is_refused() -> None:
    async with running_agent() as agent:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with ours, theirs:
            child = subprocess.Popen(
                [sys.executable, "-c", CHILD, str(agent.socket_path), str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
            )
            _, fds, _, _ = await asyncio.to_thread(socket.recv_fds, ours, 1, 1)
            assert await asyncio.to_thread(child.wait, 10) == 0
        inherited = socket.socket(fileno=fds[0])
        assert inherited.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)  # connected
        assert not os.path.exists(f"/proc/{child.pid}")  # the connecting process is gone
        channel = _SocketChannel(inherited)
        try:
            async with channel.request(
                wire.FETCH_X509_SVID, Cardinality.UNARY_STREAM, wl.X509SVIDRequest,
                wl.X509SVIDResponse, metadata=HEADER, timeout=10,
            ) as stream:  # fmt: skip
                await stream.send_message(wl.X509SVIDRequest(), end=True)
                with pytest.raises(GRPCError) as info:
                    await stream.recv_message()
        finally:
            channel.close()
        assert info.value.status is Status.PERMISSION_DENIED
        assert f"process {child.pid}" in (info.value.message or "")
