"""`spire-pqc doctor` against real parts: the plugin's server.conf as spire-server runs it, the PQC CA
endpoint inside a real spire-server v1.15.3, a running dev agent's socket and state directory; each
failure exits non-zero and names its fix."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.spire import PqcAgent, SpireServer, cleanup, free_port, short_tempdir
from tests.integration.test_agent_processes import CLIENT_ID, _dev_agent

pytestmark = [pytest.mark.spire, pytest.mark.timeout(600)]
TD = "example.org"
NOBODY_UID = 65534


def doctor(*args: str) -> tuple[int, dict[str, Any], str]:
    result = subprocess.run([sys.executable, "-m", "spire_pqc.cli", "doctor", *args, "--json"],
                            capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads(result.stdout), result.stderr


def by_name(report: dict[str, Any], prefix: str) -> dict[str, Any]:
    found = [c for c in report["checks"] if c["name"].startswith(prefix)]
    assert len(found) == 1, report
    return dict(found[0])


def _wait_listening(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"nothing listens on {port}"
            time.sleep(0.2)


@pytest.fixture(scope="module")
def server() -> Iterator[SpireServer]:
    workdir = short_tempdir()
    pqc = workdir / "pqc"
    for args in (["ca", "init", "--trust-domain", TD, "--out-dir", str(pqc), "--no-encryption"],
                 ["ca", "intermediate", "--trust-domain", TD, "--root-dir", str(pqc), "--out-dir", str(pqc),
                  "--no-encryption"]):  # fmt: skip
        subprocess.run(
            [sys.executable, "-m", "spire_pqc.cli", *args], check=True, capture_output=True, timeout=120
        )
    port = free_port()
    srv = SpireServer(
        workdir / "server",
        composer_data={
            "intermediate_key_path": str(pqc / "intermediate.key.pem"),
            "intermediate_cert_path": str(pqc / "intermediate.crt.pem"),
            "pqc_bundle_path": str(pqc / "root.crt.pem"),
            "endpoint_listen_address": f"127.0.0.1:{port}",
            "authorized_agents": [f"spiffe://{TD}/node-agent"],
        },
    )
    srv.endpoint_port = port
    srv.start()
    try:
        _wait_listening(port)  # the plugin starts its endpoint once SPIRE can tell the server's identity
        yield srv
    finally:
        srv.stop()
        cleanup(workdir)


@pytest.fixture(scope="module")
def agent() -> Iterator[PqcAgent]:
    workdir = short_tempdir()
    agent = _dev_agent(workdir, workdir / "dev-ca", CLIENT_ID, "")
    agent.start()
    try:
        agent.wait_ready()
        yield agent
    finally:
        agent.stop()
        cleanup(workdir)


def test_a_healthy_server_and_node_pass(server: SpireServer, agent: PqcAgent) -> None:
    code, report, _ = doctor("--server-conf", str(server.config_path), "--ca", f"127.0.0.1:{server.endpoint_port}",
                             "--agent-config", str(agent.config_path))  # fmt: skip
    assert code == 0, json.dumps([c for c in report["checks"] if c["status"] != "ok"])
    assert report["ok"] is True
    assert "known-answer self-test passed" in by_name(report, "backend")["detail"]
    assert by_name(report, "plugin configuration")["status"] == "ok"
    ca = by_name(report, "PQC CA endpoint")
    assert ca["status"] == "ok" and "TLS 1.3 with X25519MLKEM768" in ca["detail"]
    assert by_name(report, "agent socket")["detail"] == "grpc.health.v1 SERVING"
    files = by_name(report, "key files")
    assert files["status"] == "ok" and f"all owned by uid {os.getuid()}" in files["detail"], files
    # The dev agent's PQC CA is in-process: the skew it measured at its last bundle poll is ~0.
    skew = by_name(report, "clock skew against the PQC CA")
    assert skew["status"] == "ok" and "against the PQC CA at in-process (dev source)" in skew["detail"], skew
    assert abs(float(skew["detail"].split("s ", 1)[0])) < 1, skew


def test_human_output_names_each_check_and_its_fix(agent: PqcAgent, tmp_path: Path) -> None:
    """Without --json: one line per check, the fix under each failure, the count on stderr, exit 1."""
    config = tmp_path / "agent.toml"  # the running agent's configuration, with a health port nobody serves
    config.write_text(agent.config_path.read_text().replace(f":{agent.health_port}", f":{free_port()}"))
    result = subprocess.run([sys.executable, "-m", "spire_pqc.cli", "doctor", "--agent-config", str(config)],
                            capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    lines = result.stdout.splitlines()
    skew = next(i for i, line in enumerate(lines) if line.startswith("FAIL  clock skew against the PQC CA: "))
    assert "cannot read the agent's status at http://127.0.0.1:" in lines[skew]
    assert lines[skew + 1].startswith("      fix: start the agent (the skew is measured by it")
    assert any(line.startswith("OK    key files (") for line in lines), lines
    assert result.stderr.strip().endswith("1 problem(s)"), result.stderr


def test_each_failure_names_its_fix(server: SpireServer, agent: PqcAgent, tmp_path: Path) -> None:
    # A group-readable intermediate key in a copy of the server's configuration.
    text = server.config_path.read_text()
    key = Path(text.split('intermediate_key_path = "', 1)[1].split('"', 1)[0])
    loose = tmp_path / "loose.key.pem"
    loose.write_bytes(key.read_bytes())
    loose.chmod(0o644)
    conf = tmp_path / "server.conf"
    conf.write_text(text.replace(str(key), str(loose)))
    # A key file of the agent's state directory opened to others.
    state = agent.workdir / "agent-state"
    files_kept = [p for p in sorted(state.rglob("*")) if p.is_file()]
    victim, stranger = files_kept[0], files_kept[-1]
    victim.chmod(0o644)
    # Another one owned by someone else than the state directory's owner (the agent's user).
    os.chown(stranger, NOBODY_UID, -1)
    try:
        code, report, err = doctor(
            "--server-conf", str(conf), "--ca", f"127.0.0.1:{server.port}",
            "--agent-config", str(agent.config_path), "--socket", str(tmp_path / "no.sock"),
        )  # fmt: skip
    finally:
        victim.chmod(0o600)
        os.chown(stranger, os.getuid(), -1)
    assert code == 1 and report["ok"] is False
    plugin = by_name(report, "plugin configuration")
    assert plugin["status"] == "fail" and f"intermediate_key_path: {loose}" in plugin["detail"], plugin
    assert "spire-server validate -config" in plugin["fix"]
    files = by_name(report, "key files")
    assert (
        files["status"] == "fail"
        and f"{victim}: mode 0o644" in files["detail"]
        and "chmod 600" in files["fix"]
    )
    assert (
        f"{stranger}: owned by uid {NOBODY_UID}, not by the state directory's owner (uid {os.getuid()})"
        in (files["detail"])
    ), files
    assert f"chown -R --reference={state} {state}" in files["fix"], files
    # spire-server's own bind_port is not the PQC CA endpoint (it offers no hybrid group... or no TLS 1.3
    # mTLS of ours): either way, not reported as reachable.
    ca = by_name(report, "PQC CA endpoint")
    assert ca["status"] == "fail" and "endpoint_listen_address" in ca["fix"], ca
    sock = by_name(report, "agent socket (unix://" + str(tmp_path / "no.sock"))
    assert sock["status"] == "fail" and sock["fix"]
    assert "Traceback" not in err
