"""Start-up failures of `spire-pqc agent run` (a taken port, an unreadable file, bad permissions) and of
the plugin's PQC CA endpoint inside a real spire-server: one line naming the configuration key and the
cause, a non-zero exit (the agent), no traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.spire import SpireServer, cleanup, short_tempdir

pytestmark = [pytest.mark.spire, pytest.mark.timeout(600)]

AGENT = """
[agent]
socket_path = "{dir}/sock/agent.sock"
{agent_extra}
[source]
kind = "dev"
[source.dev]
trust_domain = "example.org"
[[source.dev.entries]]
spiffe_id = "spiffe://example.org/svc"
selectors = ["unix:uid:4294967294"]
{extra}
"""


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = short_tempdir()
    (path / "sock").mkdir(mode=0o700)
    yield path
    cleanup(path)


@pytest.fixture
def taken_port() -> Iterator[int]:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    yield int(holder.getsockname()[1])
    holder.close()


def run_agent(
    workdir: Path, *, agent_extra: str = "", extra: str = "", config: Path | None = None
) -> tuple[int, str]:
    if config is None:
        config = workdir / "agent.toml"
        config.write_text(AGENT.format(dir=workdir, agent_extra=agent_extra, extra=extra))
    result = subprocess.run([sys.executable, "-m", "spire_pqc.cli", "agent", "run", "-c", str(config)],
                            capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    return result.returncode, result.stdout + result.stderr


def the_error(output: str) -> str:
    """The one error line (the rest is the agent's INFO/WARNING lifecycle log); no traceback."""
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if "error" in line.lower() and " INFO " not in line]
    assert len(errors) == 1, output
    return errors[0]


def test_health_port_in_use(workdir: Path, taken_port: int) -> None:
    code, output = run_agent(workdir, extra=f'[health]\nlisten_address = "127.0.0.1:{taken_port}"')
    assert code == 1
    assert the_error(output) == (
        f"spire-pqc: error: configuration: health.listen_address: cannot listen on 127.0.0.1:{taken_port}: "
        "address already in use (another process listens there)"
    )


def test_tunnel_port_in_use(workdir: Path, taken_port: int) -> None:
    tunnel = f"""[[tunnel.inbound]]
name = "db"
listen = "127.0.0.1:{taken_port}"
target = "127.0.0.1:5432"
allowed_ids = ["spiffe://example.org/client"]
spiffe_id = "spiffe://example.org/svc"
"""
    code, output = run_agent(workdir, extra=tunnel)
    assert code == 1
    line = the_error(output)
    assert (
        f'tunnel.inbound "db".listen: cannot listen on 127.0.0.1:{taken_port}: address already in use' in line
    )


def test_unreadable_federated_bundle(workdir: Path) -> None:
    code, output = run_agent(workdir, extra=f'[pqc.federated_bundles]\n"other.org" = "{workdir}"')
    assert code == 1
    assert f"pqc.federated_bundles.other.org: {workdir}: cannot read: Is a directory" in the_error(output)


def test_unreadable_configuration_file(workdir: Path) -> None:
    code, output = run_agent(workdir, config=workdir / "sock")
    assert code == 1
    assert the_error(output) == f"spire-pqc: error: {workdir / 'sock'}: cannot read: Is a directory"


def test_state_directory_open_to_others(workdir: Path) -> None:
    state = workdir / "state"
    state.mkdir()
    state.chmod(0o777)
    code, output = run_agent(workdir, agent_extra=f'state_dir = "{state}"')
    assert code == 1
    assert f"agent.state_dir: {state}: mode 0777 lets other users into a directory of private keys" in (
        the_error(output)
    )


def test_socket_directory_writable_by_others(workdir: Path) -> None:
    (workdir / "sock").chmod(0o777)
    code, output = run_agent(workdir, agent_extra=f'state_dir = "{workdir}/state"')
    assert code == 1
    assert f"agent.socket_path: directory {workdir / 'sock'} is writable by other users" in the_error(output)


def test_pqc_ca_endpoint_port_in_use_inside_spire_server(workdir: Path, taken_port: int) -> None:
    pqc = workdir / "pqc"
    for args in (["ca", "init", "--trust-domain", "example.org", "--out-dir", str(pqc), "--no-encryption"],
                 ["ca", "intermediate", "--trust-domain", "example.org", "--root-dir", str(pqc), "--out-dir",
                  str(pqc), "--no-encryption"]):  # fmt: skip
        subprocess.run(
            [sys.executable, "-m", "spire_pqc.cli", *args], check=True, capture_output=True, timeout=120
        )
    server = SpireServer(workdir / "server", composer_data={
        "intermediate_key_path": str(pqc / "intermediate.key.pem"),
        "intermediate_cert_path": str(pqc / "intermediate.crt.pem"),
        "pqc_bundle_path": str(pqc / "root.crt.pem"),
        "endpoint_listen_address": f"127.0.0.1:{taken_port}",
        "authorized_agents": ["spiffe://example.org/node-agent"],
    })  # fmt: skip
    server.start()
    try:
        expected = (f"PQC CA endpoint not started: endpoint_listen_address: cannot listen on 127.0.0.1:{taken_port}: "
                    "address already in use")  # fmt: skip
        deadline = time.monotonic() + 60
        while expected not in server.log_text():
            assert time.monotonic() < deadline, server.log_tail()
            time.sleep(0.2)
        assert "Traceback" not in server.log_text()
        # SPIRE goes on signing (fail soft): the composer still works while the endpoint cannot listen.
        minted = server.mint("spiffe://example.org/w", workdir / "minted")
        assert minted.returncode == 0, minted.stderr
    finally:
        server.stop()
