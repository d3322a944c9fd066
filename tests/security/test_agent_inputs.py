"""Issue 9, typed errors at the agent's own boundaries, with real processes.

* A process running as uid 4294967294 ((uid_t)-2, the largest valid uid) is that uid, not -2: it
  gets the identity registered for it.
* ``agent validate`` refuses a configured path with a NUL byte, and a deeply nested TOML document is
  a configuration error (exit 1, one message), never a RecursionError traceback.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from spire_pqc.bench.agentproc import AgentProcess
from spire_pqc.bench.hostile import result_of, spawn
from tests.security._support import TRUST_DOMAIN, dev_agent_config, public_dir, require_root

HIGH_UID = 4294967294
HIGH_ID = f"spiffe://{TRUST_DOMAIN}/highest-uid"


def test_the_highest_uid_is_read_unsigned() -> None:
    require_root()
    with public_dir() as directory:
        config = dev_agent_config(
            directory, entries=[{"spiffe_id": HIGH_ID, "selectors": [f"unix:uid:{HIGH_UID}"]}]
        )
        with AgentProcess(directory, config) as agent:
            result = result_of(spawn("fetch", ["--socket", str(agent.socket_path)], uid=HIGH_UID))
    assert result["uid"] == HIGH_UID
    assert result == {"status": "OK", "svids": [HIGH_ID], "uid": HIGH_UID}


def _validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spire_pqc.cli", "agent", "validate", "-c", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_a_nul_byte_in_a_path_is_a_configuration_error(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(
        '[agent]\nsocket_path = "/run/spire-pqc/agent\\u0000.sock"\n'
        '[source]\nkind = "spire"\n[source.spire]\nadmin_socket_path = "/run/spire/admin\\u0000.sock"\n'
        'workload_socket_path = "/run/spire/api.sock"\n[ca]\naddress = "127.0.0.1:8444"\n'
    )
    result = _validate(path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "agent.socket_path: contains a NUL byte" in result.stderr, result.stderr
    assert "source.spire.admin_socket_path: contains a NUL byte" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_deeply_nested_toml_is_a_configuration_error(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text("x = " + "[" * 100_000 + "]" * 100_000 + "\n")
    result = _validate(path)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "nested too deeply" in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
