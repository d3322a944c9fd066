"""The runnable examples keep working: each run script is executed as a user would run it."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_hybrid_echo_example_runs() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = subprocess.run(
        ["bash", str(EXAMPLES / "hybrid-echo" / "run.sh")],
        capture_output=True, text=True, timeout=180, check=False, env={**os.environ, "PORT": str(port)},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        "from spiffe://example.org/echo (hybrid, X25519MLKEM768): 'hello, post-quantum world'"
        in result.stdout
    )
    assert "answered 'HELLO, POST-QUANTUM WORLD'" in result.stdout
