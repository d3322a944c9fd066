"""`spire-pqc agent run|validate` as a real process: serve, SIGTERM closes streams and removes the socket."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from spiffe import WorkloadApiClient

from tests.unit.agent._support import short_dir

CONFIG = """
[agent]
socket_path = "{socket}"
[source]
kind = "dev"
[source.dev]
trust_domain = "example.org"
svid_ttl = "10m"
[[source.dev.entries]]
spiffe_id = "spiffe://example.org/cli"
selectors = ["unix:uid:{uid}"]
[health]
listen_address = "127.0.0.1:0"
"""


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "spire_pqc.cli", *args]


def test_run_serves_and_stops_cleanly_on_sigterm() -> None:
    directory = short_dir()
    socket = directory / "agent.sock"
    config = directory / "agent.toml"
    config.write_text(CONFIG.format(socket=socket, uid=os.getuid()))
    process = subprocess.Popen(
        _cli("agent", "run", "-c", str(config), "--log-format", "json"), stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 30
        while not socket.exists():
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "agent did not create its socket"
            time.sleep(0.05)
        client = WorkloadApiClient(socket_path=f"unix://{socket}")
        try:
            assert str(client.fetch_x509_context().default_svid.spiffe_id) == "spiffe://example.org/cli"
            cancel = client.stream_x509_contexts(lambda _: None, lambda _: None)  # an open stream at SIGTERM
            time.sleep(0.3)
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=30)
            cancel.cancel()
        finally:
            client.close()
        assert process.returncode == 0, stderr
        assert not socket.exists()
        records = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
        messages = [r["msg"] for r in records]
        assert any("agent serving the Workload API" in m for m in messages)
        assert any(m == "SIGTERM: stopping" for m in messages)
        assert messages[-1] == "agent stopped"
        assert {"time", "level", "logger", "msg"} <= set(records[0])
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        shutil.rmtree(directory, ignore_errors=True)


def test_validate_reports_every_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[agent]\nsocket_path = "x.sock"\n[source]\nkind = "nope"\n')
    result = subprocess.run(
        _cli("agent", "validate", "-c", str(bad)), check=False, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "agent.socket_path" in result.stderr and "source.kind" in result.stderr
    example = Path(__file__).resolve().parents[2] / "examples" / "agent" / "agent.toml"
    result = subprocess.run(
        _cli("agent", "validate", "-c", str(example)), check=False, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout and "NOT FOR PRODUCTION" in result.stdout
