"""The runnable examples keep working: each run script is executed as a user would run it."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _run(example: str) -> subprocess.CompletedProcess[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return subprocess.run(
        ["bash", str(EXAMPLES / example / "run.sh")],
        capture_output=True, text=True, timeout=180, check=False, env={**os.environ, "PORT": str(port)},
    )  # fmt: skip


def test_hello_world_example_runs() -> None:
    result = _run("hello-world")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == "Hello, post-quantum world\n", result.stdout + result.stderr


def test_hello_world_is_as_short_as_go_spiffes() -> None:
    """go-spiffe's spiffe-tls example is about 40 lines a side; ours must not be longer."""
    for name in ("server.py", "client.py"):
        lines = (EXAMPLES / "hello-world" / name).read_text().splitlines()
        assert len([line for line in lines if line.strip()]) <= 20, name


def test_hybrid_echo_example_runs() -> None:
    result = _run("hybrid-echo")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        "from spiffe://example.org/echo (hybrid, X25519MLKEM768): 'hello, post-quantum world'"
        in result.stdout
    )
    assert "answered 'HELLO, POST-QUANTUM WORLD'" in result.stdout
