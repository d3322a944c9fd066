"""Listening Unix sockets that no other local user can redirect or re-permission.

The agent's socket (and a tunnel's Unix listener) is created in a directory that must belong to
root or to the agent's own user and must not be writable by anyone else — every ancestor too, except
that a sticky ancestor such as ``/tmp`` may be writable (nobody else may rename what it holds). In a
directory another user can write, a symlink swapped in after bind() would turn a chmod by path into a
chmod of any file the agent can reach. So: the directory is checked before anything is created, the
socket gets its mode at bind() time through the umask (never a chmod by path), an existing file at
the path is replaced only if it is a stale socket (lstat: a symlink is never followed), and a socket
another process still serves is never taken over.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
from pathlib import Path

from spire_pqc.errors import ConfigError


def _components(directory: Path) -> list[Path]:
    """``directory`` and its ancestors, as given and as resolved (symlinks included both ways)."""
    seen: dict[Path, None] = {}
    for path in (directory, Path(os.path.realpath(directory))):
        for item in (path, *path.parents):
            seen.setdefault(item, None)
    return list(seen)


def check_directory(directory: Path, *, key: str) -> None:
    """Raise ConfigError (naming ``key``) unless only root or this user can change ``directory``."""
    owners = {0, os.geteuid()}
    groups = {0, os.getegid()}
    problems = []
    for path in _components(directory):
        try:
            info = os.stat(path)
        except OSError as exc:
            problems.append(f"cannot inspect {path}: {exc.strerror}")
            continue
        if info.st_uid not in owners:
            problems.append(
                f"directory {path} is owned by uid {info.st_uid} (must be root or uid {os.geteuid()})"
            )
        mode = info.st_mode
        writable = bool(mode & stat.S_IWOTH) or bool(mode & stat.S_IWGRP and info.st_gid not in groups)
        sticky_ancestor = bool(mode & stat.S_ISVTX) and path != directory
        if writable and not sticky_ancestor:
            problems.append(f"directory {path} is writable by other users (mode {stat.S_IMODE(mode):04o})")
    if problems:
        raise ConfigError([f"{key}: {problem}" for problem in problems])


def _serving(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def bind_unix_socket(path: Path, mode: int, *, key: str) -> socket.socket:
    """A bound (not yet listening) Unix stream socket at ``path`` whose file has ``mode``."""
    directory = path.parent
    if not directory.exists():
        old = os.umask(0o022)  # created directories must pass the check below whatever our umask
        try:
            directory.mkdir(parents=True, exist_ok=True)
        finally:
            os.umask(old)
    check_directory(directory, key=key)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(info.st_mode):
            raise ConfigError(f"{key}: {path} exists and is not a socket; refusing to replace it")
        if _serving(path):
            raise ConfigError(f"{key}: another process is serving on {path}")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a stale socket of a previous run
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # bind() creates the file with 0777 & ~umask: the umask gives it its final mode atomically. The
    # umask is process-wide, so it is restored at once (nothing else creates files meanwhile).
    old = os.umask(0o777 & ~mode)
    try:
        sock.bind(str(path))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"{key}: cannot bind {path}: {exc.strerror}") from exc
    finally:
        os.umask(old)
    return sock


def deepen_backlog(server: asyncio.Server, backlog: int) -> None:
    """Give a started server's listening sockets a deeper kernel queue than asyncio's accept batch.

    asyncio uses one number for both: listen(backlog) and how many connections it accepts per wake-up
    before handling any (each holding a descriptor meanwhile). A small batch bounds what a flood
    makes the process hold; a deep queue keeps bursts of legitimate connections waiting, not refused.
    """
    for transport_socket in server.sockets:
        with transport_socket.dup() as listener:  # shares the listening socket; closing it closes the copy
            listener.listen(backlog)


def listen_error(key: str, host: str, port: int, exc: OSError) -> ConfigError:
    """The ConfigError of a TCP listener that could not bind: the key, the address and the cause."""
    cause = exc.strerror or str(exc)
    if exc.errno is not None and "address already in use" in str(exc).lower():
        cause = "address already in use (another process listens there)"
    elif exc.errno is not None and exc.strerror:
        cause = exc.strerror[0].lower() + exc.strerror[1:]
    return ConfigError(f"{key}: cannot listen on {host}:{port}: {cause}")
