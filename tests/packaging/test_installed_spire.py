"""The installed wheel deployed as an operator would, with real SPIRE v1.15.3 and nothing from the checkout.

From the venv outside the checkout: ``spire-pqc ca init|intermediate`` makes the PQC CA; spire-server
loads the installed ``spire-pqc-composer`` console script as ``plugin_cmd`` (``validate``, then
``run``); ``x509 mint`` returns an SVID carrying a verifying binding; spire-agent serves the Delegated
Identity API to the installed ``spire-pqc agent run`` (spire source), which obtains PQC credentials
from the plugin's endpoint; a workload run by the installed interpreter receives a hybrid SVID that
verifies against SPIRE's bundle and the PQC root. (The checkout's harness only starts the processes.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from spire_pqc.crypto.mldsa import MLDSA65PrivateKey
from spire_pqc.svid import verify_svid_binding
from tests.integration.spire import SpireAgent, SpireServer, cleanup, free_port, running, short_tempdir
from tests.packaging._support import InstalledVenv

pytestmark = [pytest.mark.packaging, pytest.mark.spire, pytest.mark.timeout(1200)]

TD = "example.org"
NODE = f"spiffe://{TD}/node1"
DELEGATE = f"spiffe://{TD}/spire-pqc/agent"
WORKLOAD = f"spiffe://{TD}/app"
PROBE = Path(__file__).with_name("workload_probe.py")

AGENT_TOML = """\
[agent]
socket_path = "{socket}"
production = true
shutdown_grace = "1s"
[source]
kind = "spire"
[source.spire]
admin_socket_path = "{admin_socket}"
workload_socket_path = "{workload_socket}"
agent_id = "{delegate}"
[ca]
address = "127.0.0.1:{endpoint_port}"
timeout = "10s"
[pqc]
retry_initial = "0.5s"
retry_max = "2s"
"""


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = short_tempdir()
    yield path
    cleanup(path)


def _children_cmdlines(pid: int) -> list[list[str]]:
    """Command lines of ``pid``'s direct children (from /proc; Linux)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                raw = Path(f"/proc/{child}/cmdline").read_bytes()
            except OSError:
                continue
            found.append([part.decode() for part in raw.split(b"\0") if part])
    return found


def _pqc_ca(venv: InstalledVenv, directory: Path) -> None:
    for args in (
        ("ca", "init", "--trust-domain", TD, "--out-dir", directory, "--no-encryption"),
        ("ca", "intermediate", "--trust-domain", TD, "--root-dir", directory, "--out-dir", directory,
         "--no-encryption"),
    ):  # fmt: skip
        result = venv.run("spire-pqc", *args)
        assert result.returncode == 0, result.stdout + result.stderr


def _wait_for_socket(process: subprocess.Popen[bytes], socket: Path, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not socket.exists():
        if process.poll() is not None:
            raise AssertionError(f"the installed agent exited with {process.returncode}:\n{log.read_text()}")
        assert time.monotonic() < deadline, "the installed agent did not create its socket"
        time.sleep(0.1)


def test_installed_composer_and_agent_serve_a_workload_with_real_spire(
    installed: InstalledVenv, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # spire-server passes its environment to the plugin: make sure nothing there points at the checkout.
    monkeypatch.delenv("PYTHONPATH", raising=False)
    composer = installed.bin / "spire-pqc-composer"
    pqc_dir = workdir / "pqc"
    _pqc_ca(installed, pqc_dir)
    endpoint_port = free_port()
    server = SpireServer(
        workdir,
        plugin_cmd=composer,
        composer_data={
            "intermediate_key_path": str(pqc_dir / "intermediate.key.pem"),
            "intermediate_cert_path": str(pqc_dir / "intermediate.crt.pem"),
            "pqc_bundle_path": str(pqc_dir / "root.crt.pem"),
            "endpoint_listen_address": f"127.0.0.1:{endpoint_port}",
            "authorized_agents": [DELEGATE],
            "ledger_dsn": f"sqlite://{workdir}/ledger.db",
        },
    )
    validated = server.validate()
    assert validated.returncode == 0, validated.stdout + validated.stderr
    assert "valid" in validated.stdout

    spire_agent = SpireAgent(workdir / "a", server, authorized_delegates=[DELEGATE])
    with running(server, spire_agent):
        server.start()
        assert server.proc is not None
        plugins = [c for c in _children_cmdlines(server.proc.pid) if str(composer) in c]
        assert plugins, f"no spire-pqc-composer child of spire-server: {_children_cmdlines(server.proc.pid)}"
        interpreter = Path(plugins[0][0])
        assert interpreter.parent == installed.bin, plugins[0]

        minted = server.mint(f"spiffe://{TD}/minted", workdir / "minted")
        assert minted.returncode == 0, minted.stdout + minted.stderr
        leaf = x509.load_pem_x509_certificates((workdir / "minted" / "svid.pem").read_bytes())[0]
        intermediate = MLDSA65PrivateKey.from_pem(
            (pqc_dir / "intermediate.key.pem").read_bytes()
        ).public_key()
        assert verify_svid_binding(leaf, [intermediate]) == intermediate

        token = server.join_token(NODE)
        for spiffe_id in (DELEGATE, WORKLOAD):
            server.cli(
                "entry", "create", "-parentID", NODE, "-spiffeID", spiffe_id,
                "-selector", f"unix:uid:{os.getuid()}",
            )  # fmt: skip
        spire_agent.start(token)
        fetched = spire_agent.fetch_x509(workdir / "fetched")
        assert fetched.returncode == 0, fetched.stdout + fetched.stderr
        bundle = workdir / "spire-bundle.pem"
        bundle.write_bytes(server.bundle_pem())

        socket = workdir / "pqc.sock"
        config = workdir / "agent.toml"
        config.write_text(
            AGENT_TOML.format(
                socket=socket, admin_socket=spire_agent.admin_socket, workload_socket=spire_agent.socket,
                delegate=DELEGATE, endpoint_port=endpoint_port,
            )
        )  # fmt: skip
        checked = installed.run("spire-pqc", "agent", "validate", "-c", config)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        log = workdir / "agent.log"
        with log.open("wb") as log_file:
            agent = subprocess.Popen(
                [str(installed.bin / "spire-pqc"), "agent", "run", "-c", str(config)],
                cwd=installed.workdir, env=installed.env(), stderr=log_file,
            )  # fmt: skip
        try:
            _wait_for_socket(agent, socket, log)
            probe = installed.run(
                "python",
                "-I",
                PROBE,
                f"unix://{socket}",
                WORKLOAD,
                bundle,
                pqc_dir / "root.crt.pem",
                timeout=300,
            )
            assert probe.returncode == 0, probe.stdout + probe.stderr
            got = json.loads(probe.stdout)
            assert got["spiffe_id"] == WORKLOAD
            assert Path(str(got["package"])).is_relative_to(installed.root)
            agent.send_signal(signal.SIGTERM)
            assert agent.wait(timeout=60) == 0, log.read_text()
            assert "Traceback" not in log.read_text(), log.read_text()
        finally:
            if agent.poll() is None:
                agent.kill()
                agent.wait()
