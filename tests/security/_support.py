"""Helpers for the attacks in tests/security: unprivileged uids, PID forcing, descriptor passing.

The tests run as root (the brief of the project: tests may switch uid in child processes) and play
the local attacker with real processes under uids that have no identity. Every helper here waits for
a condition with a generous deadline instead of sleeping a fixed time.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from grpclib.client import Channel
from grpclib.const import Cardinality
from grpclib.exceptions import GRPCError
from grpclib.protocol import H2Protocol
from spiffe._proto import workload_pb2 as wl

from spire_pqc._internal import wire
from spire_pqc.bench.agentproc import AgentProcess
from spire_pqc.bench.hostile import spawn

# Unprivileged uids/gids with no passwd entry and no identity: the kernel needs none.
ATTACKER = 40001
ATTACKER2 = 40002
TRUST_DOMAIN = "example.org"
ROOT_ID = f"spiffe://{TRUST_DOMAIN}/root-only"
HEADER = dict(wire.SECURITY_METADATA)


def require_root() -> None:
    # Not a skip: these attacks need uid switching, and the project's tests run as root by design.
    assert os.geteuid() == 0, "tests/security switch uids in child processes and must run as root"


@contextmanager
def public_dir(prefix: str = "sec") -> Iterator[Path]:
    """A short directory (Unix socket paths are limited) that other uids may traverse, not write."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def dev_agent_config(
    directory: Path, *, entries: Sequence[dict[str, Any]] | None = None, **sections: Any
) -> dict[str, Any]:
    """A dev-source agent configuration: by default only root (uid 0) has an identity."""
    config: dict[str, Any] = {
        "agent": {"socket_path": str(directory / "agent.sock"), "shutdown_grace": "1s"},
        "source": {
            "kind": "dev",
            "dev": {
                "trust_domain": TRUST_DOMAIN,
                "svid_ttl": "1h",
                "entries": list(entries or [{"spiffe_id": ROOT_ID, "selectors": ["unix:uid:0"]}]),
            },
        },
    }
    for name, table in sections.items():
        config.setdefault(name, {}).update(table)
    return config


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def log_lines(agent: AgentProcess, needle: str) -> list[str]:
    return [line for line in agent.log_text().splitlines() if needle in line]


def assert_no_traceback(agent: AgentProcess) -> None:
    text = agent.log_text()
    assert "Traceback" not in text, agent.log_tail(60)


# --- a connection made by one process and used by another ---------------------------------------------


def connect_and_wait(socket_path: Path, uid: int) -> tuple[socket.socket, subprocess.Popen[str]]:
    """A process of ``uid`` connects to ``socket_path`` and hands the connection to us; it exits when
    its stdin is closed (:func:`let_exit`). SO_PEERCRED of the connection names that process."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours, theirs:
        child = spawn(
            "pass-fd", ["--socket", str(socket_path), "--to-fd", str(theirs.fileno())],
            uid=uid, pass_fds=[theirs.fileno()], stdout=subprocess.DEVNULL,
        )  # fmt: skip
        ours.settimeout(30)
        _, fds, _, _ = socket.recv_fds(ours, 1, 1)
    assert fds, "the child passed no descriptor"
    return socket.socket(fileno=fds[0]), child


def let_exit(child: subprocess.Popen[str]) -> int:
    """Close the child's stdin, reap it (its PID is free again) and return that PID."""
    assert child.stdin is not None
    child.stdin.close()
    assert child.wait(30) == 0
    return child.pid


def connect_and_exit(socket_path: Path, uid: int) -> tuple[socket.socket, int]:
    """A process of ``uid`` connects to ``socket_path``, hands the connection to us and exits (reaped).

    Returns the connection (whose SO_PEERCRED names the exited process) and that process's PID.
    """
    conn, child = connect_and_wait(socket_path, uid)
    return conn, let_exit(child)


def spawn_with_pid(pid: int, argv: Sequence[str], *, attempts: int = 400) -> subprocess.Popen[bytes] | None:
    """Start ``argv`` (as root) so that it gets exactly ``pid``, through /proc/sys/kernel/ns_last_pid.

    Other processes on the machine may take the PID first; then None is returned and the caller
    repeats the whole attack with a new attacker.
    """
    for _ in range(attempts):
        if os.path.exists(f"/proc/{pid}"):
            return None  # someone else has it now
        Path("/proc/sys/kernel/ns_last_pid").write_text(str(pid - 1))
        process = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        if process.pid == pid:
            return process
        process.kill()
        process.wait()
    return None


class SocketChannel(Channel):
    """A grpclib channel over an already connected socket (test-only)."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(path="/unused")
        self._sock = sock

    async def _create_connection(self) -> H2Protocol:
        _, protocol = await asyncio.get_running_loop().create_unix_connection(
            self._protocol_factory, sock=self._sock
        )
        return protocol


async def fetch_on(sock: socket.socket, timeout: float = 30.0) -> tuple[str, list[str], str]:
    """FetchX509SVID on ``sock``: (status name, SPIFFE IDs received, message)."""
    channel = SocketChannel(sock)
    try:
        async with channel.request(
            wire.FETCH_X509_SVID, Cardinality.UNARY_STREAM, wl.X509SVIDRequest,
            wl.X509SVIDResponse, metadata=HEADER, timeout=timeout,
        ) as stream:  # fmt: skip
            await stream.send_message(wl.X509SVIDRequest(), end=True)
            try:
                reply = await stream.recv_message()
            except GRPCError as exc:
                return exc.status.name, [], exc.message or ""
            await stream.cancel()
            return "OK", [s.spiffe_id for s in reply.svids] if reply else [], ""
    finally:
        channel.close()
