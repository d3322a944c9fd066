"""glibc malloc tuning for long-running processes: the number of arenas (``mallopt(M_ARENA_MAX)``).

glibc gives threads that contend for the allocator arenas of their own (up to 8 per core). The node
agent's crypto threads take turns generating keys, issuing and parsing certificates, so the short-
and long-lived buffers of one rotation end up spread over several arenas, each fragmenting on its own
and none giving memory back while a long-lived block sits near its top: measured with
``spire-pqc bench rotation`` (README), RSS crept by ~1.4 MiB per 1,000 rotations after warm-up with
glibc's default and stayed flat with one arena. One lock for every malloc costs little here: the
threads spend their time in the PQ arithmetic, not in the allocator.

Only glibc has ``mallopt``/``M_ARENA_MAX``; elsewhere (musl, macOS) :func:`limit_arenas` does nothing
and says so. ``MALLOC_ARENA_MAX`` in the environment, glibc's own knob, is left to win when set.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

M_ARENA_MAX = -8  # glibc's malloc.h
ENV_VAR = "MALLOC_ARENA_MAX"


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.gnu_get_libc_version()
        libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        libc.mallopt.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


def limit_arenas(count: int) -> str:
    """Cap glibc's malloc arenas at ``count`` for the rest of this process; returns what was done
    (for the agent's start-up log line)."""
    if count < 1:
        raise ValueError("the arena count must be >= 1")
    if os.environ.get(ENV_VAR):
        return f"malloc arenas: {ENV_VAR}={os.environ[ENV_VAR]} from the environment"
    libc = _glibc()
    if libc is None:
        return "malloc arenas: not glibc, left as they are"
    if libc.mallopt(M_ARENA_MAX, count) != 1:
        return "malloc arenas: mallopt(M_ARENA_MAX) refused, left as they are"
    return f"malloc arenas: at most {count}"
