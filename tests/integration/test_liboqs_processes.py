"""The entry points on the liboqs backend, as real processes: the plugin under a real spire-server, the
node agent, and the CLI each log their backend at start, and what they sign on liboqs verifies on
openssl in this (openssl) test process.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509
from spiffe import WorkloadApiClient

from spire_pqc.crypto.mldsa import MLDSA65PrivateKey
from spire_pqc.svid import verify_svid_binding
from tests._backends import LIBOQS_VERSION, liboqs_env
from tests.integration.spire import SpireServer, cleanup, short_tempdir
from tests.integration.test_agent_cli import CONFIG as AGENT_CONFIG
from tests.unit.agent._support import short_dir

TD = "example.org"
BACKEND_LINE = f"post-quantum backend: liboqs {LIBOQS_VERSION} ("


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spire_pqc.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def ca_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PQC root and intermediate made by the CLI on the liboqs backend."""
    directory = tmp_path_factory.mktemp("pqc")
    env = liboqs_env()
    made = _cli(env, "-v", "ca", "init", "--trust-domain", TD, "--out-dir", str(directory), "--no-encryption")
    assert made.returncode == 0, made.stderr
    assert BACKEND_LINE in made.stderr  # the CLI logs its backend at start (visible with -v)
    made = _cli(
        env, "ca", "intermediate", "--trust-domain", TD,
        "--root-dir", str(directory), "--out-dir", str(directory), "--no-encryption",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    return directory


@pytest.mark.spire
@pytest.mark.liboqs
@pytest.mark.timeout(300)
def test_plugin_on_liboqs_under_real_spire_server(ca_dir: Path) -> None:
    """spire-server starts the plugin with SPIRE_PQC_BACKEND=liboqs: the go-plugin handshake survives
    liboqs-python's import, the plugin logs its backend, and `x509 mint` returns an SVID whose binding
    (signed by liboqs) verifies with openssl."""
    workdir = short_tempdir()
    server = SpireServer(
        workdir,
        composer_data={
            "intermediate_key_path": str(ca_dir / "intermediate.key.pem"),
            "intermediate_cert_path": str(ca_dir / "intermediate.crt.pem"),
            "pqc_bundle_path": str(ca_dir / "root.crt.pem"),
        },
        extra_env=liboqs_env(),
    )
    try:
        server.start()
        out = workdir / "minted"
        result = server.mint(f"spiffe://{TD}/on-liboqs", out)
        assert result.returncode == 0, result.stdout + result.stderr + server.log_tail()
        leaf = x509.load_pem_x509_certificates((out / "svid.pem").read_bytes())[0]
        intermediate = MLDSA65PrivateKey.from_pem((ca_dir / "intermediate.key.pem").read_bytes()).public_key()
        assert verify_svid_binding(leaf, [intermediate]) == intermediate
        assert BACKEND_LINE in server.log_text(), server.log_tail()
    finally:
        server.stop()
        cleanup(workdir)


@pytest.mark.liboqs
@pytest.mark.timeout(300)
def test_agent_on_liboqs_logs_and_exports_its_backend() -> None:
    directory = short_dir()
    socket = directory / "agent.sock"
    config = directory / "agent.toml"
    config.write_text(AGENT_CONFIG.format(socket=socket, uid=os.getuid()))  # dev source, health on :0
    process = subprocess.Popen(
        [sys.executable, "-m", "spire_pqc.cli", "agent", "run", "-c", str(config), "--log-format", "json"],
        env=liboqs_env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        messages: list[str] = []
        deadline = time.monotonic() + 60
        port = None
        while port is None:
            assert time.monotonic() < deadline, messages
            line = process.stderr.readline()
            assert line, f"agent exited ({process.wait()}): {messages}"
            if line.startswith("{"):
                messages.append(json.loads(line)["msg"])
                found = re.search(r"metrics on http://127\.0\.0\.1:(\d+)", messages[-1])
                port = int(found.group(1)) if found else None
        assert any(m.startswith(BACKEND_LINE) for m in messages), messages
        while not socket.exists():
            assert time.monotonic() < deadline, "agent did not create its socket"
            time.sleep(0.05)
        client = WorkloadApiClient(socket_path=f"unix://{socket}")
        try:
            svid = client.fetch_x509_context().default_svid
            assert str(svid.spiffe_id) == "spiffe://example.org/cli"
        finally:
            client.close()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
            metrics = response.read().decode()
        expected = f'spire_pqc_crypto_backend_info{{backend="liboqs",version="{LIBOQS_VERSION}"}} 1.0'
        assert expected in metrics
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
        assert process.returncode == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()
        shutil.rmtree(directory, ignore_errors=True)
