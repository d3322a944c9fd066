"""Hostile local clients of the node agent, run as real processes under other uids.

``python -m spire_pqc.bench.hostile ATTACK [options]`` runs one attack and prints one JSON line with
what it observed. :func:`spawn` starts it under a given uid/gid (the caller must be root), which is
how the security tests and ``spire-pqc bench soak`` play an unprivileged local user. Attacks:

* ``idle``      — open ``--count`` connections (to ``--socket``, or ``--tcp host:port``) that never
  send a request, hold them for ``--hold`` seconds, replacing the ones the agent closes
  (``--reconnect``); reports how many attempts were made.
* ``oversize``  — one Workload API request whose gRPC length prefix says ``--length`` bytes, then
  ``--push`` MiB of body; reports the status and how much the agent took.
* ``malformed`` — a request whose body is ``--kind`` compressed | truncated | short (3 bytes) |
  garbage (not protobuf); reports the status. With ``--repeat N`` either makes N requests (the
  malformed kinds in turn), one connection each, and reports a tally of the statuses.
* ``slow-bodies`` — ``--count`` requests at once on one connection, each announcing 4 MiB and sending
  1 KiB; reports what each got within ``--hold`` seconds.
* ``handshake`` — ``--count`` TCP connections that send part of a TLS ClientHello and then close
  (``--rst``: reset); reports how many were made.
* ``tunnel``    — connect to a tunnel listener (``--tcp host:port`` or ``--unix path``), send ``ping``
  and report what came back before the connection ended; with ``--hit-and-run``, ``--count`` times
  send ``ping`` and close at once (the socket has no owner any more when the agent looks).
* ``fetch``     — an ordinary FetchX509SVID; reports the SPIFFE IDs or the status.
* ``pass-fd``   — connect to ``--socket``, hand the connection over the inherited descriptor
  ``--to-fd`` (SCM_RIGHTS), then wait until stdin closes (so its PID stays taken until then).

The process starts as root and drops to ``--as-uid``/``--as-gid`` after its imports: the interpreter
and its libraries may live where the target uid cannot read (a pyenv under a 0700 ``/root``). It then
marks itself dumpable again (setuid clears it), so ``/proc/<pid>`` belongs to the target uid as it
would for any process that user starts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import encodings.idna  # noqa: F401 - getaddrinfo needs it, and it cannot be imported after the drop
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError, StreamTerminatedError
from spiffe._proto import workload_pb2 as wl

from spire_pqc._internal.wire import FETCH_X509_SVID, SECURITY_METADATA
from spire_pqc.bench.worker import last_json_line

HEADER = dict(SECURITY_METADATA)
FETCH_X509 = FETCH_X509_SVID


_PR_SET_DUMPABLE = 4


def spawn(
    attack: str,
    args: Sequence[str],
    *,
    uid: int,
    gid: int | None = None,
    stdout: int | None = subprocess.PIPE,
    pass_fds: Sequence[int] = (),
) -> subprocess.Popen[str]:
    """Start ``attack`` as a separate process that runs as ``uid``/``gid`` (no supplementary groups)."""
    identity = ["--as-uid", str(uid), "--as-gid", str(uid if gid is None else gid)]
    return subprocess.Popen(
        [sys.executable, "-m", "spire_pqc.bench.hostile", attack, *identity, *args],
        stdout=stdout, text=True, stdin=subprocess.PIPE, cwd="/", pass_fds=tuple(pass_fds),
    )  # fmt: skip


def drop_privileges(uid: int, gid: int) -> None:
    """Become ``uid``/``gid`` for good (real, effective and saved ids; no supplementary groups)."""
    if os.getuid() == uid and os.getgid() == gid:
        return
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_DUMPABLE, 1, 0, 0, 0)


def result_of(process: subprocess.Popen[str], timeout: float = 120.0) -> dict[str, Any]:
    """The JSON line an attack printed (waits for it to exit)."""
    out, _ = process.communicate(timeout=timeout)
    result = last_json_line(out or "")
    if process.returncode != 0 or result is None:
        raise AssertionError(f"hostile client failed ({process.returncode}): {out!r}")
    return result


# --- idle connections ------------------------------------------------------------------------------


def _connect(target: str | tuple[str, int]) -> socket.socket | None:
    """A non-blocking connection to a Unix socket path or a TCP (host, port); None if refused now."""
    family = socket.AF_UNIX if isinstance(target, str) else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        sock.connect(target)
    except BlockingIOError:
        if family == socket.AF_UNIX:  # backlog full (EAGAIN): try again later
            sock.close()
            return None
        # TCP: in progress; it completes (or fails) without us
    except OSError:
        sock.close()  # no listener: try again later
        return None
    return sock


def _is_open(sock: socket.socket) -> bool:
    """Drain what the server sent; False once it closed the connection."""
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return False
    except BlockingIOError:
        return True
    except OSError:
        return False


def idle(
    target: str | tuple[str, int], count: int, hold: float, reconnect: bool, *, max_attempts: int = 0
) -> dict[str, Any]:
    conns: list[socket.socket] = []
    attempts = 0
    deadline = time.monotonic() + hold
    while True:
        alive = []
        for conn in conns:
            if _is_open(conn):
                alive.append(conn)
            else:
                conn.close()
        conns = alive
        budget = max_attempts - attempts if max_attempts else count
        if (reconnect or attempts < count) and budget > 0:
            for _ in range(min(count - len(conns), budget)):
                attempts += 1
                sock = _connect(target)
                if sock is not None:
                    conns.append(sock)
        if time.monotonic() >= deadline:
            break
        time.sleep(max(0.0, min(0.2, deadline - time.monotonic())))
    open_at_end = sum(1 for c in conns if _is_open(c))
    for c in conns:
        c.close()
    return {"attempts": attempts, "open_at_end": open_at_end}


# --- gRPC requests with hand-made bodies -------------------------------------------------------------


def _status(exc: GRPCError) -> dict[str, Any]:
    return {"status": exc.status.name, "message": exc.message or ""}


async def _raw_request(path: str, body_frames: Sequence[bytes], *, push_mib: int = 0) -> dict[str, Any]:
    """Send ``body_frames`` as the DATA of one FetchX509SVID request (end of stream after the last one
    unless ``push_mib`` MiB of filler follow), then read the status."""
    channel = Channel(path=path)
    pushed = 0
    outcome: dict[str, Any] = {}
    try:
        async with channel.request(
            FETCH_X509, Cardinality.UNARY_STREAM, wl.X509SVIDRequest, wl.X509SVIDResponse,
            metadata=HEADER, timeout=60,
        ) as stream:  # fmt: skip
            await stream.send_request()
            raw = stream._stream
            for index, frame in enumerate(body_frames):
                await raw.send_data(frame, end_stream=not push_mib and index == len(body_frames) - 1)
            stream._end_done = True  # our DATA bypassed grpclib's bookkeeping of the request's end
            pushed = await _push(raw, push_mib)
            try:
                reply = await asyncio.wait_for(stream.recv_message(), 30)
            except StreamTerminatedError:
                # The agent answered (trailers-only) and reset the stream to stop our upload; grpclib
                # then raises instead of reporting the status it did receive.
                outcome = _trailers_only(raw.headers)
            else:
                outcome = {"status": "OK", "svids": [s.spiffe_id for s in reply.svids] if reply else []}
    except GRPCError as exc:
        outcome = outcome or _status(exc)
    except (TimeoutError, StreamTerminatedError, ConnectionError) as exc:
        outcome = outcome or {"status": "NO_ANSWER", "message": f"{type(exc).__name__}: {exc}"}
    finally:
        channel.close()
    return {**outcome, "pushed": pushed}


async def _push(raw: Any, mib: int) -> int:
    """Push ``mib`` MiB of body; stop once the agent answered or takes no more for 5 s."""
    filler = b"\xa5" * (1 << 20)
    pushed = 0
    answered = asyncio.ensure_future(raw.headers_received.wait())
    try:
        for _ in range(mib):
            send = asyncio.ensure_future(raw.send_data(filler))
            done, _ = await asyncio.wait({send, answered}, timeout=5, return_when=asyncio.FIRST_COMPLETED)
            if send not in done or send.exception() is not None:
                send.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await send
                break
            pushed += len(filler)
    finally:
        answered.cancel()
    return pushed


def _trailers_only(headers: Sequence[tuple[str, str]] | None) -> dict[str, Any]:
    received = dict(headers or ())
    if "grpc-status" not in received:
        return {"status": "NO_ANSWER", "message": "stream reset without a status"}
    return {"status": Status(int(received["grpc-status"])).name, "message": received.get("grpc-message", "")}


def _prefix(length: int, *, compressed: bool = False) -> bytes:
    return (b"\x01" if compressed else b"\x00") + length.to_bytes(4, "big")


MALFORMED = {
    # compressed flag set although no grpc-encoding was negotiated
    "compressed": [_prefix(2, compressed=True) + b"\x0a\x00"],
    # the prefix announces 100 bytes, 10 arrive, then the stream ends
    "truncated": [_prefix(100) + b"\x0a" * 10],
    # three bytes: not even a complete length prefix
    "short": [b"\x00\x00\x00"],
    # a complete message that is not protobuf (a field header with a truncated length)
    "garbage": [_prefix(6) + b"\x0a\xff\xff\xff\xff\x0f"],
}


async def slow_bodies(path: str, count: int, hold: float) -> dict[str, Any]:
    """``count`` requests at once on one connection, each announcing a 4 MiB message and sending 1 KiB
    of it; the tally of what each got within ``hold`` seconds (PENDING: still being read)."""
    channel = Channel(path=path)

    async def one() -> str:
        outcome = ""
        try:
            async with channel.request(
                FETCH_X509, Cardinality.UNARY_STREAM, wl.X509SVIDRequest, wl.X509SVIDResponse,
                metadata=HEADER, timeout=hold + 30,
            ) as stream:  # fmt: skip
                await stream.send_request()
                await stream._stream.send_data(_prefix(4 << 20) + b"\x0a" * 1024)
                stream._end_done = True
                try:
                    await asyncio.wait_for(stream.recv_message(), hold)
                    outcome = "OK"
                except StreamTerminatedError:
                    outcome = str(_trailers_only(stream._stream.headers)["status"])
                except TimeoutError:
                    outcome = "PENDING"
                    await stream.cancel()
        except GRPCError as exc:  # grpclib raises the status again when the block ends
            return outcome or exc.status.name
        return outcome

    try:
        outcomes = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
    finally:
        channel.close()
    tally: dict[str, int] = {}
    for outcome in outcomes:
        key = outcome if isinstance(outcome, str) else type(outcome).__name__
        tally[key] = tally.get(key, 0) + 1
    return {"statuses": tally}


async def fetch(path: str) -> dict[str, Any]:
    channel = Channel(path=path)
    try:
        async with channel.request(
            FETCH_X509, Cardinality.UNARY_STREAM, wl.X509SVIDRequest, wl.X509SVIDResponse,
            metadata=HEADER, timeout=30,
        ) as stream:  # fmt: skip
            await stream.send_message(wl.X509SVIDRequest(), end=True)
            try:
                reply = await stream.recv_message()
            except GRPCError as exc:
                return _status(exc)
            await stream.cancel()
            return {"status": "OK", "svids": [s.spiffe_id for s in reply.svids] if reply else []}
    finally:
        channel.close()


# --- TLS and tunnels -----------------------------------------------------------------------------------


def client_hello() -> bytes:
    """The first flight of a real TLS 1.3 client (pyOpenSSL, hybrid group offered)."""
    from OpenSSL import SSL

    ctx = SSL.Context(SSL.TLS_METHOD)
    conn = SSL.Connection(ctx, None)
    conn.set_connect_state()
    with contextlib.suppress(SSL.WantReadError):
        conn.do_handshake()
    return conn.bio_read(65536)


def handshake(
    host: str, port: int, count: int, rst: bool, hello: bytes, concurrency: int = 32
) -> dict[str, Any]:
    made = failed = 0
    open_socks: list[socket.socket] = []

    def finish(sock: socket.socket) -> None:
        if rst:  # abortive close: RST instead of FIN
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()

    for i in range(count):
        try:
            sock = socket.create_connection((host, port), timeout=10)
            # Half of them stop inside the ClientHello, the others right after it.
            sock.sendall(hello[: len(hello) // 2] if i % 2 else hello)
            made += 1
            open_socks.append(sock)
        except OSError:
            failed += 1
        if len(open_socks) >= concurrency:
            for sock in open_socks:
                finish(sock)
            open_socks.clear()
    for sock in open_socks:
        finish(sock)
    return {"made": made, "failed": failed}


def tunnel(
    tcp: str | None, unix: str | None, payload: bytes = b"ping", *, count: int = 1, hit_and_run: bool = False
) -> dict[str, Any]:
    """Use a tunnel listener; ``hit_and_run``: ``count`` times, send ``payload`` and close at once
    without reading (the socket is gone before the agent can look up its owner)."""
    if hit_and_run:
        host, _, port = (tcp or "").rpartition(":")
        sent = 0
        for _ in range(count):
            with socket.create_connection((host, int(port)), timeout=20) as sock:
                sock.sendall(payload)
                sent += 1
        return {"sent": sent}
    return _use_tunnel(tcp, unix, payload)


def _use_tunnel(tcp: str | None, unix: str | None, payload: bytes) -> dict[str, Any]:
    try:
        if unix is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(20)
            sock.connect(unix)
        else:
            assert tcp is not None
            host, _, port = tcp.rpartition(":")
            sock = socket.create_connection((host, int(port)), timeout=20)
    except OSError as exc:
        return {"connected": False, "error": str(exc), "received": ""}
    received = b""
    with sock:
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            while data := sock.recv(65536):
                received += data
        except OSError as exc:
            return {"connected": True, "error": str(exc), "received": received.decode(errors="replace")}
    return {"connected": True, "error": "", "received": received.decode(errors="replace")}


def pass_fd(path: str, to_fd: int) -> dict[str, Any]:
    parent = socket.socket(fileno=to_fd)
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(path)
    socket.send_fds(parent, [b"x"], [conn.fileno()])
    sys.stdin.read()  # keep this PID taken until the test lets us go
    return {"pid": os.getpid()}


async def _requests(args: argparse.Namespace) -> dict[str, Any]:
    """``--repeat`` oversize or malformed requests (malformed kinds in turn); one result or a tally."""
    results = []
    kinds = [args.kind] if args.repeat == 1 else sorted(MALFORMED)
    for index in range(args.repeat):
        if args.attack == "oversize":
            results.append(await _raw_request(args.socket, [_prefix(args.length)], push_mib=args.push))
        else:
            results.append(await _raw_request(args.socket, MALFORMED[kinds[index % len(kinds)]]))
    if args.repeat == 1:
        return results[0]
    tally: dict[str, int] = {}
    for result in results:
        tally[result["status"]] = tally.get(result["status"], 0) + 1
    return {"requests": len(results), "statuses": tally}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spire_pqc.bench.hostile")
    parser.add_argument(
        "attack",
        choices=("idle", "oversize", "malformed", "slow-bodies", "handshake", "tunnel", "fetch", "pass-fd"),
    )
    parser.add_argument("--as-uid", type=int, required=True)
    parser.add_argument("--as-gid", type=int, required=True)
    parser.add_argument("--to-fd", type=int)
    parser.add_argument("--socket", help="the agent's Unix socket")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--hold", type=float, default=5.0)
    parser.add_argument("--reconnect", action="store_true")
    parser.add_argument("--length", type=int, default=0xFFFFFFF0)
    parser.add_argument("--push", type=int, default=64, help="MiB of body pushed after the prefix")
    parser.add_argument("--kind", choices=sorted(MALFORMED), default="compressed")
    parser.add_argument("--tcp", help="host:port")
    parser.add_argument("--unix", help="path of a Unix socket")
    parser.add_argument("--rst", action="store_true")
    parser.add_argument("--hit-and-run", action="store_true", help="tunnel: send and close at once")
    parser.add_argument(
        "--repeat", type=int, default=1, help="oversize/malformed: requests, one connection each"
    )
    parser.add_argument("--max-attempts", type=int, default=0, help="idle: stop reconnecting after this many")
    args = parser.parse_args(argv)
    hello = client_hello()  # uses OpenSSL: load it before dropping privileges
    drop_privileges(args.as_uid, args.as_gid)
    result: dict[str, Any]
    if args.attack == "pass-fd":
        result = pass_fd(args.socket, args.to_fd)
    elif args.attack == "idle":
        target: str | tuple[str, int] = args.socket
        if args.tcp:
            host, _, port = args.tcp.rpartition(":")
            target = (host, int(port))
        result = idle(target, args.count, args.hold, args.reconnect, max_attempts=args.max_attempts)
    elif args.attack in ("oversize", "malformed"):
        result = asyncio.run(_requests(args))
    elif args.attack == "slow-bodies":
        result = asyncio.run(slow_bodies(args.socket, args.count, args.hold))
    elif args.attack == "handshake":
        host, _, port = args.tcp.rpartition(":")
        result = handshake(host, int(port), args.count, args.rst, hello)
    elif args.attack == "tunnel":
        result = tunnel(args.tcp, args.unix, count=args.count, hit_and_run=args.hit_and_run)
    else:
        result = asyncio.run(fetch(args.socket))
    result["uid"] = os.getuid()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
