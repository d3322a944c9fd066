"""glibc arena cap (agent.malloc_arena_max): applied through mallopt, deferring to MALLOC_ARENA_MAX."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from spire_pqc._internal.malloc import ENV_VAR, limit_arenas
from spire_pqc.agent.config import parse
from spire_pqc.errors import ConfigError

_PROBE = """
import ctypes, threading
from spire_pqc._internal.malloc import limit_arenas
print(limit_arenas(1))
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
def work():
    for _ in range(2000):
        libc.free(libc.malloc(4096))
threads = [threading.Thread(target=work) for _ in range(6)]
[t.start() for t in threads]; [t.join() for t in threads]
buf = ctypes.c_char_p(); size = ctypes.c_size_t()
libc.open_memstream.restype = ctypes.c_void_p
f = libc.open_memstream(ctypes.byref(buf), ctypes.byref(size))
libc.malloc_info(0, ctypes.c_void_p(f)); libc.fclose(ctypes.c_void_p(f))
print(ctypes.string_at(buf, size.value).decode().count("<heap nr="))
"""


def test_one_arena_serves_every_thread() -> None:
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True)
    said, heaps = out.stdout.splitlines()
    assert said == "malloc arenas: at most 1"
    assert heaps == "1"  # six threads allocating at once, and still only the main arena


def test_the_environment_wins_and_zero_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "4")
    assert limit_arenas(1) == f"malloc arenas: {ENV_VAR}=4 from the environment"
    with pytest.raises(ValueError, match=">= 1"):
        limit_arenas(0)


def test_agent_config_defaults_to_one_arena_and_refuses_zero() -> None:
    base = {"source": {"kind": "dev", "dev": {"trust_domain": "example.org", "entries": []}}}
    config = parse({"agent": {"socket_path": "/tmp/x/agent.sock"}, **base})
    assert config.malloc_arena_max == 1
    assert (
        parse({"agent": {"socket_path": "/tmp/x/agent.sock", "malloc_arena_max": 2}, **base}).malloc_arena_max
        == 2
    )
    with pytest.raises(ConfigError, match="malloc_arena_max"):
        parse({"agent": {"socket_path": "/tmp/x/agent.sock", "malloc_arena_max": 0}, **base})
