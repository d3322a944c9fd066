"""Secure, atomic file I/O for keys and certificates.

Keys are written to a temporary file created with mode 0600 in the target directory, fsynced, then
renamed over the target, so a reader sees the old file or the new one, never a torn write, and a
crash never leaves a key readable by others. Reading a key file refuses group/other permissions.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

from spire_pqc.errors import KeyFileError, KeyFileExistsError, KeyFilePermissionError


def atomic_write(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o600, force: bool = True) -> None:
    """Write ``data`` to ``path`` atomically with ``mode``; refuse to replace it unless ``force``."""
    target = Path(path)
    if not force and target.exists():
        raise KeyFileExistsError("exists; refusing to overwrite without --force", path=str(target))
    directory = target.parent
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if not force:
            # link() fails if the target appeared meanwhile, which rename() would silently replace.
            try:
                os.link(tmp, target)
            except FileExistsError as exc:
                raise KeyFileExistsError(
                    "exists; refusing to overwrite without --force", path=str(target)
                ) from exc
            os.unlink(tmp)
        else:
            os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_private(path: str | os.PathLike[str], *, max_size: int = 1 << 20) -> bytes:
    """Read a private-key file, refusing one that group or others can read or write."""
    target = Path(path)
    try:
        fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError as exc:
        raise KeyFileError("no such key file", path=str(target)) from exc
    except OSError as exc:
        raise KeyFileError(f"cannot open key file: {exc.strerror}", path=str(target)) from exc
    except ValueError as exc:  # os.open refuses a path with a NUL byte this way
        raise KeyFileError(f"cannot open key file: {exc}", path=str(target)) from exc
    # Check the type before os.fdopen, which raises IsADirectoryError for a directory.
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise KeyFileError("not a regular file", path=str(target))
    with os.fdopen(fd, "rb") as handle:
        if info.st_mode & 0o077:
            raise KeyFilePermissionError(
                f"mode {stat.S_IMODE(info.st_mode):04o} lets other users access a private key; "
                "chmod 600 it (refusing to use it)",
                path=str(target),
            )
        data = handle.read(max_size + 1)
    if len(data) > max_size:
        raise KeyFileError(f"larger than {max_size} bytes", path=str(target))
    return data


def private_directory(path: str | os.PathLike[str], *, create: bool = True) -> Path:
    """Make sure ``path`` is a directory only its owner (this process's user) can use: mode 0700.

    Created with mode 0700 when missing (``create``). An existing one must be a real directory (not
    a symlink), owned by the effective user, with no group or other permission bits; anything else is
    refused rather than "fixed", since another user may already have read or planted files in it.
    """
    target = Path(path)
    if create:
        target.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            target.mkdir(mode=0o700)
    try:
        info = target.lstat()
    except FileNotFoundError as exc:
        raise KeyFileError("no such directory", path=str(target)) from exc
    except OSError as exc:
        raise KeyFileError(f"cannot inspect directory: {exc.strerror}", path=str(target)) from exc
    if not stat.S_ISDIR(info.st_mode):
        raise KeyFileError("not a directory (symbolic links are refused)", path=str(target))
    if info.st_uid != os.geteuid():
        raise KeyFilePermissionError(
            f"owned by uid {info.st_uid}, not by this process's uid {os.geteuid()}; refusing to use it",
            path=str(target),
        )
    if info.st_mode & 0o077:
        raise KeyFilePermissionError(
            f"mode {stat.S_IMODE(info.st_mode):04o} lets other users into a directory of private keys; "
            "chmod 700 it (refusing to use it)",
            path=str(target),
        )
    return target


def read_public(path: str | os.PathLike[str], *, max_size: int = 16 << 20) -> bytes:
    """Read a certificate or bundle file (no permission requirement), bounded in size."""
    target = Path(path)
    try:
        with open(target, "rb") as handle:
            data = handle.read(max_size + 1)
    except FileNotFoundError as exc:
        raise KeyFileError("no such file", path=str(target)) from exc
    except OSError as exc:
        raise KeyFileError(f"cannot read: {exc.strerror}", path=str(target)) from exc
    except ValueError as exc:  # a path with a NUL byte
        raise KeyFileError(f"cannot read: {exc}", path=str(target)) from exc
    if len(data) > max_size:
        raise KeyFileError(f"larger than {max_size} bytes", path=str(target))
    return data
